import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from coarse2fine import atomic


def test_writes_and_leaves_no_temp_files(tmp_path):
    atomic.write_json(tmp_path / "a" / "log.json", {"x": 1})
    atomic.save_safetensors(tmp_path / "w.safetensors", {"w": torch.arange(6.0).view(2, 3).t()})
    assert json.loads((tmp_path / "a" / "log.json").read_text()) == {"x": 1}
    assert torch.equal(load_file(tmp_path / "w.safetensors")["w"], torch.arange(6.0).view(2, 3).t())
    assert sorted(os.listdir(tmp_path)) == ["a", "w.safetensors"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "log.json"
    atomic.write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["log.json"]


def test_a_write_killed_mid_way_leaves_a_temp_file_that_the_cleanup_finds_and_only_it(tmp_path):
    # A process killed (SIGKILL) inside an atomic write: its temporary file stays, the destination
    # keeps its old content.
    target = tmp_path / "checkpoint.safetensors"
    atomic.write_text(target, "old")
    code = textwrap.dedent(f"""
        import os, signal
        from coarse2fine import atomic
        with atomic.atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"x" * 100_000)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL and target.read_text() == "old"
    stale = atomic.stale_temp_files(tmp_path)
    assert len(stale) == 1 and stale[0].name.startswith(".checkpoint.safetensors.") and stale[0].stat().st_size == 100_000
    # What is not one of atomic_path's temporary files stays: other hidden files, other .tmp files,
    # and files in subfolders (another folder, maybe another writer's).
    keep = [tmp_path / ".notes.tmp", tmp_path / "data.tmp", tmp_path / ".log.json.abcdefgh.tmp.bak",
            tmp_path / ".coarse2fine.lock", tmp_path / "sub" / ".log.json.abcdefgh.tmp"]
    for path in keep:
        path.parent.mkdir(exist_ok=True)
        path.write_text("keep")
    assert atomic.stale_temp_files(tmp_path) == stale
    assert atomic.remove_stale_temp_files(tmp_path) == stale
    assert not stale[0].exists() and all(p.exists() for p in keep) and target.read_text() == "old"
    assert atomic.remove_stale_temp_files(tmp_path / "missing") == []


def test_the_temp_name_pattern_matches_what_atomic_path_writes(tmp_path):
    # The cleanup knows atomic_path's temporary files by name: the two must agree.
    for name in ("log.json", "model.safetensors", ".hidden", "a.b.c"):
        with atomic.atomic_path(tmp_path / name) as tmp:
            assert atomic.TEMP_NAME.fullmatch(tmp.name) and atomic.stale_temp_files(tmp_path) == [tmp]
            tmp.write_text("x")
    assert atomic.stale_temp_files(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_permissions_a_plain_write_gives(tmp_path, umask):
    # mkstemp makes its file 0o600; a run folder's logs, weights and tables shared with a group or
    # read by other accounts must get what the user's umask says, as a plain open() would.
    old = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "log.json", "{}")
        atomic.save_safetensors(tmp_path / "model.safetensors", {"w": torch.zeros(2)})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"log.json": 0o666 & ~umask, "model.safetensors": 0o666 & ~umask, "plain.txt": 0o666 & ~umask}
