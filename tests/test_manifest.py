"""Manifest readers: AST JSON + label CSV, plain CSV, class folders, FSDD; and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from coarse2fine.data.manifest import (
    LIST_LIMIT,
    Entry,
    Manifest,
    ManifestError,
    align_classes,
    fsdd_manifest,
    listing_warnings,
    read_ast_json,
    read_csv,
    read_folder,
    read_label_csv,
    read_manifest,
    targets,
)

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"

LABEL_CSV = """index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/05zppz,"Male speech, man speaking"
2,/m/068hy,"Domestic animals, pets"
3,/m/07q6cd_,"Squeak"
"""


@pytest.fixture
def label_csv(tmp_path: Path) -> Path:
    p = tmp_path / "class_labels_indices.csv"
    p.write_text(LABEL_CSV)
    return p


def write_json(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_label_csv_quoted_commas(label_csv: Path):
    classes, names = read_label_csv(label_csv)
    assert classes == ["/m/09x0r", "/m/05zppz", "/m/068hy", "/m/07q6cd_"]
    assert names[1] == "Male speech, man speaking" and names[2] == "Domestic animals, pets"


def test_label_csv_rows_in_any_order(tmp_path: Path):
    p = tmp_path / "labels.csv"
    p.write_text('index,mid,display_name\n1,b,"B"\n0,a,"A, a"\n')
    assert read_label_csv(p) == (["a", "b"], ["A, a", "B"])


def test_ast_json(tmp_path: Path, label_csv: Path):
    (tmp_path / "audio").mkdir()
    doc = {
        "data": [
            {"video_id": "abc", "wav": "audio/a.wav", "labels": "/m/068hy,/m/07q6cd_"},
            {"wav": str(tmp_path / "b.flac"), "labels": "/m/09x0r"},
        ]
    }
    m = read_ast_json(write_json(tmp_path / "train.json", doc), label_csv)
    assert m.entries[0] == Entry(tmp_path / "audio" / "a.wav", ("/m/068hy", "/m/07q6cd_"))
    assert m.entries[1].path == tmp_path / "b.flac"
    assert m.multilabel and m.classes[0] == "/m/09x0r" and len(m) == 2 and m.num_classes == 4
    assert m.source == str(tmp_path / "train.json")
    t = targets(m)
    assert t.dtype == torch.float32 and t.shape == (2, 4)
    assert t.tolist() == [[0, 0, 1, 1], [1, 0, 0, 0]]


def test_ast_json_single_label_and_flag(tmp_path: Path, label_csv: Path):
    doc = {"data": [{"wav": "a.wav", "labels": "/m/068hy"}]}
    path = write_json(tmp_path / "d.json", doc)
    assert not read_ast_json(path, label_csv).multilabel
    assert read_ast_json(path, label_csv, multilabel=True).multilabel


def test_relative_paths_prefer_the_manifests_folder_then_cwd(tmp_path: Path, label_csv: Path, monkeypatch):
    """A relative path that exists beside the manifest is that file, even when the working
    directory has a file of that name too; one that exists only from the working directory (AST's
    manifests) is that; one that exists nowhere is reported missing beside the manifest."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    sub = tmp_path / "manifests"
    (sub / "data").mkdir(parents=True)
    for folder in (work, sub):
        (folder / "data" / "both.wav").write_bytes(b"")
    (work / "data" / "here.wav").write_bytes(b"")
    doc = {"data": [{"wav": f"data/{name}.wav", "labels": "/m/09x0r"} for name in ("both", "here", "nowhere")]}
    path = write_json(sub / "m.json", doc)
    monkeypatch.chdir(work)
    m = read_ast_json(path, label_csv)
    assert [e.path for e in m.entries] == [sub / "data" / "both.wav", work / "data" / "here.wav",
                                           sub / "data" / "nowhere.wav"]
    assert all(e.path.is_absolute() for e in m.entries)


