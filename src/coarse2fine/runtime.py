"""The machine a run is on: which devices this torch can use, the load average, a GPU's peak.

:func:`check_device` says in one line why a device name cannot be used here (``cuda`` on a torch
built without CUDA, ``cuda:3`` on a machine with two GPUs, ``mps`` off Apple silicon), naming
what is available; :func:`resolve_device` turns a checked name into a ``torch.device`` (``auto``:
CUDA when this torch has a GPU, else Apple's MPS, else the CPU). :func:`load_average` is read
beside every time figure and :func:`machine_name` says what the time was measured on (two runs
timed on different CPUs or GPUs do not compare in time); :func:`peak_tflops` is the dense matrix
peak of known GPUs, for MFU.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

import torch

# Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets, by the name
# torch reports. bf16/fp16 apply to autocast training; tf32 to float32 matmuls on tensor cores.
# Matched by the longest name contained in torch.cuda.get_device_name().
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "A10G": {"bf16": 70.0, "fp16": 70.0, "tf32": 35.0, "fp32": 31.2},
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "V100": {"fp16": 125.0, "fp32": 15.7},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
}


def available_devices() -> list[str]:
    """The device names this torch can train on here."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def check_device(name: str, key: str = "train.device") -> None:
    """``ValueError`` in one line naming ``key``, what was asked and what is available, unless
    device ``name`` (auto, cpu, cuda, cuda:N, mps) can be used by this torch on this machine."""
    if name in ("auto", "cpu"):
        return
    have = available_devices()
    if name in have:
        return
    head, _, index = name.partition(":")
    if head == "cuda" and not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) was built without CUDA" if torch.version.cuda is None
               else "no CUDA device is visible")
    elif head == "cuda" and index.isdigit():
        why = f"this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
    elif head == "mps":
        why = "Apple's MPS backend is not available here"
    else:
        why = "it is not a device name (auto, cpu, cuda, cuda:N, mps)"
    raise ValueError(f"{key}: {name!r} cannot be used: {why}; available: {', '.join(['auto', *have])}")


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """The ``torch.device`` of a device name, checked with :func:`check_device`."""
    check_device(name, key)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    return torch.device(name)


def load_average() -> tuple[float, float, float] | None:
    """The machine's 1, 5 and 15 minute load averages (2 decimals), or None where there are none."""
    try:
        return tuple(round(v, 2) for v in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU in words: its model name, its family and model numbers where Linux gives them (VMs
    often show only ``AMD EPYC``) and the vector instructions torch's kernels use on it, e.g.
    ``AMD EPYC (family 25 model 1, AVX2)``."""
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                if fields:
                    break  # the first processor's block is enough
                continue
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"family {fields['cpu family']} model {fields['model']}")
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if capability is not None:
        details.append(capability())
    return f"{name} ({', '.join(details)})" if details else name


def device_name(device: torch.device) -> str:
    """What the device is, in words: the GPU's name, or the CPU's (:func:`cpu_name`) with the
    threads torch uses on it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    threads = torch.get_num_threads()
    return f"{cpu_name()}, {threads} thread{'s' if threads > 1 else ''}"


def machine_name(device: torch.device, processes: int = 1) -> str:
    """What a run's time was measured on: :func:`device_name`, and the processes that shared the
    work when there were several (torchrun)."""
    name = device_name(device)
    return f"{name}, {processes} processes" if processes > 1 else name


def machine_fields(device: torch.device, processes: int = 1) -> dict[str, Any]:
    """The fields of an epoch's record that say where it was timed and how busy the machine was at
    its end: ``machine`` (:func:`machine_name`) and the 1-minute ``load_avg`` (None where the
    system has none)."""
    load = load_average()
    return {"machine": machine_name(device, processes), "load_avg": load[0] if load else None}


def peak_tflops(device: torch.device, amp: str = "none", given: float = 0.0) -> float | None:
    """The device's dense peak in TFLOP/s for training at precision ``amp`` (none, bf16, fp16):
    ``given`` when positive, else the data-sheet figure of a known GPU (float32 matmuls counted
    at the TF32 peak when torch allows TF32, else the float32 one), else None (CPUs, unknown cards)."""
    if given > 0:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    matches = [k for k in GPU_PEAKS if k in name]
    if not matches:
        return None
    peaks = GPU_PEAKS[max(matches, key=len)]
    if amp != "none":
        return peaks.get(amp)
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return peaks.get("tf32" if tf32 and "tf32" in peaks else "fp32")
