"""Coarse-to-fine in PyTorch Lightning: your LightningModule, plus the CoarseToFine callback.

    pip install "coarse2fine[lightning]"
    python examples/lightning_callback.py [--epochs 8] [--clips 400]
"""
import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from coarse2fine.core import Schedule, savings
from coarse2fine.data.synthetic import SyntheticConfig, make_split
from coarse2fine.features import FbankConfig, FeatureSpec
from coarse2fine.integrations.lightning import CoarseToFine
from coarse2fine.model import AST, ast_config


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = AST(ast_config("micro", num_classes=8, target_length=128))  # CoarseToFine moves it

    def training_step(self, batch, batch_idx):
        x, y = batch  # x: this phase's model input (the callback compressed it)
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("acc", (self.model(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):  # called again at every phase change: fresh optimizer
        return torch.optim.Adam(self.parameters(), lr=1e-3)


args = argparse.ArgumentParser()
args.add_argument("--epochs", type=int, default=8)
args.add_argument("--clips", type=int, default=400)
args = args.parse_args()
spec = FeatureSpec(FbankConfig(num_mel_bins=128), target_length=128, mean=-2.3, std=3.85)
train = DataLoader(TensorDataset(*make_split("train", SyntheticConfig(num_clips=args.clips))), batch_size=16, shuffle=True)
val = DataLoader(TensorDataset(*make_split("val", SyntheticConfig(num_clips=args.clips // 4))), batch_size=64)
runs = {}
for schedule_text in ("1", "4-1"):
    schedule = Schedule.build(schedule_text, args.epochs, frames=128, mel_bins=128, method="avgpool")
    c2f = CoarseToFine(schedule, inputs="waveforms", features=spec)  # batches carry waveforms
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=schedule.epochs, callbacks=[c2f], accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Classifier(), train, val)
    runs[schedule_text] = c2f.records  # epoch, R, FLOPs, time and acc of every epoch
print(savings(runs["1"], {"Avg Pool 4-1": runs["4-1"]}, "acc"))