@pytest.mark.parametrize(
    "doc, expected",
    [
        ("{not json", "not valid JSON"),
        ({"items": []}, 'missing "data" key'),
        ([{"wav": "a.wav", "labels": "/m/09x0r"}], 'missing "data" key'),
        ({"data": {"wav": "a.wav"}}, '"data" must be a list'),
        ({"data": []}, "empty manifest"),
        ({"data": [{"labels": "/m/09x0r"}]}, 'entry 1: no "wav" key'),
        ({"data": [{"wav": "a.wav"}]}, 'entry 1: no "labels" key'),
        ({"data": [{"wav": "a.wav", "labels": " , "}]}, '"labels" is empty'),
        ({"data": [{"wav": "", "labels": "/m/09x0r"}]}, '"wav" must be a non-empty path'),
        ({"data": ["a.wav"]}, "entry 1: expected an object"),
        ({"data": [{"wav": "a.wav", "labels": 3}]}, '"labels" must be a string'),
    ],
)
def test_ast_json_malformed(tmp_path: Path, label_csv: Path, doc, expected: str):
    path = write_json(tmp_path / "bad.json", doc)
    with pytest.raises(ManifestError) as info:
        read_ast_json(path, label_csv)
    msg = str(info.value)
    assert str(path) in msg and expected in msg


def test_ast_json_bad_entries_set_aside_every_one(tmp_path: Path, label_csv: Path):
    """Unknown labels and malformed entries do not stop the reading: every one is set aside with
    its entry number, clip and problem; the good entries are kept."""
    doc = {"data": [
        {"wav": "a.wav", "labels": "/m/09x0r"},
        {"wav": "dog.wav", "labels": "/m/09x0r,/m/nope"},
        {"labels": "/m/09x0r"},
        {"wav": "b.wav", "labels": "/m/068hy"},
        {"wav": "empty.wav", "labels": ""},
        {"wav": "cat.wav", "labels": "/m/gone,/m/lost"},
    ]}
    path = write_json(tmp_path / "m.json", doc)
    m = read_ast_json(path, label_csv)
    assert [e.path.name for e in m.entries] == ["a.wav", "b.wav"]
    assert [(p.path.name, p.problem.split(":")[0]) for p in m.problems] == [
        ("dog.wav", "m.json entry 2"), ("m.json", "m.json entry 3"), ("empty.wav", "m.json entry 5"), ("cat.wav", "m.json entry 6")]
    assert "unknown label '/m/nope' (not a class in" in m.problems[0].problem and str(label_csv) in m.problems[0].problem
    assert 'no "wav" key' in m.problems[1].problem and '"labels" is empty' in m.problems[2].problem
    assert "unknown labels '/m/gone', '/m/lost'" in m.problems[3].problem
    assert m.problems[0].path == tmp_path / "dog.wav"  # the clip, as an audio problem names it


def test_ast_json_every_entry_bad_is_one_error_listing_them(tmp_path: Path, label_csv: Path):
    doc = {"data": [{"wav": "dog.wav", "labels": "/m/nope"}, {"wav": "cat.wav"}, {"wav": "owl.wav", "labels": "/m/who"}]}
    path = write_json(tmp_path / "m.json", doc)
    with pytest.raises(ManifestError) as info:
        read_ast_json(path, label_csv)
    msg = str(info.value)
    assert msg.startswith(f"{path}: no usable entries: all 3 are bad")
    assert "entry 1: unknown label '/m/nope'" in msg and 'entry 2: no "labels" key' in msg and "entry 3: unknown label '/m/who'" in msg
    assert "dog.wav" in msg and "owl.wav" in msg


def test_ast_json_display_name_hint(tmp_path: Path, label_csv: Path):
    path = write_json(tmp_path / "m.json", {"data": [{"wav": "a.wav", "labels": "Squeak"}]})
    with pytest.raises(ManifestError, match=r"display name of '/m/07q6cd_'"):
        read_ast_json(path, label_csv)


