"""data.kind: shards: what a packed split serves in each phase, reading over HTTP from a server on
127.0.0.1, corrupt shards named in the error (a flipped byte in a local shard included, its sha256
checked once per machine), check and stats, and a 2-million-clip index that opens in bounded
memory without touching a shard."""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from coarse2fine.cli import main
from coarse2fine.compression import Compression
from coarse2fine.config import load_config
from coarse2fine.data.shard_layout import ShardError
from coarse2fine.data.shard_store import ShardStore
from coarse2fine.data.shards import ShardDataset, verify_split
from coarse2fine.data.sources import count_classes, count_clips, load_splits
from coarse2fine.data.synthetic import CLASSES
from coarse2fine.experiments.grid import fold_config
from coarse2fine.features import extract

TRAIN_CLIPS, VAL_CLIPS = 24, 8  # the audio_set fixture's (conftest.py)


def _phase_spec(cfg, method: str, R: int):
    comp = Compression(method, R)
    return comp.feature_spec(cfg.features.spec()), comp


def _dataset(packed, root=None, store=None) -> ShardDataset:
    return ShardDataset(str(root or packed.root / "train"), 16000, 20480, store=store or ShardStore(packed.audio.folder / "cache"))


def test_splits_from_a_config_and_what_each_phase_serves(packed):
    cfg = load_config(packed.config)
    assert count_clips(cfg) == TRAIN_CLIPS and count_classes(cfg) == 8
    splits = load_splits(cfg)
    train = splits.train
    assert isinstance(train, ShardDataset) and len(train) == TRAIN_CLIPS and len(splits.val) == VAL_CLIPS
    assert [p.path.name for p in splits.skipped] == ["broken.flac"]
    assert splits.display_names == [c.title() for c in CLASSES] and train.class_names == list(CLASSES)
    assert torch.equal(train.sampling_weights(), torch.as_tensor(np.load(packed.root / "train" / "index.npz")["weights"]))

    # before any phase, and for a front end that was not packed: waveforms, bit-exact with the source file
    wave, target = train[0]
    source, _ = sf.read(packed.audio.train_paths[0], dtype="float32")
    assert train.serves == "waveforms" and torch.equal(wave, torch.from_numpy(source[:20480]))
    assert torch.equal(target, train.targets[0]) and float(target.sum()) == 1.0
    spec2, fshift2 = _phase_spec(cfg, "fshift", 2)
    assert train.serves_for(spec2, fshift2) == "waveforms"

    # Fshift R=4 reads the R=4 set: the front end's output at R=4 (float16), finished with the run's settings
    spec4, fshift4 = _phase_spec(cfg, "fshift", 4)
    assert train.serves_for(spec4, fshift4) == "features"
    train.set_phase(spec4, fshift4)
    feats, _ = train[0]
    assert train.serves == "features" and feats.shape == (32, 128)
    expected = extract(torch.from_numpy(source[:20480]).unsqueeze(0), spec4)[0]
    assert torch.allclose(feats, expected, atol=5e-3, rtol=0) and not torch.equal(feats, expected)

    # Pool and Patch phases compress full-resolution features on the device: they read the R=1 set
    spec_pool, pool4 = _phase_spec(cfg, "avgpool", 4)
    train.set_phase(spec_pool, pool4)
    assert train.serves == "features" and train[0][0].shape == (128, 128)
    train.set_phase(spec2, fshift2)
    assert train.serves == "waveforms" and torch.equal(train[0][0], wave)

    with pytest.raises(IndexError):
        train[TRAIN_CLIPS]
    with pytest.raises(ShardError, match="packed at 16000 Hz"):
        ShardDataset(str(packed.root / "train"), 22050, 20480)
    with pytest.raises(ShardError, match="cut to 1.28 s"):
        ShardDataset(str(packed.root / "train"), 16000, 32000)


def test_loader_workers_read_the_same_clips(packed):
    train = _dataset(packed)
    order = [[5, 17], [0, 23], [9]]
    single = [train.take(torch.tensor(b)) for b in order]
    loader = DataLoader(train, batch_sampler=order, num_workers=2)
    for (x, y), (xs, ys) in zip(loader, single):
        assert torch.equal(x, xs) and torch.equal(y, ys)


