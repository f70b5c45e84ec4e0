"""Clip labels without a dense matrix, and AST's balanced-sampling weights.

A set of ``N`` clips over ``C`` classes is usually held as multi-hot targets [N, C] float32; for
AudioSet (2 million clips, 527 classes) that is 3.9 GiB, although a clip carries 2.7 labels on
average. :class:`LabelIndex` holds the same labels in compressed sparse rows (``indptr`` [N + 1],
``indices`` [nnz]: clip ``i`` carries classes ``indices[indptr[i]:indptr[i + 1]]``, about 20 MB
for AudioSet) and makes dense targets only for the rows a batch needs.

Balanced sampling (AST's AudioSet recipe): each label gets the weight ``1000 / (count + 0.01)``
where ``count`` is the number of clips carrying it; a clip's weight is the sum of its labels'
weights. :func:`balanced_weights` computes it from dense targets, :meth:`LabelIndex.balanced_weights`
from the sparse rows, with the same label weights (:func:`label_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def label_weights(counts: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Per-label weight ``1000 / (count + 0.01)`` (float64) from per-label clip counts."""
    return 1000.0 / (torch.as_tensor(counts, dtype=torch.float64) + 0.01)


def balanced_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-clip sampling weights [N] (float64) from targets [N, C].

    A clip carries label ``c`` when ``targets[i, c] > 0`` (multi-hot or soft targets both
    work; only presence counts, as in AST's label strings). Label weight:
    ``1000 / (count_c + 0.01)``; clip weight: the sum over its labels. A clip with no
    label gets weight 0 and is never drawn.
    """
    if targets.dim() != 2:
        raise ValueError(f"expected targets [N, C], got shape {tuple(targets.shape)}")
    present = (targets > 0).to(torch.float64)
    return present @ label_weights(present.sum(dim=0))


@dataclass(frozen=True)
class LabelIndex:
    """The labels of ``N`` clips over ``num_classes`` classes as compressed sparse rows (see the
    module docstring). ``indptr`` is int64 [N + 1], ``indices`` an integer array [nnz]."""

    indptr: np.ndarray
    indices: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0:
            raise ValueError("label index: indptr must be a 1-D array starting at 0")
        if int(self.indptr[-1]) != len(self.indices):
            raise ValueError(f"label index: indptr ends at {int(self.indptr[-1])} but there are {len(self.indices)} labels")
        if len(self.indices) and (int(self.indices.min()) < 0 or int(self.indices.max()) >= self.num_classes):
            raise ValueError(f"label index: class indices must lie in 0..{self.num_classes - 1}")

    @classmethod
    def from_lists(cls, labels: list[list[int]], num_classes: int) -> LabelIndex:
        """From one list of class indices per clip."""
        indptr = np.zeros(len(labels) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in labels], out=indptr[1:])
        indices = np.fromiter((c for row in labels for c in row), dtype=index_dtype(num_classes), count=int(indptr[-1]))
        return cls(indptr, indices, num_classes)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> np.ndarray:
        """The classes clip ``i`` carries."""
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def dense(self, rows: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """Multi-hot targets [len(rows), num_classes] (float32) of the clips ``rows``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        counts = ends - starts
        out = torch.zeros(len(rows), self.num_classes, dtype=torch.float32)
        if counts.sum() == 0:
            return out
        which = np.repeat(np.arange(len(rows)), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = self.indices[np.repeat(starts, counts) + offsets].astype(np.int64)
        out[torch.from_numpy(which), torch.from_numpy(cols)] = 1.0
        return out

    def counts(self) -> np.ndarray:
        """Clips per class [num_classes] (int64)."""
        return np.bincount(self.indices.astype(np.int64), minlength=self.num_classes).astype(np.int64)

    def balanced_weights(self) -> torch.Tensor:
        """Per-clip sampling weights [N] (float64), as :func:`balanced_weights` of the dense
        targets gives them (equal up to the order of summation)."""
        per_label = label_weights(self.counts()).numpy()
        values = per_label[self.indices.astype(np.int64)]
        out = np.zeros(len(self), dtype=np.float64)
        labelled = np.flatnonzero(np.diff(self.indptr) > 0)  # reduceat gives a value, not 0, for empty rows
        if len(labelled):
            out[labelled] = np.add.reduceat(values, self.indptr[labelled])
        return torch.from_numpy(out)


def index_dtype(num_classes: int) -> np.dtype:
    """The smallest integer type that holds class indices ``0..num_classes - 1``."""
    return np.dtype(np.int16) if num_classes <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)
