"""Sparse labels (LabelIndex): dense rows, counts and balanced-sampling weights as from dense targets."""

import numpy as np
import pytest
import torch

from coarse2fine.data.labels import LabelIndex, balanced_weights, index_dtype
from coarse2fine.training.sampling import epoch_batches

ROWS = [[0, 2], [], [1], [2], [0, 1, 2], [3]]


def _dense(rows, classes):
    out = torch.zeros(len(rows), classes)
    for i, row in enumerate(rows):
        out[i, row] = 1.0
    return out


def test_dense_rows_and_counts_match_the_lists():
    index = LabelIndex.from_lists(ROWS, 5)
    assert len(index) == 6 and index.indices.dtype == np.int16
    assert torch.equal(index.dense(np.arange(6)), _dense(ROWS, 5))
    assert torch.equal(index.dense([4, 1, 4]), _dense([ROWS[4], ROWS[1], ROWS[4]], 5))
    assert index.counts().tolist() == [2, 2, 3, 1, 0]
    assert index.row(4).tolist() == [0, 1, 2] and index.row(1).tolist() == []


def test_balanced_weights_equal_the_dense_formula_and_draw_the_same_batches():
    rng = np.random.default_rng(0)
    rows = [sorted(rng.choice(40, size=rng.integers(0, 4), replace=False).tolist()) for _ in range(500)]
    index = LabelIndex.from_lists(rows, 40)
    sparse, dense = index.balanced_weights(), balanced_weights(_dense(rows, 40))
    assert sparse.dtype == torch.float64 and sparse.shape == (500,)
    assert torch.allclose(sparse, dense, rtol=1e-12, atol=0)
    assert float(sparse[[i for i, r in enumerate(rows) if not r]].abs().sum()) == 0.0  # no label: never drawn
    for seed in range(5):
        assert epoch_batches(500, 32, seed, 1, sparse) == epoch_batches(500, 32, seed, 1, dense)


def test_bad_indices_are_refused():
    with pytest.raises(ValueError, match="class indices"):
        LabelIndex.from_lists([[0], [7]], 5)
    with pytest.raises(ValueError, match="indptr ends"):
        LabelIndex(np.array([0, 2]), np.array([1], dtype=np.int16), 5)
    assert index_dtype(527) == np.int16 and index_dtype(40_000) == np.int32