@pytest.fixture(scope="module")
def server(packed):
    """``python -m http.server``'s handler on a free port of 127.0.0.1, serving the audio set's folder."""
    handler = functools.partial(_QuietHandler, directory=str(packed.audio.folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        _QuietHandler.requests.append(self.path)


def test_remote_split_reads_like_the_local_one(packed, server, tmp_path):
    local = _dataset(packed)
    remote = ShardDataset(f"{server}/packed/train", 16000, 20480, store=ShardStore(tmp_path / "cache"))
    assert len(remote) == len(local) and remote.class_names == local.class_names
    _QuietHandler.requests.clear()
    for i in (0, 7, 23):
        assert torch.equal(remote[i][0], local[i][0])
    shards = [r for r in _QuietHandler.requests if r.endswith(".tar")]
    assert sorted(shards) == [f"/packed/train/audio-00000{s}.tar" for s in (0, 1, 3)]  # once each
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.tar"))
    assert len(cached) == 3 and all(len(Path(name).stem) == 64 for name in cached)  # named by sha256

    # a second reader on this machine uses the verified downloads: no request
    _QuietHandler.requests.clear()
    again = ShardDataset(f"{server}/packed/train", 16000, 20480, store=ShardStore(tmp_path / "cache"))
    assert torch.equal(again[7][0], local[7][0]) and not [r for r in _QuietHandler.requests if r.endswith(".tar")]

    with pytest.raises(ShardError, match=r"/nowhere/train/dataset.json: HTTP 404"):
        ShardDataset(f"{server}/nowhere/train", 16000, 20480, store=ShardStore(tmp_path / "cache"))


def test_training_and_check_over_http(packed, server, tmp_path, capsys):
    sets = ["--set", f"data.train={server}/packed/train", "--set", f"data.val={server}/packed/val",
            "--set", f"data.shard_cache={tmp_path / 'cache'}"]
    assert main(["check", str(packed.config), *sets]) == 0
    printed = capsys.readouterr().out
    assert "train: 24 clips in 4 shards (sets: audio, features-r1, features-r4): ok" in printed
    assert re.search(rf"train: downloading what the cache \({tmp_path / 'cache'}\) lacks of \d+\.\d\d GiB", printed)
    out = tmp_path / "run"
    assert main(["train", str(packed.config), "--out", str(out), "--quiet", "--schedule", "1",
                 "--set", "c2f.phase_epochs=null", "--set", "train.epochs=1", *sets]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["done"] and log["inputs"] == ["features"] and [r["R"] for r in log["records"]] == [1]
    assert [Path(s["path"]).name for s in log["skipped"]] == ["broken.flac"]


@pytest.fixture
def damaged(packed, tmp_path):
    """A copy of the pack whose shard can be damaged by the test."""
    root = tmp_path / "packed"
    shutil.copytree(packed.root, root)
    return root


@pytest.mark.parametrize("damage,problem", [
    ("truncate", "bytes, its descriptor says"),
    ("empty", "0 bytes, its descriptor says"),
    ("garble", "sha256 differs from its descriptor's"),
])
def test_a_corrupt_shard_is_named_in_the_error(packed, damaged, tmp_path, damage, problem, capsys):
    shard = damaged / "train" / "audio-000001.tar"
    shard.write_bytes(_damage(shard.read_bytes(), damage))
    features = damaged / "train" / "r4" / "feat-000001.tar"  # what the first phase of training reads
    features.write_bytes(_damage(features.read_bytes(), damage))
    train = _dataset(packed, damaged / "train", ShardStore(tmp_path / "cache"))
    with pytest.raises(ShardError, match=problem) as err:
        for i in range(SHARD_RANGE.start, SHARD_RANGE.stop):
            train[i]
    assert str(err.value).startswith(str(shard))
    assert train[0][0].shape == (20480,)  # other shards still read

    cfg = _config_for(packed, damaged)
    assert main(["check", str(cfg), "--set", f"data.shard_cache={tmp_path / 'cache'}"]) == 1
    out = capsys.readouterr().out
    assert "train: 24 clips in 4 shards" in out and "2 bad" in out and f"  {shard}: " in out and f"  {features}: " in out
    # training stops with the shard named (garbled float16 features would load: their sha256 is checked first)
    rc = main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet", "--set", "data.num_workers=0"])
    assert rc == 2 and str(features) in capsys.readouterr().err


SHARD_RANGE = range(7, 15)  # the clips of shard 1


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncate":
        return data[: len(data) // 2]
    if how == "empty":
        return b""
    garbled = bytearray(data)  # same size, 4 KB of garbage from the middle on: a checksum or a decode notices
    garbled[len(data) // 2: len(data) // 2 + 4096] = bytes(range(256)) * 16
    return bytes(garbled)


def _config_for(packed, root) -> Path:
    path = root.parent / "damaged.yaml"
    path.write_text(f"extends: {packed.config}\ndata:\n  train: {root / 'train'}\n  val: {root / 'val'}\n")
    return path


def _flip_a_feature_byte(shard: Path) -> None:
    """Flip one bit inside the float16 data of the shard's first .npy member, in place: same size,
    and the member still loads (the damage a checksum alone notices)."""
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".npy"))
    at = member.offset_data + member.size - 1  # the high byte of the last value: a mantissa bit
    with open(shard, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)[0]
        fh.seek(at)
        fh.write(bytes([byte ^ 0x01]))


class _Hashes:
    """Counts ``file_sha256`` calls in this process and in the loader workers it forks (a file, appended to)."""

    def __init__(self, monkeypatch, log: Path):
        import coarse2fine.data.shard_store as shard_store

        self.log, real = log, shard_store.file_sha256
        log.touch()

        def counted(path):
            with open(log, "a") as fh:
                fh.write(f"{path}\n")
            return real(path)

        monkeypatch.setattr(shard_store, "file_sha256", counted)

    def paths(self) -> list[str]:
        return self.log.read_text().split()


def test_a_flipped_byte_in_a_local_shard_stops_training_naming_it(packed, damaged, tmp_path, capsys):
    """The new user's report: a feature shard of the same size with one byte flipped was read by
    training (`check` named it, `train` exited 0). Verified and marked before the damage, too: the
    marker of the intact file must not vouch for the damaged one."""
    cfg = load_config(packed.config)
    spec, pool = _phase_spec(cfg, "avgpool", 4)  # reads the R=1 set
    shard = damaged / "train" / "r1" / "feat-000000.tar"
    before = _dataset(packed, damaged / "train", ShardStore(tmp_path / "cache"))
    before.set_phase(spec, pool)
    assert before[0][0].shape == (128, 128)  # intact: verified, marked
    size = shard.stat().st_size
    _flip_a_feature_byte(shard)
    assert shard.stat().st_size == size

    train = _dataset(packed, damaged / "train", ShardStore(tmp_path / "cache"))  # the next epoch's worker, or run
    train.set_phase(spec, pool)
    with pytest.raises(ShardError, match="sha256 differs from its descriptor's") as err:
        train[0]
    assert str(err.value).startswith(f"{shard}: ") and "coarse2fine check" in str(err.value)
    assert train[7][0].shape == (128, 128)  # the other shards still read

    # the reproduction: pack with --features, flip a byte of train/r1/feat-000000.tar, train (4-1: the
    # R=1 phase reads it) in a DataLoader worker: the run stops, naming the shard
    config = _config_for(packed, damaged)
    rc = main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet", "--set", "data.num_workers=1",
               "--set", f"data.shard_cache={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{shard}: sha256 differs from its descriptor's" in err


def test_local_shards_are_hashed_once_per_machine_not_per_epoch_or_worker(packed, tmp_path, monkeypatch):
    root = tmp_path / "packed"
    shutil.copytree(packed.root, root)
    cache = tmp_path / "cache"
    hashes = _Hashes(monkeypatch, tmp_path / "hashes.txt")
    config = _config_for(packed, root)
    train = ["train", str(config), "--quiet", "--set", "data.num_workers=2", "--set", f"data.shard_cache={cache}",
             "--set", "c2f.phase_epochs=[2, 1]"]
    assert main([*train, "--out", str(tmp_path / "run")]) == 0  # an intact pack trains as before
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["done"] and log["inputs"] == ["features", "features"] and [r["R"] for r in log["records"]] == [4, 4, 1]

    # R=4 then R=1 features, train (4 shards) and val (1): each hashed once, though every epoch's
    # two new loader workers opened them (3 training epochs, validation after each)
    read = sorted(str(p) for split in ("train", "val") for p in (root / split).glob("r*/feat-*.tar"))
    assert len(read) == 10 and sorted(hashes.paths()) == read
    markers = sorted((cache / "verified").rglob("*.json"))
    assert sorted(json.loads(m.read_text())["path"] for m in markers) == [os.path.realpath(p) for p in read]

    # a second run on this machine hashes nothing; `check` hashes every shard again (audio too)
    assert main([*train, "--out", str(tmp_path / "again")]) == 0
    assert len(hashes.paths()) == 10
    assert main(["check", str(config), "--set", f"data.shard_cache={cache}"]) == 0
    assert len(hashes.paths()) == 10 + 3 * 5  # audio, r1 and r4: 4 training shards and 1 validation shard each


def test_check_unmarks_a_shard_damaged_behind_its_marker(packed, damaged, tmp_path):
    """A change that keeps size, mtime and inode is not noticed by the marker; `check` hashes
    anyway, and removes the marker so that training hashes the shard again and stops."""
    cfg = load_config(packed.config)
    spec, pool = _phase_spec(cfg, "avgpool", 4)
    shard = damaged / "train" / "r1" / "feat-000000.tar"
    store = ShardStore(tmp_path / "cache")
    assert verify_split(str(damaged / "train"), store)[2] == []  # check marks every shard
    marker = store.marker(str(shard))
    assert marker.exists()
    st = shard.stat()
    _flip_a_feature_byte(shard)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    _, _, problems = verify_split(str(damaged / "train"), ShardStore(tmp_path / "cache"))
    assert [p.split(": ")[0] for p in problems] == [str(shard)] and "sha256 differs" in problems[0]
    assert not marker.exists()
    train = _dataset(packed, damaged / "train", ShardStore(tmp_path / "cache"))
    train.set_phase(spec, pool)
    with pytest.raises(ShardError, match="sha256 differs"):
        train[0]


def test_check_and_stats_of_shards_match_the_files(packed, capsys):
    assert main(["check", str(packed.config)]) == 0
    out = capsys.readouterr().out
    assert "val: 8 clips in 1 shards (sets: audio, features-r1, features-r4): ok; 0 clip(s) skipped" in out
    assert "phase 1 (R=4): packed features (features-r4)\nphase 2 (R=1): packed features (features-r1)\n" in out
    assert re.search(r"\n8 classes \(training/validation clips\): \S+ \(\S+\) \d+/\d+, ", out)  # as for files
    assert main(["stats", str(packed.config)]) == 0
    shard_stats = capsys.readouterr().out.splitlines()[0]
    assert "(1 bad clip(s) skipped, when the pack was made)" in shard_stats  # not by this config's on_error
    shard_stats = shard_stats.split(" mean ", 1)[1]
    assert main(["stats", str(packed.audio.files_config)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split(" mean ", 1)[1] == shard_stats  # same audio, bit-exact: same statistics
    assert main(["stats", str(packed.audio.files_config), "--set", "features.normalize=false"]) == 0
    out = capsys.readouterr().out  # no block to paste where it would do nothing (HTS-AT's presets)
    assert "features.normalize: false" in out and "features:\n  mean:" not in out


def test_a_pack_names_the_clips_of_the_lists_it_was_packed_from(packed):
    """A run from the pack and a run from the files hold the same clip lists (compare takes them for
    the same data)."""
    shards, files = (load_splits(load_config(c)) for c in (packed.config, packed.audio.files_config))
    assert set(shards.clip_lists) == {"train", "val"} and shards.clip_lists == files.clip_lists
    assert shards.train_order is not None and shards.train_order == files.train_order
    # and the lists of the clips they use, the broken one left out: the list of a manifest cleaned of it
    assert shards.used_lists == files.used_lists and shards.used_lists["train"] != shards.clip_lists["train"]
    rows = (packed.audio.folder / "train.csv").read_text().splitlines()
    cleaned = packed.audio.folder / "cleaned.csv"
    cleaned.write_text("\n".join(r for r in rows if "broken" not in r) + "\n")
    clean = load_splits(load_config(packed.audio.files_config, [f"data.train={cleaned}"]))
    assert clean.clip_lists["train"] == clean.used_lists["train"] == shards.used_lists["train"]


@pytest.mark.parametrize("setting,problem,reads", [
    ("data.clip_seconds=2.0", "clips were packed cut to 1.28 s (20480 samples); data.clip_seconds asks for 32000", None),
    ("features.sample_rate=8000", "packed at 16000 Hz but the run's features use 8000 Hz", None),
    ("train.loss=ce", None, "packed features (features-r4)"),
    ("features.num_mel_bins=64", None, "waveforms, its features computed at every step"),
])
def test_check_opens_the_pack_as_a_run_would(packed, capsys, setting, problem, reads):
    """A pack that does not fit the config fails `check`, not the run's start; and `check` says
    which phases read packed features and which compute them from waveforms."""
    assert main(["check", str(packed.config), "--set", setting]) == (1 if problem else 0)
    out = capsys.readouterr().out
    assert "train: 24 clips in 4 shards (sets: audio, features-r1, features-r4): ok" in out  # the shards are sound
    if problem:
        assert f"A run of this config stops at its start: {packed.root / 'train' / 'dataset.json'}: {problem}" in out
    else:
        assert f"phase 1 (R=4): {reads}" in out


def test_crossval_folds_of_shards_are_packed_folders(packed):
    cfg = load_config(packed.config, ["data.train=/packs/esc50_fold{fold}/train", "data.val=/packs/esc50_fold{fold}/val"])
    fold = fold_config(cfg, 3)
    assert (fold.data.split_path("train"), fold.data.split_path("val")) == ("/packs/esc50_fold3/train",
                                                                           "/packs/esc50_fold3/val")
    # the fold's config says which fold it is (it kept the base's data.fold beside fold 3's paths)
    assert (fold.data.fold, fold.data.train, fold.name) == (3, "/packs/esc50_fold{fold}/train", f"{cfg.name}_fold3")


def test_unsupported_remote_scheme_and_missing_split(packed, tmp_path, capsys):
    with pytest.raises(ValueError, match="s3:// is not supported"):
        load_splits(load_config(packed.config, ["data.train=s3://bucket/train"]))
    with pytest.raises(ValueError, match=r"data.train: .*/missing: no such folder \(a split folder written by "
                                         r"`coarse2fine pack`, e.g. PACK/train; a moved pack: set data.train"):
        load_splits(load_config(packed.config, [f"data.train={tmp_path}/missing"]))
    assert main(["check", str(packed.config), "--set", f"data.train={packed.root}"]) == 2  # check says it as a run does
    assert f"data.train: {packed.root} is a pack's top folder" in capsys.readouterr().err
    # data.kind and the path of another kind (a new user's case: "empty manifest", a raw "Not a directory")
    with pytest.raises(ValueError, match=r"train.csv is a file; data.kind shards reads a split folder .* for a "
                                         r"manifest file, data.kind: manifest"):
        load_splits(load_config(packed.config, [f"data.train={packed.audio.folder / 'train.csv'}"]))
    with pytest.raises(ValueError, match=r"a folder written by `coarse2fine pack`, not a folder of class sub-folders; "
                                         r"read it with data.kind: shards"):
        load_splits(load_config(packed.audio.files_config, [f"data.train={packed.root / 'train'}"]))
    # the pack's top folder for a split (a new user's case: it was called an unfinished pack)
    with pytest.raises(ValueError, match=rf"data.val: {packed.root} is a pack's top folder \(it holds pack.json\); "
                                         rf"give its split folder: --set data.val={packed.root / 'val'}"):
        load_splits(load_config(packed.config, [f"data.val={packed.root}"]))
    # a split folder with shards and no descriptor yet: a pack that was stopped (a new user's case)
    (tmp_path / "half" / "train").mkdir(parents=True)
    (tmp_path / "half" / "train" / "audio-000000.tar").write_bytes(b"")
    with pytest.raises(ShardError, match=r"holds a pack's files: an unfinished `coarse2fine pack` \(run the same "
                                         r"command again"):
        load_splits(load_config(packed.config, [f"data.train={tmp_path}/half/train"]))


INDEX_SCRIPT = textwrap.dedent("""
    import json, sys, tracemalloc
    from pathlib import Path

    import numpy as np

    root = Path(sys.argv[1])
    N, SHARDS, C = 2_000_000, 2_000, 527
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 5, size=N)
    indptr = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = rng.integers(0, C, size=int(indptr[-1])).astype(np.int16)
    weights = rng.random(N)
    np.savez(root / "index.npz", indptr=indptr, indices=indices, weights=weights,
             lengths=np.full(N, 160000, dtype=np.int32), num_classes=np.int64(C))
    per = N // SHARDS
    desc = {"wids_version": 1, "name": "audio", "format": "coarse2fine-shards/1", "member": "flac",
            "sample_rate": 16000, "clip_seconds": 10.0, "num_samples": 160000, "multilabel": True,
            "classes": [f"/m/{c}" for c in range(C)], "num_clips": N, "index": "index.npz",
            "shardlist": [{"url": f"audio-{s:06d}.tar", "nsamples": per, "filesize": 175_000_000,
                           "sha256": "0" * 64} for s in range(SHARDS)]}
    (root / "dataset.json").write_text(json.dumps(desc))
    del indptr, indices, weights, counts

    from coarse2fine.data.shards import ShardDataset, verify_split

    opened, listed = [], []
    def audit(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].endswith(".tar"):
            opened.append(args[0])
        if event in ("os.listdir", "os.scandir"):
            listed.append(args)
    sys.addaudithook(audit)

    tracemalloc.start()
    ds = ShardDataset(str(root), 16000, 160000)
    weights = ds.sampling_weights()
    batch = ds.target_rows([0, 1_999_999])
    _, peak = tracemalloc.get_traced_memory()
    try:
        ds.targets
        dense = "built"
    except ValueError as err:
        dense = str(err)
    print(json.dumps({"clips": len(ds), "peak": peak, "opened": opened, "listed": len(listed),
                      "batch": list(batch.shape), "weights": len(weights), "dense": dense}))
""")


def test_a_two_million_clip_index_opens_in_bounded_memory_without_touching_a_shard(tmp_path):
    proc = subprocess.run([sys.executable, "-c", INDEX_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["clips"] == 2_000_000 and got["batch"] == [2, 527] and got["weights"] == 2_000_000
    assert got["opened"] == [] and got["listed"] == 0  # no shard opened, no folder listed
    # The index is 2M x (8 indptr + 2 x 2.5 labels + 8 weights + 4 lengths) bytes = 48 MiB, plus the
    # lengths cut to the run's clip length (8 MB) and the weights handed to the sampler (16 MB):
    # 71 MiB measured. Today's list of 2M manifest entries takes 1.3 GB.
    assert got["peak"] < 100 * 2**20, f"peak {got['peak'] / 2**20:.0f} MiB"
    assert "3.9 GiB" in got["dense"]


def test_shards_need_train_and_val(packed):
    with pytest.raises(ValueError, match="needs data.train and data.val"):
        load_splits(load_config(packed.config, ["data.val=null"]))


def test_a_busy_server_or_a_blip_is_tried_again_a_missing_shard_is_not():
    """A new user's run died when its shard server went away for a moment: 3 tries in 1.5 s, and an
    HTTP 503 not tried again at all."""
    import urllib.error

    from coarse2fine.data.shard_store import ATTEMPTS, _with_retries

    def failing(*errors):
        left = list(errors)

        def fetch():
            if left:
                raise left.pop(0)
            return "bytes"
        return fetch

    def http(code, retry_after=None):
        headers = {"Retry-After": retry_after} if retry_after else {}
        return urllib.error.HTTPError("http://h/x.tar", code, "busy", headers, None)

    waits = []
    fetch = failing(http(503), urllib.error.URLError("connection refused"), http(429, "7"))
    assert _with_retries("http://h/x.tar", fetch, waits.append) == "bytes"
    assert waits == [1.0, 2.0, 7.0]  # doubling, or what the server's Retry-After asks
    with pytest.raises(ShardError, match=r"x.tar: HTTP 404 busy$"):
        _with_retries("http://h/x.tar", failing(http(404)), waits.append)
    waits.clear()
    with pytest.raises(ShardError, match=rf"cannot be downloaded \(down; tried {ATTEMPTS} times over 31 s\)"):
        _with_retries("http://h/x.tar", failing(*[urllib.error.URLError("down")] * ATTEMPTS), waits.append)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_pack_of_an_earlier_version_that_skipped_nothing_used_the_clips_it_lists():
    from types import SimpleNamespace

    from coarse2fine.data.shards import packed_clip_lists

    old = {"train": SimpleNamespace(meta={"clip_list_sha256": "t", "num_skipped": 0}),
           "val": SimpleNamespace(meta={"clip_list_sha256": "v", "num_skipped": 2})}
    assert packed_clip_lists(old, "used_list_sha256") == {"train": "t"}  # val left clips out: not known
    assert packed_clip_lists(old) == {"train": "t", "val": "v"}
