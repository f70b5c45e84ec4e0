"""The test session's set-up (one torch thread per pytest-xdist worker) and the fixtures shared by
the shard tests: a small labelled set of real audio files (the embedded synthetic events written
as 16-bit FLAC, plus one broken file), its config, and its pack."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from coarse2fine.data.sources import load_splits
from coarse2fine.data.synthetic import CLASSES, SyntheticConfig, make_clip

MAX_WORKERS = 8  # a worker holds 0.43 GB once torch, Lightning and transformers are imported, more as it trains


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core this process may use, at most :data:`MAX_WORKERS`."""
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      MAX_WORKERS))


def pytest_configure(config):
    """Under pytest-xdist (``-n N``) each worker takes one core: torch, and every process a test
    starts, runs one thread, so that workers' OpenMP threads do not spin-wait on each other."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


TRAIN_CLIPS, VAL_CLIPS, SHARD_CLIPS = 24, 8, 8
BAD_AT = 3  # the broken file's place in the training list: shard 0 packs 7 clips, the others 8, 8, 1

FILES_CONFIG = """\
extends: demo
name: {name}
data:
  kind: manifest
  train: train.csv
  val: val.csv
  label_csv: labels.csv
  clip_seconds: 1.28
  on_error: skip
train:
  epochs: 2
  batch_size: 8
  threads: 1
c2f:
  schedule: "4-1"
  method: fshift
  phase_epochs: [1, 1]
"""

SHARDS_CONFIG = """\
extends: files.yaml
name: shards
data:
  kind: shards
  train: {root}/train
  val: {root}/val
  shard_cache: cache
"""


@dataclass(frozen=True)
class AudioSet:
    folder: Path
    files_config: Path
    train_paths: list[Path]
    val_paths: list[Path]
    bad_at: int = BAD_AT

    @property
    def train_clips(self) -> int:
        return len(self.train_paths)

    @property
    def val_clips(self) -> int:
        return len(self.val_paths)


@dataclass(frozen=True)
class PackedSet:
    audio: AudioSet
    root: Path
    config: Path
    shard_clips: int = SHARD_CLIPS


def write_audio_set(folder: Path, train: int = TRAIN_CLIPS, val: int = VAL_CLIPS) -> AudioSet:
    """Clips of 1.5 s (packing cuts them to 1.28 s) as 16-bit FLAC, CSV manifests, a label CSV and
    a config; the training list also names one broken file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.csv").write_text("index,mid,display_name\n" + "".join(f"{i},{c},{c.title()}\n" for i, c in enumerate(CLASSES)))
    cfg = SyntheticConfig(num_clips=train + val, clip_seconds=1.5, sample_rate=16000, seed=3)
    paths: dict[str, list[Path]] = {}
    for split, n in (("train", train), ("val", val)):
        rows, paths[split] = [], []
        for i in range(n):
            wave, label = make_clip(i, split, cfg)
            path = folder / "audio" / f"{split}-{i:03d}.flac"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, np.clip(wave, -1, 32767 / 32768), 16000, subtype="PCM_16")
            rows.append(f"{path},{CLASSES[label]}\n")
            paths[split].append(path)
        if split == "train":
            broken = folder / "audio" / "broken.flac"
            broken.write_bytes(b"fLaC" + bytes(range(200)))
            rows.insert(BAD_AT, f"{broken},{CLASSES[0]}\n")
        (folder / f"{split}.csv").write_text("path,label\n" + "".join(rows))
    config = folder / "files.yaml"
    config.write_text(FILES_CONFIG.format(name="files"))
    return AudioSet(folder, config, paths["train"], paths["val"])


def shards_config(audio: AudioSet, root: Path, name: str = "shards.yaml") -> Path:
    """A config training on the pack at ``root`` (otherwise the files config)."""
    path = audio.folder / name
    path.write_text(SHARDS_CONFIG.format(root=root))
    return path


@pytest.fixture(scope="session")
def audio_set(tmp_path_factory) -> AudioSet:
    return write_audio_set(tmp_path_factory.mktemp("audio_set"))


@pytest.fixture(scope="session")
def packed(audio_set) -> PackedSet:
    """The audio set packed with the features of its 4-1 Fshift schedule (r1, r4)."""
    from coarse2fine.config import load_config
    from coarse2fine.data.pack import pack

    root = audio_set.folder / "packed"
    pack(load_config(audio_set.files_config), root, features=True, shard_clips=SHARD_CLIPS, progress=False)
    return PackedSet(audio_set, root, shards_config(audio_set, root))


@pytest.fixture(scope="module")
def splits(cfg):
    """The data of the test module's ``cfg`` fixture, loaded once per module."""
    return load_splits(cfg)