def test_long_list_of_bad_entries_is_capped(tmp_path: Path, label_csv: Path):
    rows = [{"wav": f"c{i}.wav", "labels": f"/m/bad{i}"} for i in range(LIST_LIMIT + 7)]
    with pytest.raises(ManifestError) as info:
        read_ast_json(write_json(tmp_path / "m.json", {"data": rows}), label_csv)
    lines = str(info.value).splitlines()
    assert len(lines) == 1 + LIST_LIMIT + 1 and lines[-1] == "  ... and 7 more"
    assert f"entry {LIST_LIMIT}:" in lines[-2]  # entries counted from 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("index,mid\n0,/m/a\n", "missing column(s) display_name"),
        ("", "missing column(s) index, mid, display_name"),
        ("index,mid,display_name\n", "no classes"),
        ('index,mid,display_name\n0,a,"A"\n0,b,"B"\n', "line 3: duplicate class index 0"),
        ('index,mid,display_name\n0,a,"A"\n1,a,"B"\n', "line 3: duplicate class id 'a'"),
        ('index,mid,display_name\nzero,a,"A"\n', "line 2: index 'zero' is not an integer"),
        ('index,mid,display_name\n0,a,"A"\n2,b,"B"\n', "no gaps"),
        ('index,mid,display_name\n0,a\n', "line 2: expected 3 fields"),
    ],
)
def test_label_csv_malformed(tmp_path: Path, text: str, expected: str):
    p = tmp_path / "labels.csv"
    p.write_text(text)
    with pytest.raises(ManifestError) as info:
        read_label_csv(p)
    assert str(p) in str(info.value) and expected in str(info.value)


def test_a_label_csv_without_a_header_is_quoted_as_written(tmp_path: Path):
    # the error quoted the line lower-cased and without its quotes: "found 0,/m/esc_chainsaw,chainsaw" (a new user's case)
    p = tmp_path / "labels.csv"
    p.write_text('0,/m/esc_chainsaw,"Chainsaw"\n1,/m/esc_dog,"Dog"\n')
    with pytest.raises(ManifestError) as info:
        read_label_csv(p)
    assert str(info.value) == (f"{p}: label CSV is missing column(s) index, mid, display_name; expected a header "
                               "'index,mid,display_name', found 0,/m/esc_chainsaw,\"Chainsaw\" (a first line of "
                               "classes: add the header line above it)")
    clips = tmp_path / "clips.csv"
    clips.write_text("Path,Class\nA.wav,dog\n")
    with pytest.raises(ManifestError, match="a 'label' or 'labels' column; found Path,Class$"):
        read_csv(clips)


def test_label_csv_missing_file(tmp_path: Path):
    with pytest.raises(ManifestError, match="file not found"):
        read_ast_json(write_json(tmp_path / "m.json", {"data": [{"wav": "a", "labels": "x"}]}), tmp_path / "nope.csv")


def test_csv_single_and_multi(tmp_path: Path, label_csv: Path):
    single = tmp_path / "single.csv"
    single.write_text("path,label\nclips/b.wav,dog\nclips/a.wav,cat\n/abs/c.wav,\"dog\"\n")
    m = read_csv(single)
    assert m.classes == ["cat", "dog"] and m.display_names == ["cat", "dog"] and not m.multilabel
    assert m.entries[0] == Entry(tmp_path / "clips" / "b.wav", ("dog",)) and m.entries[2].path == Path("/abs/c.wav")
    assert targets(m).argmax(1).tolist() == [1, 0, 1]

    multi = tmp_path / "multi.csv"
    multi.write_text('path,labels\na.wav,"/m/068hy, /m/07q6cd_"\nb.wav,/m/09x0r;/m/05zppz\nc.wav,/m/09x0r\n')
    m = read_csv(multi, label_csv)
    assert m.multilabel and m.classes[0] == "/m/09x0r" and m.display_names[1] == "Male speech, man speaking"
    assert m.entries[1].labels == ("/m/09x0r", "/m/05zppz")
    assert targets(m).sum(1).tolist() == [2, 2, 1]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("file,label\na.wav,x\n", "needs a 'path' column"),
        ("path,class\na.wav,x\n", "'label' or 'labels' column"),
        ("path,label\n", "empty manifest"),
        ("path,label\nb.wav,\n", "line 2: no label for b.wav"),
        ("path,labels\n,x\n", "line 2: empty path"),
    ],
)
def test_csv_malformed(tmp_path: Path, text: str, expected: str):
    p = tmp_path / "m.csv"
    p.write_text(text)
    with pytest.raises(ManifestError) as info:
        read_csv(p)
    assert str(p) in str(info.value) and expected in str(info.value)


