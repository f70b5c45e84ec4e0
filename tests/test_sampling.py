from __future__ import annotations

import pytest
import torch

from coarse2fine.training.sampling import balanced_sampler, balanced_weights, batch_count, epoch_batches


def test_balanced_weights_by_hand():
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.float32)
    w0, w1 = 1000 / 3.01, 1000 / 2.01
    expected = torch.tensor([w0, w0 + w1, w1, w0], dtype=torch.float64)
    assert torch.allclose(balanced_weights(targets), expected)
    # Soft (mixed) targets: presence counts, not the value.
    assert torch.allclose(balanced_weights(targets * 0.3), expected)
    with pytest.raises(ValueError):
        balanced_weights(torch.ones(4))


def test_sampler_favours_rare_classes():
    N = 200
    targets = torch.zeros(N, 2)
    targets[:, 0] = 1
    targets[0] = torch.tensor([0.0, 1.0])  # one clip of a rare class
    sampler = balanced_sampler(targets, num_samples=20000, generator=torch.Generator().manual_seed(0))
    assert sampler.replacement and len(sampler) == 20000
    draws = torch.tensor(list(sampler))
    rare = float((draws == 0).float().mean())
    assert rare > 0.4  # ~0.5, against a frequency of 0.005
    assert len(balanced_sampler(targets)) == N


def test_sampler_reproducible_and_rejects_unlabelled():
    targets = torch.eye(5)[torch.tensor([0, 0, 0, 1, 2, 3, 4, 4])]
    a = list(balanced_sampler(targets, generator=torch.Generator().manual_seed(1)))
    b = list(balanced_sampler(targets, generator=torch.Generator().manual_seed(1)))
    c = list(balanced_sampler(targets, 64, generator=torch.Generator().manual_seed(2)))
    d = list(balanced_sampler(targets, 64, generator=torch.Generator().manual_seed(1)))
    assert a == b and c != d
    with pytest.raises(ValueError):
        balanced_sampler(torch.zeros(3, 2))


def test_balanced_draws_over_a_fixed_number_of_steps_fill_every_batch():
    # Balanced sampling with train.epoch_steps: draws = steps x batch, whatever the set's size.
    from coarse2fine.training.sampling import epoch_batches

    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    batches = epoch_batches(5, 4, seed=0, epoch=1, weights=weights, draws=12)
    assert [len(b) for b in batches] == [4, 4, 4]
    assert epoch_batches(5, 4, seed=0, epoch=1, weights=weights) == epoch_batches(5, 4, 0, 1, weights, draws=5)


def test_batch_count_leaves_out_a_last_batch_some_process_would_get_nothing_of():
    assert batch_count(17, 8) == len(epoch_batches(17, 8, 0, 1)) == 3  # one process: every clip
    assert batch_count(17, 8, parts=2) == 2  # 1 clip for 2 processes: left out
    assert batch_count(18, 8, parts=2) == 3 and batch_count(16, 8, parts=2) == 2
    assert batch_count(1, 8, parts=2) == 1  # a pass of one short batch is kept
