"""Smoke runs of the benchmark scripts (benchmarks/*.py) in their smallest mode.

They prove that the scripts run and write JSON with the expected keys; no timing is asserted
(speed goals live in the benchmarks, as ratios measured in one run).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
MACHINE_KEYS = {"cpu", "cpu_cores", "torch_threads", "torch", "device"}


def _load(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # as when run as a script: its folder is on the path
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_epoch_time_vs_flops_runs_as_a_script(tmp_path):
    out = tmp_path / "epoch.json"
    cmd = [sys.executable, str(BENCH / "epoch_time_vs_flops.py"), "--quick", "--shapes", "micro",
           "--target-length", "64", "--warmup", "0", "--steps", "1", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "time ratio" in proc.stdout and "FLOPs ratio" in proc.stdout and "machine:" in proc.stdout

    data = json.loads(out.read_text())
    assert data["benchmark"] == "epoch_time_vs_flops"
    assert MACHINE_KEYS <= set(data["machine"])
    rows = data["results"]
    # R=1 reference, then fshift and patch at R=2 and 4.
    assert [(r["method"], r["R"]) for r in rows] == [("none", 1), ("fshift", 2), ("fshift", 4), ("patch", 2), ("patch", 4)]
    keys = {"shape", "method", "R", "input_frames", "patch_size", "tokens", "batch_size", "features_s", "fwd_bwd_s",
            "optimizer_s", "step_s", "samples_per_s", "flops_ratio", "time_ratio", "time_over_flops",
            "compute_ratio", "meets_target"}
    for r in rows:
        assert keys <= set(r)
        assert r["step_s"] > 0 and math.isfinite(r["time_over_flops"])
    ref, fshift2, patch4 = rows[0], rows[1], rows[4]
    assert ref["flops_ratio"] == 1.0 and ref["time_ratio"] == 1.0 and ref["meets_target"] is None
    assert fshift2["input_frames"] == 32 and fshift2["patch_size"] == [16, 16]
    assert patch4["input_frames"] == 64 and patch4["patch_size"] == [16, 64]
    assert 0 < patch4["flops_ratio"] < fshift2["flops_ratio"] < 1


def test_epoch_time_vs_flops_model_only_in_process(tmp_path, monkeypatch):
    bench = _load("epoch_time_vs_flops", monkeypatch)
    out = tmp_path / "model_only.json"
    data = bench.main(["--quick", "--shapes", "micro", "--target-length", "32", "--R", "2", "--methods", "patch",
                       "--model-only", "--sequential", "--warmup", "0", "--steps", "1", "--out", str(out)])
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(data["results"]))
    assert [r["R"] for r in data["results"]] == [1, 2]
    assert all(r["features_s"] is None for r in data["results"])
    assert data["settings"]["model_only"] and data["settings"]["sequential"]


def test_ours_vs_hf_quick(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    bench = _load("ours_vs_hf", monkeypatch)
    out = tmp_path / "hf.json"
    data = bench.main(["--quick", "--shape", "micro", "--target-length", "64", "--batch-size", "2",
                       "--eval-batch-size", "2", "--warmup", "0", "--steps", "1", "--out", str(out)])
    on_disk = json.loads(out.read_text())
    assert on_disk["benchmark"] == "ours_vs_hf" and MACHINE_KEYS <= set(on_disk["machine"])
    # Same weights, same math: the equivalence check must pass.
    assert on_disk["checks"] and all(c["ok"] for c in on_disk["checks"])
    assert all(c["max_abs_logit_diff"] <= on_disk["tolerance"] for c in on_disk["checks"])
    labels = [r["variant"] for r in on_disk["results"]]
    assert labels[0] == "ours" and any(label.startswith("hf default") for label in labels)
    keys = {"variant", "attn_implementation", "train_step_s", "train_samples_per_s", "train_speedup_of_ours",
            "eval_s", "eval_samples_per_s", "eval_speedup_of_ours", "eval_inference_mode_s"}
    for r in on_disk["results"]:
        assert keys <= set(r) and r["train_samples_per_s"] > 0
        if r["variant"] != "ours + fused Adam":  # the informational optimizer row has no eval timing
            assert r["eval_samples_per_s"] > 0
    assert on_disk["results"][0]["eval_inference_mode_s"] is not None
    assert data["settings"]["max_length"] == 64


FSDD = BENCH.parent / ".." / "shared" / "data" / "fsdd"


@pytest.mark.skipif(not FSDD.exists(), reason="FSDD not present in ../shared/data")
def test_data_pipeline_benchmark_runs(tmp_path):
    out = tmp_path / "pipe.json"
    cmd = [sys.executable, str(BENCH / "data_pipeline.py"), "--root", str(FSDD), "--clips", "32", "--repeats", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data["ratio_to_model_only"]) == {"model only", "cache (warm)", "preloaded waves", "decode each epoch"}
    assert data["ratio_to_model_only"]["model only"] == 1.0 and data["clips"] == 32


@pytest.mark.skipif(not FSDD.exists(), reason="FSDD not present in ../shared/data")
def test_fsdd_benchmark_runs(tmp_path):
    cmd = [sys.executable, str(BENCH / "fsdd_c2f.py"), "--root", str(FSDD), "--tasks", "speakers", "--schedules", "4-1",
           "--methods", "patch-pi", "--out", str(tmp_path), "--set", "train.epochs=1", "--set", "train.threads=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Patch PI 41" in proc.stdout and "FLOPs save" in proc.stdout
    assert (tmp_path / "speakers" / "metric_vs_time.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["tasks"]["speakers"].endswith("savings.md")


def test_time_robustness_runs_as_a_script(tmp_path):
    # Tiny runs: this checks the script end to end (quiet run, a load started halfway, both
    # calibrations), not the robustness itself (docs/RESULTS.md has the measured figures).
    cmd = [sys.executable, str(BENCH / "time_robustness.py"), "--rounds", "2", "--load-threads", "1", "--out", str(tmp_path),
           *[a for s in ("data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.epochs=2",
                         "train.threads=1", "c2f.phase_epochs=[1, 2]") for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "time_robustness.json").read_text())
    for case in ("quiet", "loaded"):
        assert {"time_save_calibrated", "time_save_wall", "flops_save", "step_ms"} <= set(data[case])
    assert MACHINE_KEYS <= set(data["machine"]) and len(data["epoch_wall_s"]["loaded"]) == 3


def test_step_variance_runs_as_a_script(tmp_path):
    # A few steps: the script end to end (the per-step accounting and its summary), not the VM.
    out = tmp_path / "sv.json"
    cmd = [sys.executable, str(BENCH / "step_variance.py"), "--steps", "8", "--warmup", "1", "--threads", "1",
           "--out", str(out), "--set", "data.train_clips=32", "--set", "train.batch_size=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["R"] == 1 and data["batch"] == 4 and len(data["rows"]) == 8
    assert all(r["wall"] > 0 and r["user"] >= 0 and r["steal"] >= 0 for r in data["rows"])
    assert set(data["correlation"]) == {"user", "sys", "minflt", "nivcsw", "steal", "other"}
    assert data["quarters"]["fastest"]["wall"] <= data["quarters"]["slowest"]["wall"]
    assert "correlation with the step's wall time" in proc.stdout


def test_gpu_check_runs_as_a_script_on_tiny_settings(tmp_path):
    # The GPU check's code path end to end on the CPU (its figures mean nothing here), through the script a
    # user runs, from their own folder: its OUT is theirs (it wrote into the repository), with $PYTHON's torch.
    cmd = ["bash", str(BENCH / "gpu_check.sh"), "--smoke", "out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tmp_path = tmp_path / "out"
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["setting"] for r in data["experiment"]] == ["Fshift 41", "Patch PI 41"]
    assert {r["model"] for r in data["bench"]} == {"AST-Base, batch 12", "AST-Base, batch 48", "HTS-AT, batch 128",
                                                   "SSAST-Base pretraining, batch 24"}
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## bench at the published shapes, bf16 (with breakdown) (smoke: tiny settings instead)" in md
    assert "**Smoke run** (`--smoke`)" in md and data["smoke"] is True
    assert [c["R"] for c in data["sweep"]] == [4, 1] and all(c["batches"] == [2, 4] for c in data["sweep"])
    # One part again (a GPU session that lost a part): the other parts' figures stay.
    demo_before = data["demo"]
    proc = subprocess.run([*cmd, "--parts", "demo"], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "gpu_check.json").read_text())
    assert again["experiment"] == data["experiment"] and again["bench"] == data["bench"] and again["sweep"] == data["sweep"]
    assert again["demo"] != demo_before and set(again["demo"]) == set(demo_before)  # measured anew


def test_shards_throughput_runs_as_a_script(tmp_path):
    out = tmp_path / "shards.json"
    cmd = [sys.executable, str(BENCH / "shards_throughput.py"), "--source", "audioset", "--quick", "--workers", "0",
           "--index-clips", "0", "--work", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == "shards_throughput" and MACHINE_KEYS <= set(data["machine"])
    rows = {(r["variant"], r["workers"]): r for r in data["throughput"]}
    assert set(rows) == {(v, 0) for v in ("files", "shards audio", "shards R=1", "shards R=4")}
    assert all(r["clips_per_s"] > 0 for r in rows.values())
    assert data["clips"] == 24 and data["pack"]["written_shards"] == 4  # 24 + 8 validation clips, 8 a shard
    assert 0.2 < data["coarse_over_fine_bytes"] < 0.5


def test_shards_index_steps_measure_a_split_index(tmp_path, monkeypatch):
    bench = _load("shards_throughput", monkeypatch)
    built = bench.index_step("build", tmp_path, 2500)
    opened = bench.index_step("open", tmp_path, 2500)
    for m in (built, opened):
        assert {"seconds", "peak_traced_mib", "peak_rss_over_start_mib"} <= set(m) and m["peak_traced_mib"] > 0
    assert len(json.loads((tmp_path / "dataset.json").read_text())["shardlist"]) == 3


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="needs the lightning extra")
def test_lightning_vs_cli_runs_as_a_script(tmp_path):
    cmd = [sys.executable, str(BENCH / "lightning_vs_cli.py"), "--quick", "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CLI fshift 4-1" in proc.stdout and "Lightning fshift 4-1" in proc.stdout and "machine:" in proc.stdout
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["benchmark"] == "lightning_vs_cli" and MACHINE_KEYS <= set(data["machine"])
    assert [s["side"] for s in data["sides"]] == ["CLI fshift 4-1", "Lightning fshift 4-1"]
    assert {"best", "flops_save_pct", "time_save_pct", "beat_epoch"} <= set(data["sides"][0])
    agree = data["agreement"]
    assert agree["same_phases_and_R"] and agree["same_flops_per_epoch"] and agree["final_weights_max_abs_diff"] <= 1e-5
    assert set(data["records"]) == {"cli_baseline", "cli_c2f", "lightning_baseline", "lightning_c2f"}