def test_csv_bad_rows_set_aside_every_one(tmp_path: Path, label_csv: Path):
    p = tmp_path / "m.csv"
    p.write_text("path,label\na.wav,/m/09x0r\nmystery.wav,/m/unknown\nb.wav,\n,/m/09x0r\nc.wav,/m/068hy\nodd.wav,/m/odd\n")
    m = read_csv(p, label_csv)
    assert [e.path.name for e in m.entries] == ["a.wav", "c.wav"]
    assert [(q.path.name, q.problem.split(":")[0]) for q in m.problems] == [
        ("mystery.wav", "m.csv line 3"), ("b.wav", "m.csv line 4"), ("m.csv", "m.csv line 5"), ("odd.wav", "m.csv line 7")]
    assert "'/m/unknown'" in m.problems[0].problem and "no label for b.wav" in m.problems[1].problem
    assert "empty path" in m.problems[2].problem and "'/m/odd'" in m.problems[3].problem
    assert read_manifest(p, label_csv).problems == m.problems  # what a run calls


def test_align_classes_keeps_set_aside_rows(tmp_path: Path):
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("path,label\na.wav,dog\nb.wav,cat\n")
    val.write_text("path,label\nc.wav,dog\nd.wav,\n")
    aligned = align_classes(read_csv(train), read_csv(val))
    assert aligned.classes == ["cat", "dog"] and [e.path.name for e in aligned.entries] == ["c.wav"]
    assert [q.path.name for q in aligned.problems] == ["d.wav"] and "line 3: no label" in aligned.problems[0].problem


def test_csv_every_row_bad(tmp_path: Path, label_csv: Path):
    p = tmp_path / "m.csv"
    p.write_text("path,label\nmystery.wav,/m/unknown\nb.wav,\n")
    with pytest.raises(ManifestError) as info:
        read_csv(p, label_csv)
    msg = str(info.value)
    assert "no usable rows: all 2 are bad" in msg and "line 2: unknown label '/m/unknown'" in msg and "line 3: no label" in msg


def test_folder(tmp_path: Path):
    for rel in ["dog/b.WAV", "dog/a.wav", "dog/sub/c.flac", "cat/x.Ogg", "cat/y.mp3", "cat/notes.txt", "cat/.hidden.wav", "empty/readme.md", "loose.wav"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    m = read_folder(tmp_path)
    assert m.classes == ["cat", "dog"] and not m.multilabel
    assert [e.path.relative_to(tmp_path).as_posix() for e in m.entries] == ["cat/x.Ogg", "cat/y.mp3", "dog/a.wav", "dog/b.WAV", "dog/sub/c.flac"]
    assert [e.labels for e in m.entries] == [("cat",)] * 2 + [("dog",)] * 3


def test_folder_errors(tmp_path: Path):
    with pytest.raises(ManifestError, match="not a folder"):
        read_folder(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    with pytest.raises(ManifestError, match="empty manifest"):
        read_folder(tmp_path)


def test_read_manifest_dispatch(tmp_path: Path, label_csv: Path):
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "a.wav").write_bytes(b"")
    assert read_manifest(tmp_path).classes == ["dog"]
    js = write_json(tmp_path / "m.json", {"data": [{"wav": "a.wav", "labels": "/m/09x0r"}]})
    assert read_manifest(js).classes[0] == "/m/09x0r"  # label CSV found next to the JSON
    assert read_manifest(str(js), label_csv).num_classes == 4
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,label\na.wav,dog\n")
    m = read_manifest(csv_path)
    assert m.classes == ["dog"] and read_manifest(m) is m
    label_csv.unlink()
    with pytest.raises(ManifestError, match="needs its label CSV"):
        read_manifest(js)
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(tmp_path / "nope.json")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match="unknown manifest type"):
        read_manifest(tmp_path / "m.txt")


def test_targets_unknown_label():
    m = Manifest([Entry(Path("a.wav"), ("x",))], ["y"], ["y"], False, "test")
    with pytest.raises(ManifestError, match="'x'"):
        targets(m)


