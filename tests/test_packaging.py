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


def test_the_checkout_kernels_folder_does_not_hide_the_kernels_distribution():
    """From the repository root, ``import kernels`` finds the top-level ``kernels/`` folder first; transformers
    (5.25 on) imports the ``kernels`` distribution of that name, so the folder hands over to it."""
    import importlib.metadata
    import os
    import subprocess
    import sys

    code = ("import kernels, mmaccel.kernels; "
            "print(kernels.__file__); print(mmaccel.kernels.__file__); print(callable(mmaccel.kernels.attention))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        assert result.returncode != 0 and "no installed `kernels` package" in result.stderr, result.stderr[-2000:]
        return
    assert result.returncode == 0, result.stderr[-2000:]
    distribution_file, ours, callable_attention = result.stdout.split()
    assert Path(distribution_file).resolve() != Path(ours).resolve()
    assert Path(ours).resolve() == ROOT / "kernels" / "__init__.py"
    assert callable_attention == "True"
