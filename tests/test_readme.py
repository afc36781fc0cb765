"""The README's tiny-model example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _tiny_model_example() -> str:
    text = README.read_text()
    after = text[text.index("Without any download, the same works on a tiny random-weight model"):]
    start = after.index("```python\n") + len("```python\n")
    return after[start:after.index("```", start)]


def test_the_tiny_model_example_runs(capsys):
    code = _tiny_model_example()
    assert "mmaccel.accelerate" in code and "mmaccel.restore(model)" in code
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert printed.count("tensor(") == len(re.findall(r"print\(\w+\.generate\(", code))
