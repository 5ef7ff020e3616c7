"""The README's quick start is what CI runs and what the package provides."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    demo, tests = quick_start()
    assert demo.endswith("otel-callbacks demo") and tests.endswith("python -m pytest")
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_every_otel_callbacks_variable_in_the_code_is_documented():
    names = set()
    for path in (ROOT / "otel_callbacks").glob("*.py"):
        names |= set(re.findall(r"OTEL_CALLBACKS_[A-Z_]+[A-Z]", path.read_text()))
    readme = (ROOT / "README.md").read_text()
    assert names and not {n for n in names if f"`{n}`" not in readme}


def python_block(heading, index=0):
    """A ```python block under a README heading (the first by default)."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[index]


def test_the_use_without_ultralytics_example_runs(tmp_path):
    from tests.test_telemetry import run_python

    code = python_block("Use without Ultralytics")
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["epoch 0", "saved epoch 0"]
