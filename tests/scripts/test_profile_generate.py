import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_generate.py"


def test_profiles_both_sides_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location("profile_generate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--model", "shapes-image", "--device", "cpu", "--max-new-tokens", "2", "--rows", "3",
                 "--preset", "kernels"])
    out = capsys.readouterr().out
    assert "=== none:" in out and "=== kernels:" in out
    assert out.count("Self CPU time total") == 2
