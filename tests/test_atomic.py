import json
import os

import pytest
import torch
from safetensors.torch import load_file

from coarse2fine import atomic


def test_writes_and_leaves_no_temp_files(tmp_path):
    atomic.write_json(tmp_path / "a" / "log.json", {"x": 1})
    atomic.save_safetensors(tmp_path / "w.safetensors", {"w": torch.arange(6.0).view(2, 3).t()})
    assert json.loads((tmp_path / "a" / "log.json").read_text()) == {"x": 1}
    assert torch.equal(load_file(tmp_path / "w.safetensors")["w"], torch.arange(6.0).view(2, 3).t())
    assert sorted(os.listdir(tmp_path)) == ["a", "w.safetensors"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "log.json"
    atomic.write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["log.json"]
