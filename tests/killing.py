"""Helpers for the tests that kill a training process and resume it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from coarse2fine.training.checkpoint import load_checkpoint


def kill_after_checkpoint(argv: Sequence[str], out: Path, phase: int, step: int = 1, timeout: float = 120) -> None:
    """Run ``coarse2fine argv`` in a subprocess and SIGKILL it as soon as ``out`` holds a
    checkpoint written at ``step`` or later of phase ``phase`` (0-based)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, deadline = Path(out) / "checkpoint.safetensors", time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            st = load_checkpoint(ckpt)["progress"] if ckpt.exists() else None
        except ValueError:  # caught mid-write
            st = None
        if st and st["phase"] == phase and st["step"] >= step:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
