"""The examples of coarse-to-fine inside other training code (examples/) run with tiny settings and stay short."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CASES = {
    "plain_loop.py": ([], [], "| Fshift 4-1 "),
    "lightning_callback.py": ([], ["lightning"], "| Avg Pool 4-1 "),
    "hf_trainer.py": (["--out", "hf-ast-c2f"], ["transformers", "accelerate"], "pipeline accuracy"),
}


def test_the_integration_examples_are_under_60_lines():
    for name in CASES:
        assert len((EXAMPLES / name).read_text().splitlines()) < 60, name


@pytest.mark.parametrize("name", list(CASES))
def test_example_runs(name, tmp_path):
    extra, needs, expected = CASES[name]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--epochs", "1", "--clips", "16", *extra],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout
    assert "R=4" in proc.stdout or "Avg Pool 4-1" in proc.stdout


def test_readme_snippets_are_excerpts_of_the_examples():
    """Each README snippet marked ``<!-- excerpt: examples/X.py -->`` is made of the example's own
    lines, so the README cannot drift from code that the tests run."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    parts = readme.split("<!-- excerpt: ")[1:]
    assert sorted(p.split(" -->")[0] for p in parts) == sorted(f"examples/{name}" for name in CASES)
    for part in parts:
        name, rest = part.split(" -->", 1)
        block = rest.split("```python\n", 1)[1].split("```", 1)[0]
        lines = {line.strip() for line in (EXAMPLES.parent / name).read_text().splitlines()}
        missing = [line for line in block.splitlines() if line.strip() and line.strip() not in lines]
        assert not missing, f"{name}: {missing}"
