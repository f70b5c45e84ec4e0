"""One writer per output folder: a second process is refused at once, and a killed one leaves no lock."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from coarse2fine.cli import main
from coarse2fine.folder_lock import LOCK_NAME, FolderInUseError, folder_lock

TINY = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.threads=1", "train.epochs=1",
        "train.optim.warmup_steps=1", "c2f.schedule=4-1", "c2f.phase_epochs=[1, 1]"]


def _train_args(out, *settings):
    return ["train", "demo", "--out", str(out), "--quiet", *[a for s in (*TINY, *settings) for a in ("--set", s)]]


def _holder(path, timeout=60.0):
    """The pid written in ``path``'s lock file, once a process has written it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return json.loads((path / LOCK_NAME).read_text())["pid"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.01)
    raise AssertionError(f"no process took {path}'s lock in {timeout} s")


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from coarse2fine.folder_lock import folder_lock
        with folder_lock({str(out)!r}):
            time.sleep(600)
        """)])
    try:
        assert _holder(out) == holder.pid
        writing = out / ".log.json.abcd1234.tmp"  # the holder's write under way, as far as anyone can tell
        writing.write_text("{")
        assert main(_train_args(out)) == 2
        err = capsys.readouterr().err
        assert f"{out} is in use by process {holder.pid}" in err and "another output folder" in err
        assert not (out / "log.json").exists()  # refused before anything was written
        assert writing.exists()  # not the refused process's to remove
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(_train_args(out)) == 0  # the kill released it: nothing to clear by hand
    assert json.loads((out / "log.json").read_text())["done"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_does_not_keep_a_killed_writers_folder_locked(tmp_path):
    # DataLoader workers are forked while the run holds its folder's lock; after a kill -9 of the
    # run they live on for a few seconds, and must not refuse the command that resumes it.
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time
        from coarse2fine.folder_lock import folder_lock
        with folder_lock({str(out)!r}):
            if os.fork() == 0:  # a worker that outlives its parent
                time.sleep(30)
                os._exit(0)
            print("forked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "forked"
        with pytest.raises(FolderInUseError):
            with folder_lock(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with folder_lock(out):  # the forked child still runs, and does not hold the lock
        pass


def test_a_training_process_holds_its_folder_while_it_trains(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", *_train_args(out, "train.epochs=3",
                                                                                    "c2f.phase_epochs=[2, 3]")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _holder(out) == proc.pid
        with pytest.raises(FolderInUseError, match=f"process {proc.pid} on .*writing a run there"):
            with folder_lock(out):
                pass
    finally:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    with folder_lock(out):  # free again once it ended
        pass


def test_pack_is_refused_while_its_folder_is_locked_and_runs_beside_the_lock_file(audio_set, tmp_path):
    pytest.importorskip("webdataset")
    from coarse2fine.config import load_config
    from coarse2fine.data.pack import pack

    cfg, out = load_config(audio_set.files_config), tmp_path / "shards"
    with folder_lock(out):  # a run holds it: the error says what the holder writes (it said "a pack")
        with pytest.raises(FolderInUseError, match="which is writing a run there"):
            pack(cfg, out, progress=False)
    with folder_lock(out, "pack"):
        with pytest.raises(FolderInUseError, match="which is writing a pack there"):
            pack(cfg, out, progress=False)
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # nothing written; the lock file is not "content"
    results = pack(cfg, out, progress=False)
    assert [r.name for r in results] == ["train", "val"] and (out / "pack.json").exists()


def test_a_file_system_that_cannot_lock_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    # Some cluster mounts answer flock with ENOLCK; no such mount exists here, so flock answers
    # as one would. The run must go on (saying the folder is not protected), not fail.
    import errno

    import coarse2fine.folder_lock as folder_lock_module

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(folder_lock_module.fcntl, "flock", no_locks)
    left = tmp_path / "run" / ".checkpoint.safetensors.abcd1234.tmp"
    left.parent.mkdir()
    left.write_text("x")
    with caplog.at_level("WARNING"), folder_lock(tmp_path / "run"):
        entered = True
    assert entered and "cannot lock files (No locks available)" in caplog.text
    assert left.exists()  # unlocked, another process may be writing it: kept


def test_taking_the_lock_removes_the_temp_files_of_killed_writes_and_nothing_else(tmp_path, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = [folder / ".checkpoint.safetensors.pe1c481c.tmp", folder / ".log.json.x_9abc12.tmp"]
    keep = [folder / "checkpoint.safetensors", folder / ".notes.tmp", folder / "sub" / ".log.json.abcd1234.tmp"]
    for path in (*stale, *keep):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 2_700_000)
    with caplog.at_level("INFO", logger="coarse2fine"), folder_lock(folder):
        assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert ".checkpoint.safetensors.pe1c481c.tmp (2.7 MB), left by a write that was killed" in caplog.text


def test_a_failed_start_leaves_no_folder_it_created_and_keeps_one_it_did_not(tmp_path, monkeypatch, capsys):
    """A new user's case: `train vggsound-cpu --out runs/b6p` with the preset's placeholder manifest failed
    and left runs/b6p holding only the lock file."""
    from coarse2fine.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "audioset-cpu", "--out", "runs/new"]) == 2
    assert "data.train:" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nor the parent it made for it (it was left behind, empty)
    (tmp_path / "runs" / "mine").mkdir(parents=True)  # the user's own folder: failed in, kept as it was
    assert main(["train", "audioset-cpu", "--out", "runs/mine"]) == 2
    assert (tmp_path / "runs" / "mine").is_dir() and not list((tmp_path / "runs" / "mine").iterdir())
    assert main(["train", "audioset-cpu", "--out", "runs/mine/a/b"]) == 2  # below a folder of the user's: that stays
    assert (tmp_path / "runs" / "mine").is_dir() and not list((tmp_path / "runs" / "mine").iterdir())
