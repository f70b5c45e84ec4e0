"""Weight averaging of checkpoints (AST's AudioSet recipe: average epochs wa_start..wa_end).

Floating-point (and complex) entries are averaged elementwise, accumulated in float64
(complex128) and cast back to their dtype; integer and boolean entries (counters such as
``num_batches_tracked``) and non-tensor entries are taken from the last state dict.
:class:`WeightAverager` keeps only a running sum, so the training loop need not hold every
checkpoint; :func:`average_state_dicts` is the same computation over a list and gives
bit-identical results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["WeightAverager", "average_state_dicts"]


def _averaged(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())


class WeightAverager:
    """Streaming mean of the state dicts of epochs ``start..end`` (1-based, inclusive).

    Call :meth:`update` once per epoch of the final phase, in order; epochs outside
    ``[start, end]`` (``end=None``: no upper bound) are skipped. Pass ``epoch`` explicitly
    when resuming mid-phase. Sums live on ``device`` (default: each tensor's own device);
    a float64 sum costs twice the memory of a float32 model, so pass ``device="cpu"`` to
    keep it off the accelerator.
    """

    def __init__(self, start: int = 1, end: int | None = None, device: torch.device | str | None = None) -> None:
        if start < 1 or (end is not None and end < start):
            raise ValueError(f"averaging window must satisfy 1 <= start <= end, got start={start}, end={end}")
        self.start = start
        self.end = end
        self.device = None if device is None else torch.device(device)
        self.epoch = 0
        self._count = 0
        self._sums: dict[str, Any] = {}
        self._meta: dict[str, tuple[torch.Size, torch.dtype] | None] = {}

    @property
    def count(self) -> int:
        """Number of state dicts accumulated so far."""
        return self._count

    def in_window(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) is averaged."""
        return epoch >= self.start and (self.end is None or epoch <= self.end)

    def _check(self, state_dict: Mapping[str, Any]) -> None:
        missing = [k for k in self._meta if k not in state_dict]
        extra = [k for k in state_dict if k not in self._meta]
        if missing or extra:
            raise ValueError(
                f"state dict keys disagree: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
            )
        for k, meta in self._meta.items():
            v = state_dict[k]
            if meta is None:
                if isinstance(v, torch.Tensor):
                    raise ValueError(f"state dict entry {k!r} is a tensor here but not in the first state dict")
                continue
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"state dict entry {k!r} is not a tensor here but is in the first state dict")
            shape, dtype = meta
            if v.shape != shape:
                raise ValueError(f"shape mismatch for {k!r}: {tuple(v.shape)} vs {tuple(shape)}")
            if v.dtype != dtype:
                raise ValueError(f"dtype mismatch for {k!r}: {v.dtype} vs {dtype}")

    def update(self, state_dict: Mapping[str, Any], epoch: int | None = None) -> bool:
        """Add one epoch's state dict if its epoch is in the window; returns whether it was.

        ``epoch`` defaults to the previous epoch + 1 (the first call is epoch 1). The
        tensors are copied, so the caller may keep training the model afterwards.
        """
        self.epoch = self.epoch + 1 if epoch is None else int(epoch)
        if not self.in_window(self.epoch):
            return False
        if self._count == 0:
            self._meta = {
                k: (v.shape, v.dtype) if isinstance(v, torch.Tensor) else None for k, v in state_dict.items()
            }
        else:
            self._check(state_dict)
        for k, v in state_dict.items():
            if _averaged(v):
                wide = torch.complex128 if v.is_complex() else torch.float64
                if self._count == 0:  # copy: the model may be updated in place afterwards
                    self._sums[k] = v.detach().to(device=self.device or v.device, dtype=wide, copy=True)
                else:
                    self._sums[k].add_(v.detach().to(device=self._sums[k].device, dtype=wide))
            elif isinstance(v, torch.Tensor):
                self._sums[k] = v.detach().to(device=self.device or v.device, copy=True)
            else:
                self._sums[k] = v
        self._count += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue averaging (for a checkpoint's ``averager`` section)."""
        meta = {k: None if m is None else [list(m[0]), str(m[1]).removeprefix("torch.")] for k, m in self._meta.items()}
        sums = {k: v for k, v in self._sums.items() if isinstance(v, torch.Tensor)}
        return {"epoch": self.epoch, "count": self._count, "sums": sums, "meta": meta}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output."""
        self.epoch, self._count = int(state["epoch"]), int(state["count"])
        self._sums = {k: v.to(self.device) if self.device is not None else v for k, v in state["sums"].items()}
        self._meta = {k: None if m is None else (torch.Size(m[0]), getattr(torch, m[1])) for k, m in state["meta"].items()}

    def average(self) -> dict[str, Any]:
        """The mean state dict so far (floating entries cast back to their dtype)."""
        if self._count == 0:
            raise ValueError(
                f"no state dict was averaged (window {self.start}..{self.end}, last epoch {self.epoch})"
            )
        out: dict[str, Any] = {}
        for k, meta in self._meta.items():
            s = self._sums[k]
            out[k] = (s / self._count).to(meta[1]) if meta is not None and _averaged(s) else s
        return out


def average_state_dicts(state_dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Elementwise mean of ``state_dicts`` (float64 accumulation, cast back per entry).

    Integer/boolean tensors and non-tensor entries come from the last state dict. Raises
    ``ValueError`` naming the offending key when keys, shapes or dtypes disagree, and when
    the sequence is empty.
    """
    if len(state_dicts) == 0:
        raise ValueError("average_state_dicts needs at least one state dict")
    averager = WeightAverager()
    for sd in state_dicts:
        averager.update(sd)
    return averager.average()
