from __future__ import annotations

import pytest
import torch

from coarse2fine.training.averaging import WeightAverager, average_state_dicts


def sd(w, b, n, h):
    return {
        "w": torch.tensor(w, dtype=torch.float32),
        "h": torch.tensor(h, dtype=torch.float16),
        "b": torch.tensor(b, dtype=torch.float64),
        "n": torch.tensor(n, dtype=torch.long),
    }


def test_average_by_hand():
    out = average_state_dicts([sd([1.0, 2.0], [3.0], 5, [0.5]), sd([3.0, 6.0], [4.0], 7, [1.5]), sd([2.0, 1.0], [5.0], 9, [1.0])])
    assert torch.equal(out["w"], torch.tensor([2.0, 3.0]))
    assert torch.equal(out["b"], torch.tensor([4.0], dtype=torch.float64))
    assert torch.equal(out["h"], torch.tensor([1.0], dtype=torch.float16))
    assert out["n"].dtype == torch.long and int(out["n"]) == 9  # integers: the last
    assert [out[k].dtype for k in "whbn"] == [torch.float32, torch.float16, torch.float64, torch.long]
    assert list(out) == ["w", "h", "b", "n"]


def test_mismatches_name_the_key():
    a = sd([1.0, 2.0], [3.0], 5, [0.5])
    with pytest.raises(ValueError, match="'w'"):
        average_state_dicts([a, sd([1.0, 2.0, 3.0], [3.0], 5, [0.5])])
    extra = dict(a, extra=torch.zeros(1))
    with pytest.raises(ValueError, match="extra"):
        average_state_dicts([a, extra])
    missing = {k: v for k, v in a.items() if k != "b"}
    with pytest.raises(ValueError, match="'b'"):
        average_state_dicts([a, missing])
    with pytest.raises(ValueError):
        average_state_dicts([])


def test_streaming_equals_batch_and_window():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    dicts = []
    for _ in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
            model[1].num_batches_tracked += 1
        dicts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    averager = WeightAverager(start=2, end=4)
    included = [averager.update(model_sd) for model_sd in dicts]
    assert included == [False, True, True, True, False, False]
    assert averager.count == 3
    streamed, batch = averager.average(), average_state_dicts(dicts[1:4])
    assert streamed.keys() == batch.keys()
    for k in batch:
        assert torch.equal(streamed[k], batch[k]), k
    assert int(streamed["1.num_batches_tracked"]) == 4
    ref = (dicts[1]["0.weight"].double() + dicts[2]["0.weight"].double() + dicts[3]["0.weight"].double()) / 3
    assert torch.allclose(streamed["0.weight"].double(), ref, atol=1e-6)


def test_averager_copies_and_explicit_epochs():
    p = {"w": torch.tensor([1.0], dtype=torch.float64)}
    averager = WeightAverager(start=1)
    averager.update(p)
    p["w"].add_(1.0)  # training goes on in place
    averager.update({"w": torch.tensor([5.0], dtype=torch.float64)})
    assert torch.equal(averager.average()["w"], torch.tensor([3.0], dtype=torch.float64))
    resumed = WeightAverager(start=3, end=4)
    assert not resumed.update(p, epoch=2)
    assert resumed.update(p, epoch=4) and resumed.count == 1 and resumed.epoch == 4
    assert not resumed.update(p)  # epoch 5
    with pytest.raises(ValueError):
        WeightAverager(start=1, end=3).average()
    with pytest.raises(ValueError):
        WeightAverager(start=0)
