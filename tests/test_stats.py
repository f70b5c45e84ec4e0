"""Statistics of repeated runs against hand-computed values."""

import math

import pytest

from coarse2fine.report.stats import bootstrap_interval, mean, paired_differences, sample_std


def test_mean_and_sample_std_by_hand():
    assert mean([0.40, 0.50, 0.45]) == pytest.approx(0.45)
    # Deviations -0.05, +0.05, 0: squares sum to 0.005, over n - 1 = 2: 0.0025, root 0.05.
    assert sample_std([0.40, 0.50, 0.45]) == pytest.approx(0.05)
    # 0.44, 0.52, 0.51: mean 0.49, squares 0.0025 + 0.0009 + 0.0004 = 0.0038, / 2 = 0.0019.
    assert sample_std([0.44, 0.52, 0.51]) == pytest.approx(math.sqrt(0.0019))
    assert math.isnan(sample_std([0.3])) and math.isnan(sample_std([]))
    with pytest.raises(ValueError):
        mean([])


def test_paired_differences_pair_by_position():
    assert paired_differences([0.44, 0.52, 0.51], [0.40, 0.50, 0.45]) == pytest.approx([0.04, 0.02, 0.06])
    with pytest.raises(ValueError, match="as many"):
        paired_differences([1.0, 2.0], [1.0])


def test_bootstrap_interval_by_hand():
    # Two values 0 and 2: resampled means are 0 (p 1/4), 1 (1/2) and 2 (1/4), so the 2.5 % and 97.5 %
    # quantiles are the extremes.
    assert bootstrap_interval([0.0, 2.0]) == (0.0, 2.0)
    # 0, 0, 3: a mean of 3 needs all three draws to be the 3 (p 1/27 = 3.7 % > 2.5 %); a mean of 0 has p 8/27.
    assert bootstrap_interval([0.0, 0.0, 3.0]) == (0.0, 3.0)
    # Its 20 % interval runs from the 40 % to the 60 % quantile; a mean of 0 has p 8/27 (29.6 %) and a mean of 1
    # p 12/27 (up to 74.1 %), so both quantiles are 1.
    assert bootstrap_interval([0.0, 0.0, 3.0], level=0.2) == (1.0, 1.0)
    # Differences of 4, 2 and 6 points: the interval is [2, 6].
    low, high = bootstrap_interval([0.04, 0.02, 0.06])
    assert (low, high) == (pytest.approx(0.02), pytest.approx(0.06))


def test_bootstrap_interval_uses_a_fixed_generator():
    values = [0.013, -0.004, 0.021, 0.008, 0.017, -0.001, 0.011]
    first = bootstrap_interval(values)
    assert bootstrap_interval(values) == first  # the same on every call
    assert bootstrap_interval(values, seed=1) != first  # another generator resamples otherwise
    assert min(values) < first[0] < mean(values) < first[1] < max(values)
    assert all(math.isnan(v) for v in bootstrap_interval([0.5]))  # one value has no spread to resample
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(values, level=1.5)