def test_fsdd_names(tmp_path: Path):
    rec = tmp_path / "recordings"
    rec.mkdir()
    for name in ["3_theo_4.wav", "3_theo_5.wav", "0_alice_12.wav", "0_alice_0.wav", "notes.wav"]:
        (rec / name).write_bytes(b"")
    train = fsdd_manifest(tmp_path, "digits", "train")
    assert [e.path.name for e in train.entries] == ["0_alice_12.wav", "3_theo_5.wav"]
    assert [e.labels for e in train.entries] == [("0",), ("3",)] and train.classes == [str(d) for d in range(10)]
    test = fsdd_manifest(rec, "speakers", "test")
    assert [e.path.name for e in test.entries] == ["0_alice_0.wav", "3_theo_4.wav"]
    assert test.classes == ["alice", "theo"] and test.entries[1].labels == ("theo",)
    with pytest.raises(ValueError):
        fsdd_manifest(tmp_path, "words", "train")


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_real():
    train, test = fsdd_manifest(FSDD, "digits", "train"), fsdd_manifest(FSDD, "digits", "test")
    assert len(train) == 2700 and len(test) == 300 and train.classes == [str(d) for d in range(10)]
    assert not {e.path for e in train.entries} & {e.path for e in test.entries}
    assert targets(test).sum(0).tolist() == [30.0] * 10
    speakers = fsdd_manifest(FSDD, "speakers", "train")
    assert speakers.classes == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    assert targets(speakers).sum(0).tolist() == [450.0] * 6


def test_a_clip_list_is_known_by_its_clips_wherever_they_lie():
    from coarse2fine.data.manifest import clip_list_digest

    here = [Entry(Path("/data/esc/audio/1-100.wav"), ("dog",)), Entry(Path("/data/esc/audio/sub/2-7.wav"), ("cat", "pet"))]
    moved = [Entry(Path("/mnt/ssd/esc/audio/sub/2-7.wav"), ("pet", "cat")), Entry(Path("/mnt/ssd/esc/audio/1-100.wav"), ("dog",))]
    assert clip_list_digest(here) == clip_list_digest(moved)  # another root, another order
    relabelled = [here[0], Entry(here[1].path, ("cat",))]
    renamed = [here[0], Entry(Path("/data/esc/audio/sub/2-8.wav"), here[1].labels)]
    windowed = [here[0], Entry(here[1].path, here[1].labels, start=10.0)]
    digests = {clip_list_digest(x) for x in (here, relabelled, renamed, windowed, here[:1])}
    assert len(digests) == 5
    # In order (what a run's batches draw from): the moved copy lists them the other way round.
    assert clip_list_digest(here, ordered=True) != clip_list_digest(moved, ordered=True)
    assert clip_list_digest(here, ordered=True) == clip_list_digest(moved[::-1], ordered=True)


