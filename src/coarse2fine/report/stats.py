"""The statistics of repeated runs (seeds, folds): mean, sample standard deviation, paired
differences and a percentile bootstrap interval. Pure functions of lists of numbers.

* :func:`sample_std` is the sample standard deviation (``ddof = 1``: the sum of squared
  deviations divided by n - 1), NaN for fewer than two values.
* :func:`paired_differences` pairs by position: the k-th value of a setting against the k-th of
  its reference (the same seed, or the same fold).
* :func:`bootstrap_interval` is the percentile bootstrap interval of the mean: the values are
  resampled with replacement ``resamples`` times by a generator seeded with ``seed`` (the same
  interval on every call), and the interval runs from the ``(1 - level) / 2`` to the
  ``(1 + level) / 2`` quantile of the resampled means. With few values it is coarse: it never
  reaches beyond the smallest and the largest value, and with three seeds it says how much they
  disagree rather than where the true mean lies.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (``ValueError`` for no values)."""
    if not len(values):
        raise ValueError("the mean of no values")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation (``ddof = 1``); NaN for fewer than two values."""
    if len(values) < 2:
        return math.nan
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def paired_differences(values: Sequence[float], reference: Sequence[float]) -> list[float]:
    """``values[k] - reference[k]`` for every k (the same seed or fold on both sides)."""
    if len(values) != len(reference):
        raise ValueError(f"paired differences need as many values as references, got {len(values)} and "
                         f"{len(reference)}")
    return [a - b for a, b in zip(values, reference)]


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` at ``level`` (see the module
    docstring); (NaN, NaN) for fewer than two values, which have no spread to resample."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
