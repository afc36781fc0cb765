"""The installed package holds every module of the tree: ``pyproject.toml`` lists each package folder.

Tests run from the repository root, where ``mmaccel/`` itself shadows the installed copy, so a package left out of
the list would pass every other test and still be missing for users (``mmaccel.spec`` and ``mmaccel.contrast``
once were)."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: ROOT / folder for name, folder in setuptools["package-dir"].items()}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            if "__pycache__" not in parts:
                found.add(".".join((name, *parts)))
    assert found - set(setuptools["packages"]) == set(), "package folders missing from pyproject.toml"
    assert set(setuptools["packages"]) - found == set(), "pyproject.toml lists packages that do not exist"


def test_the_bundled_weights_and_drafter_are_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mmaccel.zoo"]
    zoo = ROOT / "mmaccel" / "zoo"
    shipped = {path for pattern in patterns for path in zoo.glob(pattern) if path.is_file()}
    weights = {path for path in (zoo / "weights").rglob("*") if path.is_file()}
    assert weights and weights <= shipped


def test_the_installed_package_imports_every_package(tmp_path):
    """Run away from the repository, so that the installed copy is the one imported."""
    import os
    import subprocess
    import sys

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    code = f"import importlib; [importlib.import_module(name) for name in {packages!r}]"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
