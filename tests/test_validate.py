"""Clip validation on real audio files: every bad kind is named, good formats all pass."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from coarse2fine.data import validate as validate_module
from coarse2fine.data.manifest import LIST_LIMIT, Entry, Manifest, fsdd_manifest, read_ast_json
from coarse2fine.data.validate import InvalidInputError, Problem, ValidationReport, validate

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"


def tone(seconds: float, rate: int, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = amplitude * np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


# name -> (seconds, rate, channels, format, subtype)
GOOD = {
    "stereo.wav": (0.3, 16000, 2, "WAV", "PCM_16"),
    "u8.wav": (0.3, 16000, 1, "WAV", "PCM_U8"),
    "pcm16.wav": (0.3, 16000, 1, "WAV", "PCM_16"),
    "pcm24.wav": (0.3, 16000, 1, "WAV", "PCM_24"),
    "pcm32.wav": (0.3, 16000, 1, "WAV", "PCM_32"),
    "float.wav": (0.3, 16000, 1, "WAV", "FLOAT"),
    "double.wav": (0.3, 16000, 1, "WAV", "DOUBLE"),
    "rate8k.wav": (0.3, 8000, 1, "WAV", "PCM_16"),
    "rate44k.wav": (0.3, 44100, 2, "WAV", "PCM_16"),
    "clip.flac": (0.3, 22050, 1, "FLAC", "PCM_16"),
    "clip.ogg": (0.3, 16000, 1, "OGG", "VORBIS"),
}

# name -> words the problem must contain
BAD = {
    "corrupt.wav": "undecodable",
    "truncated_header.wav": "undecodable",
    "cut_short.wav": "truncated: its header says 0.300 s of audio, the file holds 0.150 s",
    "header_only.wav": "truncated: its header says 0.300 s of audio, the file holds 0.000 s",  # not "0 frames"
    "zero_bytes.wav": "empty",
    "empty.wav": "empty",
    "short.wav": "too short",
    "silent.wav": "silent",
    "nan.wav": "nan",
    "inf.wav": "inf",
    "missing.wav": "not found",
}


def write_bad(folder: Path) -> None:
    rng = np.random.default_rng(0)
    (folder / "corrupt.wav").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    sf.write(folder / "whole.tmp.wav", tone(0.3, 16000), 16000, subtype="PCM_16", format="WAV")
    (folder / "truncated_header.wav").write_bytes((folder / "whole.tmp.wav").read_bytes()[:30])
    whole = (folder / "whole.tmp.wav").read_bytes()  # a download cut short: its header intact, half its audio
    (folder / "cut_short.wav").write_bytes(whole[:len(whole) - 4800])
    (folder / "header_only.wav").write_bytes(whole[:44])
    (folder / "whole.tmp.wav").unlink()
    (folder / "zero_bytes.wav").write_bytes(b"")
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    sf.write(folder / "short.wav", tone(0.05, 8000), 8000, subtype="PCM_16")
    sf.write(folder / "silent.wav", np.zeros(8000, dtype=np.float32), 16000, subtype="PCM_16")
    nan = tone(0.3, 16000)
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = tone(0.3, 16000)
    inf[200] = np.inf
    sf.write(folder / "inf.wav", inf, 16000, subtype="FLOAT")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for name, (seconds, rate, channels, fmt, subtype) in GOOD.items():
        sf.write(folder / name, tone(seconds, rate, channels), rate, subtype=subtype, format=fmt)
    write_bad(folder)
    return folder


def manifest_of(folder: Path, names) -> Manifest:
    entries = [Entry(folder / n, ("a" if i % 2 else "b",)) for i, n in enumerate(names)]
    return Manifest(entries, ["a", "b"], ["a", "b"], False, "test manifest")


def test_good_formats_pass(clips: Path):
    report = validate(manifest_of(clips, GOOD), on_error="raise")
    assert report.problems == [] and [e.path.name for e in report.ok] == list(GOOD)
    assert report.format() == f"{len(GOOD)} of {len(GOOD)} clips usable"


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_kind_raises_with_file_and_problem(clips: Path, name: str):
    with pytest.raises(InvalidInputError) as info:
        validate(manifest_of(clips, ["pcm16.wav", name, "float.wav"]))
    msg = str(info.value)
    assert str(clips / name) in msg
    assert BAD[name] in msg.lower()
    assert "pcm16.wav" not in msg and "float.wav" not in msg
    [problem] = info.value.problems
    assert problem.path == clips / name and BAD[name] in problem.problem.lower()


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_kind_listed_when_skipping(clips: Path, name: str):
    report = validate(manifest_of(clips, ["pcm16.wav", name]), on_error="skip")
    assert [e.path.name for e in report.ok] == ["pcm16.wav"]
    [problem] = report.problems
    assert problem.path == clips / name and BAD[name] in problem.problem.lower()


def test_raise_lists_all_bad_files(clips: Path):
    with pytest.raises(InvalidInputError) as info:
        validate(manifest_of(clips, [*GOOD, *BAD]))
    msg = str(info.value)
    assert f"{len(BAD)} clip(s) cannot be used" in msg and "test manifest" in msg
    for name, word in BAD.items():
        line = next(line for line in msg.splitlines() if str(clips / name) in line)
        assert word in line.lower()
    assert {p.path.name for p in info.value.problems} == set(BAD)
    assert not any(str(clips / name) in msg for name in GOOD)


def test_skip_returns_report_and_warns(clips: Path, caplog):
    names = [*BAD, *GOOD]
    with caplog.at_level(logging.WARNING, logger="coarse2fine.data.validate"):
        report = validate(manifest_of(clips, names), on_error="skip")
    assert [e.path.name for e in report.ok] == list(GOOD)
    assert [p.path.name for p in report.problems] == list(BAD)
    assert any(f"skipping {len(BAD)} bad clip(s)" in r.getMessage() for r in caplog.records)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["checked"] == len(names) and d["ok"] == len(GOOD) and len(d["problems"]) == len(BAD)
    text = report.format()
    assert text.startswith(f"{len(GOOD)} of {len(names)} clips usable") and all(str(clips / n) in text for n in BAD)
    clean = report.filtered(manifest_of(clips, names))
    assert [e.path.name for e in clean.entries] == list(GOOD) and clean.classes == ["a", "b"]


def test_all_bad_raises_even_when_skipping(clips: Path):
    with pytest.raises(InvalidInputError, match="no clip is usable"):
        validate(manifest_of(clips, ["corrupt.wav", "missing.wav"]), on_error="skip")


def test_options(clips: Path):
    assert validate(manifest_of(clips, ["silent.wav"]), check_silence=False).problems == []
    assert validate(manifest_of(clips, ["short.wav"]), min_seconds=0.01).problems == []
    with pytest.raises(InvalidInputError, match="too short: 0.300 s < 0.5 s"):
        validate(manifest_of(clips, ["pcm16.wav"]), min_seconds=0.5)
    with pytest.raises(ValueError, match="on_error"):
        validate(manifest_of(clips, ["pcm16.wav"]), on_error="ignore")
    with pytest.raises(InvalidInputError, match="empty manifest"):
        validate(Manifest([], ["a"], ["a"], False, "nothing"))


def test_repeated_file_decoded_once(clips: Path, monkeypatch):
    calls: list[Path] = []
    real = validate_module.load_audio

    def counting(path, sample_rate=16000):
        calls.append(Path(path))
        return real(path, sample_rate)

    monkeypatch.setattr(validate_module, "load_audio", counting)
    report = validate(manifest_of(clips, ["pcm16.wav", "pcm16.wav", "float.wav"]))
    assert len(report.ok) == 3 and sorted(p.name for p in calls) == ["float.wav", "pcm16.wav"]


def test_a_clip_starting_past_its_files_end_or_near_it_is_a_bad_clip(clips: Path, tmp_path: Path):
    """Windows of one file given by their starts (a manifest's start column): each is checked against the
    file's decoded length, the file decoded once; a window that reads nothing or too little is bad."""
    from coarse2fine.data.files import FileDataset

    path = tmp_path / "ramp.wav"  # 0.3 s, each sample its own value
    sf.write(path, np.linspace(-0.9, 0.9, 4800, dtype=np.float32), 16000, subtype="FLOAT")
    entries = [Entry(path, ("a",), start=s, where=f"t.csv line {i + 2}") for i, s in enumerate([0.0, 0.1, 0.25, 0.5])]
    manifest = Manifest(entries, ["a", "b"], ["a", "b"], False, "t.csv")
    with pytest.raises(InvalidInputError) as err:
        validate(manifest, min_seconds=0.1)
    assert [p.problem for p in err.value.problems] == [
        "t.csv line 4: too short after its start at 0.25 s: 0.050 s < 0.1 s",
        "t.csv line 5: starts at 0.5 s, at or after the file's end (0.300 s)"]
    report = validate(manifest, min_seconds=0.1, on_error="skip")
    assert [e.start for e in report.ok] == [0.0, 0.1]
    data = FileDataset.from_manifest(report.filtered(manifest), 1600, 16000, "zeros")
    wave = torch.from_numpy(sf.read(path, dtype="float32")[0])
    assert torch.equal(data[0][0], wave[:1600]) and torch.equal(data[1][0], wave[1600:3200])  # 0.1 s (1,600 samples) in


def test_report_dataclass_defaults():
    r = ValidationReport(ok=[])
    assert r.to_dict() == {"checked": 0, "ok": 0, "problems": []}


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_test_split_is_clean():
    report = validate(fsdd_manifest(FSDD, "digits", "test"))
    assert len(report.ok) == 300 and report.problems == []


# ----------------------------------------------------------------------------- bad manifest entries

LABELS = 'index,mid,display_name\n0,/m/a,"Dog"\n1,/m/b,Cat\n'


def bad_entry_manifest(clips: Path, folder: Path) -> Path:
    """An AST manifest over real clips: 3 good ones, 3 bad entries, 1 bad audio file."""
    (folder / "class_labels_indices.csv").write_text(LABELS)
    rows = [{"wav": str(clips / "pcm16.wav"), "labels": "/m/a"}, {"wav": str(clips / "float.wav"), "labels": "/m/b"},
            {"wav": str(clips / "u8.wav"), "labels": "/m/nonexistent"},
            {"labels": "/m/a"},
            {"wav": str(clips / "pcm24.wav"), "labels": ""},
            {"wav": str(clips / "clip.flac"), "labels": "/m/a"},
            {"wav": str(clips / "corrupt.wav"), "labels": "/m/b"}]
    path = folder / "badman.json"
    path.write_text(json.dumps({"data": rows}))
    return path


def test_bad_entries_and_bad_files_in_one_error(clips: Path, tmp_path: Path):
    path = bad_entry_manifest(clips, tmp_path)
    manifest = read_ast_json(path, tmp_path / "class_labels_indices.csv")
    with pytest.raises(InvalidInputError) as info:
        validate(manifest)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 4 clip(s) cannot be used; set data.on_error: skip")
    lines = msg.splitlines()[1:]
    assert lines[0] == (f"  {clips / 'u8.wav'}: badman.json entry 3: unknown label '/m/nonexistent' "
                        f"(not a class in {tmp_path / 'class_labels_indices.csv'})")
    assert lines[1] == f'  {path}: badman.json entry 4: no "wav" key (keys: labels)'
    assert lines[2] == f'  {clips / "pcm24.wav"}: badman.json entry 5: "labels" is empty'
    assert lines[3].startswith(f"  {clips / 'corrupt.wav'}: badman.json entry 7: undecodable") and len(lines) == 4
    assert [p.path.name for p in info.value.problems] == ["u8.wav", "badman.json", "pcm24.wav", "corrupt.wav"]


def test_bad_entries_skipped_and_reported_like_bad_files(clips: Path, tmp_path: Path):
    path = bad_entry_manifest(clips, tmp_path)
    manifest = read_ast_json(path, tmp_path / "class_labels_indices.csv")
    report = validate(manifest, on_error="skip")
    assert [e.path.name for e in report.ok] == ["pcm16.wav", "float.wav", "clip.flac"]
    assert [(p.path.name, p.problem.split(":")[0]) for p in report.problems] == [
        ("u8.wav", "badman.json entry 3"), ("badman.json", "badman.json entry 4"), ("pcm24.wav", "badman.json entry 5"),
        ("corrupt.wav", "badman.json entry 7")]
    assert report.problems[-1].problem.startswith("badman.json entry 7: undecodable")
    assert report.to_dict()["checked"] == 7 and report.filtered(manifest).problems == []


def test_a_bad_file_is_named_with_its_csv_line(clips: Path, tmp_path: Path):
    from coarse2fine.data.manifest import read_csv

    path = tmp_path / "train.csv"
    path.write_text(f"path,label\n{clips / 'pcm16.wav'},a\n{tmp_path / 'gone.wav'},b\n{clips / 'corrupt.wav'},a\n"
                    f"{clips / 'corrupt.wav'},b\n")
    report = validate(read_csv(path), on_error="skip")
    assert [(p.path.name, p.problem.split(": ")[:2]) for p in report.problems] == [
        ("gone.wav", ["train.csv line 3", "file not found"]), ("corrupt.wav", ["train.csv line 4", "undecodable"])]


def test_a_relative_path_found_nowhere_names_both_places_and_paths_are_shown_normalised(clips: Path, tmp_path: Path,
                                                                                       monkeypatch):
    # "/tmp/w/data/rel/esc_audio/x.wav: file not found" did not say that the current folder was tried too, and a bad
    # file was named /tmp/w/data/rel/../badaudio/trunc.flac (a new user's case)
    work, rel, bad = tmp_path / "work", tmp_path / "work" / "data" / "rel", tmp_path / "work" / "data" / "badaudio"
    rel.mkdir(parents=True)
    bad.mkdir()
    (bad / "trunc.flac").write_bytes((clips / "corrupt.wav").read_bytes())
    (rel / "labels.csv").write_text('index,mid,display_name\n0,a,"A"\n1,b,"B"\n')
    rows = [{"wav": str(clips / "pcm16.wav"), "labels": "a"}, {"wav": "esc_audio/x.wav", "labels": "b"},
            {"wav": "../badaudio/trunc.flac", "labels": "a"}]
    (rel / "train.json").write_text(json.dumps({"data": rows}))
    monkeypatch.chdir(work)
    manifest = read_ast_json(rel / "train.json", rel / "labels.csv")
    assert manifest.entries[2].path == rel / ".." / "badaudio" / "trunc.flac"  # the clip as its list names it
    with pytest.raises(InvalidInputError) as info:
        validate(manifest)
    lines = str(info.value).splitlines()[1:]
    assert lines[0] == (f"  {rel / 'esc_audio' / 'x.wav'}: train.json entry 2: file not found under the manifest's "
                        f"folder ({rel / 'esc_audio' / 'x.wav'}) nor under the current folder "
                        f"({work / 'esc_audio' / 'x.wav'})")
    assert lines[1].startswith(f"  {bad / 'trunc.flac'}: train.json entry 3: undecodable")


def test_message_caps_a_long_list(clips: Path):
    names = ["corrupt.wav", *["pcm16.wav"] * 3]
    manifest = manifest_of(clips, names)
    manifest.problems = [Problem(clips / f"x{i}.wav", f"m.json entry {i}: unknown label 'z'") for i in range(LIST_LIMIT + 5)]
    with pytest.raises(InvalidInputError) as info:
        validate(manifest)
    lines = str(info.value).splitlines()
    assert f"{LIST_LIMIT + 6} clip(s) cannot be used" in lines[0] and len(lines) == LIST_LIMIT + 2
    assert lines[-1] == "  ... and 6 more" and len(info.value.problems) == LIST_LIMIT + 6


def test_only_set_aside_entries_left_is_no_usable_clip():
    manifest = Manifest([], ["a"], ["a"], False, "m.json", [Problem(Path("x.wav"), "m.json entry 1: unknown label 'z'")])
    with pytest.raises(InvalidInputError, match=r"(?s)no clip is usable.*x\.wav: m\.json entry 1"):
        validate(manifest, on_error="skip")


def _run_settings(train: Path, val: Path, *extra: str) -> list[str]:
    return ["data.kind=manifest", f"data.train={train}", f"data.val={val}", "data.clip_seconds=0.3",
            "features.target_length=32", "train.epochs=1", "train.batch_size=2", "train.optim.warmup_steps=1",
            "c2f.schedule=1", *extra]


def test_run_skips_bad_entries_and_lists_them_in_log_json(clips: Path, tmp_path: Path):
    from coarse2fine.cli import main

    train = bad_entry_manifest(clips, tmp_path)
    val = tmp_path / "val.json"
    val.write_text(json.dumps({"data": [{"wav": str(clips / "pcm16.wav"), "labels": "/m/a"},
                                        {"wav": str(clips / "float.wav"), "labels": "/m/b"}]}))
    sets = [a for s in _run_settings(train, val, "data.on_error=skip") for a in ("--set", s)]
    assert main(["train", "demo", *sets, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    skipped = [(Path(s["path"]).name, s["problem"].split(":")[0]) for s in log["skipped"]]
    assert skipped == [("u8.wav", "badman.json entry 3"), ("badman.json", "badman.json entry 4"),
                       ("pcm24.wav", "badman.json entry 5"), ("corrupt.wav", "badman.json entry 7")]
    assert "unknown label '/m/nonexistent'" in log["skipped"][0]["problem"]


def test_run_stops_listing_every_bad_entry(clips: Path, tmp_path: Path, capsys):
    from coarse2fine.cli import main

    train = bad_entry_manifest(clips, tmp_path)
    sets = [a for s in _run_settings(train, train) for a in ("--set", s)]
    assert main(["train", "demo", *sets, "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    for words in ("entry 3: unknown label '/m/nonexistent'", 'entry 4: no "wav" key', 'entry 5: "labels" is empty',
                  "corrupt.wav: badman.json entry 7: undecodable"):
        assert words in err
    assert not (tmp_path / "run" / "log.json").exists()
