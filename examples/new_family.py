"""A new model family in one file: define it, register it, train it coarse-to-fine.

The family below is a small frame transformer (one token per frame, mean-pooled) with no
FLOPs method of its own: coarse2fine measures its FLOPs once per geometry with FlopCounterMode
and says so. Run: ``python examples/new_family.py [--epochs 2] [--out runs/frames]``.

Registering in Python reaches this process only. To make ``model: {arch: frames}`` work in every
process (``coarse2fine train``, ``flops``, ``predict`` reading the run's model_config.json, loader
workers), make the module a plug-in: put it in a package and declare it in that package's
pyproject.toml, then ``pip install`` the package (coarse2fine imports it the first time it meets an
unknown ``model.arch``)::

    [project.entry-points."coarse2fine.models"]
    frames = "my_package.frames"
"""

import argparse
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn

from coarse2fine.compression import InputGeometry
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.model import C2FModel
from coarse2fine.model.base import ConfigDict
from coarse2fine.model.registry import Arch, register
from coarse2fine.training.loop import train_run


@dataclass
class FramesConfig(ConfigDict):
    num_classes: int = 8
    frames: int = 128
    mel_bins: int = 128
    time_factor: int = 1
    dim: int = 32

    @property
    def geometry(self) -> InputGeometry:
        return InputGeometry(self.frames, self.mel_bins, self.time_factor)

    @property
    def num_tokens(self) -> int:
        return self.frames


class Frames(C2FModel):
    arch = "frames"

    def __init__(self, config: FramesConfig):
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.mel_bins, config.dim)
        self.block = nn.TransformerEncoderLayer(config.dim, nhead=4, dim_feedforward=2 * config.dim, batch_first=True)
        self.head = nn.Linear(config.dim, config.num_classes)

    def set_geometry(self, geometry: InputGeometry) -> None:  # no positional embedding: nothing to carry over
        self.config = dataclasses.replace(self.config, frames=geometry.frames, time_factor=geometry.time_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.block(self.proj(x)).mean(dim=1))


register(Arch(
    name="frames", model_cls=Frames, config_cls=FramesConfig, presets={"small": {"dim": 32}},
    make_config=lambda settings, classes, geo: FramesConfig(classes, geo.frames, geo.mel_bins, geo.time_factor,
                                                           **{**{"dim": 32}, **settings.overrides}),
))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--out", default="runs/frames")
    args = parser.parse_args()
    cfg = load_config("demo", ["model.arch=frames", "model.preset=small", "c2f.method=avgpool", f"train.epochs={args.epochs}",
                               f"data.train_clips={args.clips}", "data.val_clips=32", "train.batch_size=16"])
    result = train_run(cfg, load_splits(cfg), args.out, progress=False, fresh=True)
    for r in result.records:
        print(f"epoch {r.epoch}: R={r.R}, {r.tokens} tokens, {r.train_flops / 1e9:.3f} GFLOPs (measured), "
              f"acc {r.metric('acc'):.3f}")
