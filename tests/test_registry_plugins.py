"""Model families from other distributions: ``coarse2fine.models`` entry points, loaded by every
process (the command line, ``predict`` reading a run's ``model_config.json``), for real: a tiny
distribution (a module and its ``.dist-info``) is written to a folder on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "new_family.py"

# The example's family as a plug-in module, plus a callable entry point: what it returns is registered.
PLUGIN = EXAMPLE.read_text() + '''
from coarse2fine.model.registry import get_arch


def more_families():
    return [dataclasses.replace(get_arch("frames"), name="frames2")]
'''

TINY_RUN = ["--set", "data.train_clips=16", "--set", "data.val_clips=8", "--set", "train.epochs=1", "--set", "c2f.schedule=1",
            "--set", "train.batch_size=8", "--set", "train.threads=1"]


def write_distribution(folder: Path, name: str, module: str, entry_points: str) -> Path:
    """An installed distribution as importlib.metadata finds it on sys.path: ``NAME.py`` and
    ``NAME-0.1.dist-info`` with METADATA and ``entry_points.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(module)
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return folder


def c2f(args: list[str], path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m coarse2fine ARGS`` in a fresh process with ``path`` on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "coarse2fine", *args], check=False, capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_a_family_from_an_entry_point_is_counted_trained_and_predicted_with_from_the_command_line(tmp_path):
    plugins = write_distribution(tmp_path / "site", "frames_plugin", PLUGIN,
                                 "[coarse2fine.models]\nframes = frames_plugin\nframes2 = frames_plugin:more_families\n")
    flops = c2f(["flops", "demo", "--set", "model.arch=frames", "--set", "model.preset=small"], plugins, tmp_path)
    assert flops.returncode == 0, flops.stderr[-3000:]
    assert "demo: frames small" in flops.stdout and "the frames family has no analytic count" in flops.stdout
    # An unknown name lists the plug-in families (the module's and the callable's) beside the shipped ones.
    unknown = c2f(["flops", "demo", "--set", "model.arch=nope"], plugins, tmp_path)
    assert unknown.returncode == 2
    assert "model.arch: 'nope' is not one of ast, frames, frames2, htsat, ssast" in unknown.stderr
    # A run of the family is predicted with by another process, which knows the family only from the entry point.
    run = tmp_path / "run"
    train = c2f(["train", "demo", "--out", str(run), "--quiet", "--set", "model.arch=frames2", "--set", "model.preset=small",
                 *TINY_RUN], plugins, tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    sf.write(tmp_path / "x.wav", np.random.default_rng(0).normal(0, 0.1, 16000).astype("float32"), 16000)
    predict = c2f(["predict", str(run), str(tmp_path / "x.wav")], plugins, tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert "x.wav" in predict.stdout


def test_a_plug_in_that_fails_to_load_is_an_error_naming_it_not_a_silent_skip(tmp_path):
    plugins = write_distribution(tmp_path / "site", "broken_plugin", "import no_such_module_for_c2f_tests\n",
                                 "[coarse2fine.models]\nbroken = broken_plugin\n")
    proc = c2f(["flops", "demo", "--set", "model.arch=frames"], plugins, tmp_path)
    assert proc.returncode == 2
    err = proc.stderr
    assert "model family plug-in broken = 'broken_plugin' (entry point group coarse2fine.models) failed to load" in err
    assert "ModuleNotFoundError" in err and "no_such_module_for_c2f_tests" in err
    assert "is not one of" not in err
    # Plug-ins load lazily: a shipped family does not need them.
    shipped = c2f(["flops", "demo", "--set", "model.preset=micro"], plugins, tmp_path)
    assert shipped.returncode == 0, shipped.stderr[-3000:]


def test_the_new_family_example_is_a_plug_in_as_its_docstring_says(tmp_path):
    text = EXAMPLE.read_text()
    assert '[project.entry-points."coarse2fine.models"]\n    frames = "my_package.frames"' in text
    plugins = write_distribution(tmp_path / "site", "frames_example", text, "[coarse2fine.models]\nframes = frames_example\n")
    proc = c2f(["flops", "demo", "--set", "model.arch=frames", "--set", "model.preset=small"], plugins, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo: frames small" in proc.stdout
