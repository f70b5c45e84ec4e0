"""The README's "add a family" example: one file, no FLOPs method, trains coarse-to-fine."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "new_family.py"


def test_a_family_defined_in_one_file_without_flops_trains_and_its_flops_are_measured(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "1", "--clips", "32", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["flops_source"] == "measured"
    recs = log["records"]
    assert [(r["R"], r["tokens"]) for r in recs] == [(4, 32), (1, 128)]
    # Measured FLOPs grow with the tokens: the coarse epoch costs a quarter of a fine one, or less.
    assert 0 < recs[0]["train_flops"] <= 0.26 * recs[1]["train_flops"]
    assert "GFLOPs (measured)" in proc.stdout


def test_a_family_without_wider_patches_is_refused_the_patch_method_at_load():
    """A new user's case: the example's Frames family with c2f.method=patch trained its "R=4" phase at full
    tokens and full FLOPs, without a word."""
    import importlib.util

    import pytest

    from coarse2fine.config import load_config
    from coarse2fine.model.registry import _ARCHS

    spec = importlib.util.spec_from_file_location("new_family_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers the family "frames" in this process
    try:
        assert load_config("demo", ["model.arch=frames", "model.preset=small"]).model.arch == "frames"
        with pytest.raises(ValueError, match=r"model frames/small with c2f\.method patch at R=4 \(schedule 4-1\): the "
                                             r"family's config keeps patches 1x wide in time, not 4x: it cannot take "
                                             r"the Patch method"):
            load_config("demo", ["model.arch=frames", "model.preset=small", "c2f.method=patch"])
    finally:
        _ARCHS.pop("frames", None)  # other tests list the families
