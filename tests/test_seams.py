"""The seams: a new model family or objective plugs into the same loop, accounting and commands."""

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping

import pytest
import torch
import torch.nn as nn

from coarse2fine.compression import Compression, InputGeometry
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.model import (
    C2FModel,
    arch_names,
    build_model,
    get_arch,
    measured_training_flops,
    model_from_config_dict,
)
from coarse2fine.model.registry import _ARCHS, Arch, register
from coarse2fine.objectives import objective_metrics
from coarse2fine.predict import load_run_for_inference
from coarse2fine.training.loop import train_run


@dataclass
class MeanPoolConfig:
    """A deliberately small family: per-frame projection, mean over time, linear classifier."""

    num_classes: int = 8
    num_mel_bins: int = 128
    frames: int = 128
    dim: int = 16
    time_patch_factor: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MeanPoolConfig":
        return cls(**d)


class MeanPool(C2FModel):
    arch = "meanpool"

    def __init__(self, config: MeanPoolConfig):
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.num_mel_bins, config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)

    @property
    def geometry(self) -> InputGeometry:
        return InputGeometry(self.config.frames, self.config.num_mel_bins, time_patch_factor=self.config.time_patch_factor)

    def set_geometry(self, geometry: InputGeometry) -> None:
        self.config = dataclasses.replace(self.config, frames=geometry.frames, time_patch_factor=geometry.time_patch_factor)

    @property
    def num_tokens(self) -> int:
        return self.config.frames

    def forward_flops(self, batch_size: int = 1) -> int:
        c = self.config
        return batch_size * (2 * c.frames * c.num_mel_bins * c.dim + 2 * c.dim * c.num_classes)

    def training_flops(self, batch_size: int = 1) -> int:
        c = self.config  # the projection needs no input gradient: 2x its forward; the head 3x
        return batch_size * (4 * c.frames * c.num_mel_bins * c.dim + 6 * c.dim * c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.proj(x).mean(dim=1))


def make_config(settings, num_classes: int, geo: InputGeometry) -> MeanPoolConfig:
    return MeanPoolConfig(num_classes, geo.mel_bins, geo.frames, time_patch_factor=geo.time_patch_factor,
                          **{"dim": 16, **dict(settings.overrides)})


@pytest.fixture
def meanpool():
    register(Arch("meanpool", MeanPool, MeanPoolConfig, {"micro": {}}, make_config))
    yield
    _ARCHS.pop("meanpool")


def test_the_shipped_families_are_registered_and_rebuild_from_their_saved_config():
    assert {"ast", "htsat", "ssast"} <= set(arch_names())
    settings = load_config("demo").model
    for arch, preset, frames in (("ast", "micro", 128), ("htsat", "micro", 128), ("ssast", "micro", 128)):
        geo = Compression("avgpool", 1).input_geometry(frames, 128)
        model = build_model(dataclasses.replace(settings, arch=arch, preset=preset, overrides={"num_chunks": 1} if arch == "htsat" else {}), 5, geo)
        assert model.arch == arch and isinstance(model, get_arch(arch).model_cls)
        saved = json.loads(json.dumps(model.config_dict()))
        again = model_from_config_dict(saved)
        again.load_state_dict(model.state_dict())
        x = torch.randn(2, frames, 128)
        with torch.no_grad():
            assert torch.equal(again.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="model.arch: 'nope' is not one of"):
        get_arch("nope")


def test_saved_configs_without_an_arch_are_ast():
    model = model_from_config_dict({"num_classes": 3, "embed_dim": 8, "depth": 1, "num_heads": 2, "target_length": 32})
    assert model.arch == "ast" and model.num_tokens == 8 * 2


def test_a_new_family_trains_coarse_to_fine_without_touching_the_loop(meanpool, tmp_path):
    cfg = load_config("demo", ["model.arch=meanpool", "model.preset=micro", "data.train_clips=32", "data.val_clips=16",
                               "train.epochs=2", "train.batch_size=16", "train.threads=1", "c2f.phase_epochs=[1, 2]",
                               "c2f.method=avgpool"])
    result = train_run(cfg, load_splits(cfg), tmp_path, progress=False)
    assert [(r.R, r.tokens) for r in result.records] == [(4, 32), (1, 128), (1, 128)]
    model = MeanPool(make_config(cfg.model, 8, InputGeometry(32, 128)))
    assert measured_training_flops(model, torch.randn(1, 32, 128)) == model.training_flops(1)
    assert result.records[0].train_flops == model.training_flops(32)
    loaded, spec, labels, _, multilabel = load_run_for_inference(tmp_path)
    assert isinstance(loaded, MeanPool) and spec.target_length == 128 and len(labels) == 8 and not multilabel


def test_objectives_declare_their_metrics_and_directions():
    assert objective_metrics("classification") == {"acc": True, "mAP": True, "mAUC": True, "d_prime": True,
                                                   "val_loss": False}
    assert objective_metrics("masked_patch") == {"masked_acc": True, "recon_mse": False, "val_loss": False}