def test_a_clip_listed_twice_and_classes_that_differ_in_case_are_warned_of(tmp_path: Path, capsys):
    # A spreadsheet's duplicate rows, one clip with two labels under ce, and "Dog" beside "dog" trained
    # as listed without a word (a new user's case).
    rows = ["path,label", "a.wav,dog", "b.wav,rain", "a.wav,rain", "b.wav,rain", "c.wav,Dog", "d.wav,dog"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    listed = read_csv(tmp_path / "t.csv")
    assert listing_warnings(listed) == [
        f"{tmp_path / 't.csv'}: 2 clip(s) listed more than once, each trained as often as listed; 1 with other labels "
        "(e.g. a.wav, with other labels: dog at t.csv line 2, rain at t.csv line 4)",
        f"{tmp_path / 't.csv'}: classes that differ only in case are separate classes: Dog and dog"]
    assert listing_warnings(listed, classes=False) == [listing_warnings(listed)[0].replace("trained", "scored")]
    (tmp_path / "v.csv").write_text("path,label\nx.wav,dog\ny.wav,rain\n")
    assert listing_warnings(read_csv(tmp_path / "v.csv")) == []


def test_a_start_column_or_key_makes_windows_of_a_long_file_and_other_columns_are_named(tmp_path: Path, label_csv: Path):
    """A new user's case: a `start` column (windows of long speaker recordings) and `"start"`/`"end"` keys
    were dropped without a word: every window trained on the file's first seconds."""
    (tmp_path / "t.csv").write_text("path,label,start,speaker\na.flac,dog,0,x\na.flac,dog,4,x\na.flac,dog,8.5,x\n"
                                    "b.flac,dog,,y\nc.flac,dog,-1,y\nd.flac,dog,soon,y\n")
    m = read_csv(tmp_path / "t.csv")
    assert [e.start for e in m.entries] == [0.0, 4.0, 8.5, 0.0]
    assert [p.problem for p in m.problems] == ["t.csv line 6: start must be a number of seconds >= 0, found '-1'",
                                               "t.csv line 7: start must be a number of seconds, found 'soon'"]
    assert listing_warnings(m) == [f"{tmp_path / 't.csv'}: column(s) speaker not read (a CSV manifest reads path, "
                                   "label or labels, and start (seconds into the file; empty or 0: its beginning); "
                                   "each clip is data.clip_seconds long)"]  # three windows of a.flac: three clips
    doc = {"data": [{"video_id": "v", "wav": "a.wav", "labels": "/m/068hy", "start": 2.5, "end": 6.5},
                    {"wav": "a.wav", "labels": "/m/068hy", "start": "7"}, {"wav": "a.wav", "labels": "/m/068hy"},
                    {"wav": "b.wav", "labels": "/m/068hy", "start": True}]}
    j = read_ast_json(write_json(tmp_path / "t.json", doc), label_csv)
    assert [e.start for e in j.entries] == [2.5, 7.0, 0.0]
    assert j.problems[0].problem == 't.json entry 4: "start" must be a number of seconds, found True'
    assert listing_warnings(j) == [f"{tmp_path / 't.json'}: key(s) end not read (a JSON manifest reads \"wav\", "
                                   '"labels" and "start" (seconds into the file; 0 when not given); each clip is '
                                   "data.clip_seconds long)"]  # AST's video_id is read (it names the clip): not said


def test_a_validation_label_off_by_a_typo_or_a_case_gets_a_guess(tmp_path: Path, label_csv: Path):
    # `spk1O88` (a letter O) and `SPK118` in validation only were "not in the training set", with no guess.
    (tmp_path / "t.csv").write_text("path,label\na.wav,spk1088\nb.wav,spk118\n")
    (tmp_path / "v.csv").write_text("path,label\nc.wav,spk1O88\nd.wav,SPK118\ne.wav,emu\nf.wav,Spk10888\n")
    val = align_classes(read_csv(tmp_path / "t.csv"), read_csv(tmp_path / "v.csv"))
    words = [p.problem.split(" not in ")[0] for p in val.problems]
    assert words == ["v.csv line 2: label(s) spk1O88 (spk1088?)", "v.csv line 3: label(s) SPK118 (spk118? classes "
                     "differ in case)", "v.csv line 4: label(s) emu", "v.csv line 5: label(s) Spk10888 (spk1088?)"]
    with_csv = read_ast_json(write_json(tmp_path / "c.json", {"data": [{"wav": "a.wav", "labels": "/M/068HY"},
                                                                      {"wav": "b.wav", "labels": "/m/09x0r"}]}), label_csv)
    assert with_csv.problems[0].problem.endswith("'/M/068HY' (/m/068hy? classes differ in case)")
    doc = {"data": [{"wav": "a.wav", "label": "/m/068hy"}, {"path": "b.wav", "labels": "/m/068hy"},
                    {"wav": "c.wav", "labels": "/m/068hy"}]}
    m = read_ast_json(write_json(tmp_path / "t.json", doc), label_csv)
    assert [p.problem for p in m.problems] == [
        't.json entry 1: no "labels" key (keys: label, wav); AST\'s manifests call "label" "labels"',
        't.json entry 2: no "wav" key (keys: labels, path); AST\'s manifests call "path" "wav"']


def test_a_relative_path_with_windows_separators_is_found(tmp_path: Path):
    # A manifest written on Windows (audio\\batch 1\\x.wav) gave "file not found" for every row.
    (tmp_path / "audio" / "batch 1").mkdir(parents=True)
    (tmp_path / "audio" / "batch 1" / "x.wav").write_bytes(b"")
    (tmp_path / "t.csv").write_text("path,label\naudio\\batch 1\\x.wav,dog\naudio\\gone.wav,dog\n")
    entries = read_csv(tmp_path / "t.csv").entries
    assert entries[0].path == tmp_path / "audio" / "batch 1" / "x.wav" and entries[0].looked_in == ()
    assert entries[1].looked_in  # not there either way: reported as written
