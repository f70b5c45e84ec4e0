"""Multi-process training with torch.distributed, as launched by ``torchrun``.

``torchrun --nproc_per_node N -m coarse2fine.cli train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
:func:`setup` then joins the process group (NCCL on GPUs, gloo on CPU) and picks the device.
Without those variables everything runs in one process and these helpers are no-ops.
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from coarse2fine.runtime import resolve_device


@dataclass(frozen=True)
class Dist:
    """This process's place: rank, world size, and the device it trains on."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Only the main process writes logs, checkpoints and progress bars."""
        return self.rank == 0


def main_process() -> bool:
    """Whether this is the process that writes (rank 0), before :func:`setup` joins the group."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_name: str) -> Dist:
    """Join the torchrun process group if there is one; returns rank, world size and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, resolve_device(device_name))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if resolve_device(device_name).type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = resolve_device(device_name)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(leave)
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def leave(wait: bool = False) -> None:
    """Leave the process group (run at exit by :func:`setup`): a process that exits still in it
    can abort while the interpreter shuts down (gloo's threads: "terminate called without an
    active exception", exit code -6), which torchrun reports as a failed run. ``wait``: first wait
    for every process to get here (a command that ended the same way in all of them), so that no
    process tears its connections down while another still uses them."""
    if dist.is_initialized():
        gc.collect()  # DDP wrappers left in reference cycles release their hold on the group now, not at exit
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if d.world == 1:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, d: Dist) -> Any:
    """The main process's ``obj`` in every process (a collective: every process must call it), so
    that a decision taken from per-process values (a clock, a partial sum) is one decision;
    ``obj`` itself in a single process."""
    return gather(obj, d)[0]  # an all-gather: gloo's broadcast_object_list as the last collective could abort at exit


def gather_tensor(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Every process's tensor ``t`` (same shape and dtype in each), stacked in rank order: shape
    ``[world, *t.shape]`` (a collective; ``t[None]`` in a single process)."""
    if d.world == 1:
        return t.unsqueeze(0)
    out = [torch.empty_like(t) for _ in range(d.world)]
    dist.all_gather(out, t.contiguous())
    return torch.stack(out)


def agree_any(flag: bool, d: Dist) -> bool:
    """Whether ``flag`` is set in any process (a collective: every process must call it)."""
    if d.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(d: Dist) -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if d.world > 1:
        dist.barrier()
