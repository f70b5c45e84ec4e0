"""coarse2fine pack: the layout it writes, bad clips skipped and reported, resuming after a kill
(byte-identical to an uninterrupted pack), damaged shards rewritten, other settings refused."""

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.data.labels import balanced_weights
from coarse2fine.data.pack import PackError, pack
from coarse2fine.data.shard_layout import clip_key
from coarse2fine.folder_lock import LOCK_NAME


def _files(root: Path) -> dict[str, str]:
    """Every file's digest, the folder lock's (which names its last holder) aside."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def test_pack_layout_counts_checksums_and_report(packed):
    root, audio = packed.root, packed.audio
    n_train, n_val, per_shard = audio.train_clips, audio.val_clips, packed.shard_clips
    manifest = json.loads((root / "pack.json").read_text())
    assert manifest["format"] == "coarse2fine-shards/1" and len(manifest["config_digest"]) == 64
    assert manifest["settings"]["sample_rate"] == 16000 and manifest["settings"]["num_samples"] == 20480
    assert [s["name"] for s in manifest["settings"]["feature_sets"]] == ["r1", "r4"]
    train = manifest["splits"]["train"]
    assert (train["clips"], train["skipped"], train["shards"]) == (n_train, 1, 4)
    assert manifest["splits"]["val"]["clips"] == n_val and set(train["bytes"]) == {"audio", "r1", "r4"}
    # a coarse epoch reads R times fewer feature bytes (tar headers aside)
    assert 3.0 < train["bytes"]["r1"] / train["bytes"]["r4"] <= 4.0

    report = json.loads((root / "train" / "report.json").read_text())
    assert [Path(p["path"]).name for p in report["skipped"]] == ["broken.flac"]
    assert report["skipped"][0]["problem"].startswith(f"train.csv line {packed.audio.bad_at + 2}: undecodable")  # as check says

    desc = json.loads((root / "train" / "dataset.json").read_text())
    assert desc["wids_version"] == 1 and desc["num_clips"] == n_train
    assert [s["nsamples"] for s in desc["shardlist"]] == [per_shard - 1, per_shard, per_shard, 1]
    for shard in desc["shardlist"]:
        data = (root / "train" / shard["url"]).read_bytes()
        assert len(data) == shard["filesize"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
    r4 = json.loads((root / "train" / "r4" / "dataset.json").read_text())
    assert r4["R"] == 4 and r4["dtype"] == "float16" and r4["frontend"]["frame_shift_ms"] == 40.0
    assert [s["nsamples"] for s in r4["shardlist"]] == [s["nsamples"] for s in desc["shardlist"]]

    # members: clip i is key %09d in every set; audio is the source cut to 1.28 s, bit-exact
    with tarfile.open(root / "train" / "audio-000000.tar") as tar:
        names = tar.getnames()
        first = tar.extractfile(names[0]).read()
    assert names[:2] == [f"{clip_key(0)}.flac", f"{clip_key(1)}.flac"]
    wave, rate = sf.read(io.BytesIO(first), dtype="float32")
    source, _ = sf.read(audio.train_paths[0], dtype="float32")
    assert rate == 16000 and np.array_equal(wave, source[:20480])

    # the index: labels in packed order (the broken clip left out), pack-time balanced weights
    with np.load(root / "train" / "index.npz") as z:
        indptr, indices, weights, lengths = z["indptr"], z["indices"], z["weights"], z["lengths"]
    rows = [line.split(",")[1].strip() for line in (audio.folder / "train.csv").read_text().splitlines()[1:]]
    del rows[audio.bad_at]
    classes = desc["classes"]
    assert [classes[int(indices[indptr[i]])] for i in range(n_train)] == rows
    dense = torch.zeros(n_train, len(classes))
    dense[torch.arange(n_train), torch.from_numpy(indices.astype(np.int64))] = 1
    assert torch.allclose(torch.from_numpy(weights), balanced_weights(dense), rtol=1e-12, atol=0)
    assert (lengths == 20480).all()


def test_a_shard_whose_clips_are_all_bad_leaves_no_file_and_is_not_counted(audio_set, tmp_path):
    # One clip a shard, the broken one alone in its shard: an empty tar was left and counted as a shard.
    cfg, out = load_config(audio_set.files_config), tmp_path / "one"
    train = next(r for r in pack(cfg, out, shard_clips=1, progress=False) if r.name == "train")
    n = audio_set.train_clips
    assert (train.clips, train.shards, train.written, train.kept, train.skipped) == (n, n, n, 0, 1)
    assert not (out / "train" / f"audio-{audio_set.bad_at:06d}.tar").exists()
    assert len(list((out / "train").glob("audio-*.tar"))) == n
    desc = json.loads((out / "train" / "dataset.json").read_text())
    assert len(desc["shardlist"]) == n and json.loads((out / "pack.json").read_text())["splits"]["train"]["shards"] == n
    again = next(r for r in pack(cfg, out, shard_clips=1, progress=False) if r.name == "train")
    assert (again.shards, again.written, again.kept) == (n, 0, n)  # the empty shard's record is kept, not rewritten


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_pack_killed_midway_resumes_to_identical_files(audio_set, tmp_path, sig):
    reference = tmp_path / "reference"
    cfg = load_config(audio_set.files_config)
    pack(cfg, reference, features=True, shard_clips=2, progress=False)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "coarse2fine.cli", "pack", str(audio_set.files_config), "--out", str(out),
           "--features", "--shard-clips", "2", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (out / "train" / "parts" / "000001.json").exists():
        time.sleep(0.002)
    proc.send_signal(sig)
    proc.wait()
    err = proc.stderr.read().decode()
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), f"pack was not stopped mid-way: {err[-2000:]}"
    if sig == signal.SIGINT:  # Ctrl-C: one line, no traceback
        assert "coarse2fine: interrupted; what was finished is kept" in err and "Traceback" not in err
    assert not (out / "pack.json").exists()
    results = pack(cfg, out, features=True, shard_clips=2, progress=False)
    train = results[0]
    assert train.kept >= 2 and train.written >= 1 and train.kept + train.written == train.shards == 13
    assert _files(out) == _files(reference)


def test_a_damaged_shard_is_written_again(audio_set, tmp_path):
    cfg = load_config(audio_set.files_config)
    out = tmp_path / "pack"
    pack(cfg, out, shard_clips=8, progress=False)
    before = _files(out)
    shard = out / "train" / "audio-000002.tar"
    shard.write_bytes(shard.read_bytes()[:1000])
    results = pack(cfg, out, shard_clips=8, progress=False)
    assert (results[0].written, results[0].kept) == (1, 3)
    assert _files(out) == before


def test_a_folder_of_other_settings_or_other_files_is_refused(audio_set, tmp_path, capsys):
    cfg = load_config(audio_set.files_config)
    out = tmp_path / "pack"
    pack(cfg, out, shard_clips=8, progress=False)
    with pytest.raises(PackError, match="shard_clips: 8 vs 16"):
        pack(cfg, out, shard_clips=16, progress=False)
    fewer = tmp_path / "val.csv"  # a clip left out of the validation list since: said in words, not by digests
    fewer.write_text("".join((audio_set.folder / "val.csv").read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(PackError, match=rf"holds a pack of other settings \(the val list \({re.escape(str(fewer))}\) "
                                        r"names other clips or labels than when it was packed\)"):
        pack(load_config(audio_set.files_config, [f"data.val={fewer}"]), out, shard_clips=8, progress=False)
    assert main(["pack", str(audio_set.files_config), "--out", str(out), "--shard-clips", "16", "--fresh", "--quiet"]) == 0
    assert json.loads((out / "pack.json").read_text())["settings"]["shard_clips"] == 16
    printed = capsys.readouterr().out
    assert "train: 24 clips in 2 shards (2 written, 0 kept), 1 skipped" in printed
    assert re.search(r"\n  skipped \S+broken\.flac: ", printed)  # named, not only counted (a new user's case)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["pack", str(audio_set.files_config), "--out", str(other), "--quiet"]) == 2
    assert "is not empty and holds no pack" in capsys.readouterr().err
    assert main(["pack", "demo", "--out", str(tmp_path / "synthetic"), "--quiet"]) == 2
    assert "pack reads audio files" in capsys.readouterr().err


def test_unlabeled_recordings_are_packed_as_their_windows(audio_set, tmp_path):
    cfg = load_config("ssast_pretrain-cpu", [f"data.sources=[{audio_set.folder / 'audio'}]", "data.clip_seconds=0.5",
                                             "data.val_fraction=0.25", "features.target_length=64"])
    results = pack(cfg, tmp_path / "pack", shard_clips=16, progress=False)
    windows = sum(r.clips for r in results)
    assert windows == 3 * (audio_set.train_clips + audio_set.val_clips)  # 1.5 s recordings: windows at 0, 0.5, 1 s
    assert sum(r.skipped for r in results) == 1  # the broken file
    record = json.loads((tmp_path / "pack" / "train" / "parts" / "000000.json").read_text())
    assert record["labels"][0] == [] and record["sources"][1].endswith("@0.5s")
    with tarfile.open(tmp_path / "pack" / "train" / "audio-000000.tar") as tar:
        second = tar.extractfile(tar.getnames()[1]).read()
    wave, _ = sf.read(io.BytesIO(second), dtype="float32")
    source, _ = sf.read(record["sources"][1].removesuffix("@0.5s"), dtype="float32")
    assert np.array_equal(wave, source[8000:16000])


def test_manifest_entries_that_cannot_be_used_are_in_the_pack_report(audio_set, tmp_path, caplog):
    """An entry with an unknown label is left out of the shards and listed with the bad clips."""
    rows = (audio_set.folder / "train.csv").read_text().splitlines()
    unknown = audio_set.train_paths[0]
    cut = tmp_path / "cut.wav"  # a WAV cut short, its header intact: libsndfile reads a shorter clip
    sf.write(cut, 0.1 * np.ones(16000, np.float32), 16000, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:-16000])
    label = rows[1].rsplit(",", 1)[1]
    rows = [f"{rows[0]},speaker", *(f"{r},x" for r in rows[1:])]  # a column nothing reads
    (tmp_path / "train.csv").write_text("\n".join([*rows, f"{unknown},no_such_class,y", f"{cut},{label},z"]) + "\n")
    cfg = load_config(audio_set.files_config, [f"data.train={tmp_path / 'train.csv'}", "data.on_error=skip"])
    out = tmp_path / "pack"
    with caplog.at_level("WARNING", logger="coarse2fine"):
        pack(cfg, out, shard_clips=16, progress=False)
    assert "train.csv: column(s) speaker not read" in caplog.text  # as check and train say it
    report = json.loads((out / "train" / "report.json").read_text())
    problems = {Path(p["path"]).name: p["problem"] for p in report["skipped"]}
    assert "unknown label 'no_such_class'" in problems[unknown.name] and "broken.flac" in problems
    line = len(rows) + 2  # the row after the header, the clips and the unknown label's
    assert problems["cut.wav"].startswith(f"train.csv line {line}: truncated: its header says 1.000 s of audio, the "
                                          "file holds 0.500 s")
    assert json.loads((out / "pack.json").read_text())["splits"]["train"]["skipped"] == 3


def test_clips_in_both_splits_are_named_by_pack_and_by_check_of_the_pack(audio_set, tmp_path, caplog, capsys):
    """A validation list that repeats a training clip: said when packed, and by `check` of the pack
    (from the pack's records), as `check` of the files says it."""
    rows = (audio_set.folder / "val.csv").read_text().splitlines()
    repeated = audio_set.train_paths[5]
    (tmp_path / "val.csv").write_text("\n".join([*rows, f"{repeated},{rows[1].split(',')[1]}"]) + "\n")
    cfg = load_config(audio_set.files_config, [f"data.val={tmp_path / 'val.csv'}"])
    out = tmp_path / "pack"
    with caplog.at_level("WARNING", logger="coarse2fine.data.pack"):
        pack(cfg, out, shard_clips=8, progress=False)
    warning = f"1 clip(s) are in both the training and the validation lists (the validation metric is not measured on held-out clips): {repeated}"
    assert warning in caplog.text
    config = tmp_path / "shards.yaml"
    config.write_text(f"extends: {audio_set.files_config}\nname: shards\ndata:\n  kind: shards\n  train: {out / 'train'}\n"
                      f"  val: {out / 'val'}\n  shard_cache: {tmp_path / 'cache'}\n")
    assert main(["check", str(config)]) == 0
    assert f"warning: {warning}\n" in capsys.readouterr().out
    for part in (out / "val" / "parts").iterdir():  # a pack without its records: said, not passed as checked
        part.unlink()
    assert main(["check", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "clips in both splits: not checked (the pack has no records of its clips' sources)" in printed
    assert "in both the training" not in printed
