"""Coarse-to-fine in a plain PyTorch loop with the functional core; prints the savings table.

    python examples/plain_loop.py [--epochs 8] [--clips 400]
"""
import argparse
import time

import torch
import torch.nn.functional as F

from coarse2fine.core import Schedule, carry, compress, savings, step_flops
from coarse2fine.data.synthetic import SyntheticConfig, make_split
from coarse2fine.features import FbankConfig, FeatureSpec
from coarse2fine.model import AST, ast_config

args = argparse.ArgumentParser()
args.add_argument("--epochs", type=int, default=8)
args.add_argument("--clips", type=int, default=400)
args = args.parse_args()
spec = FeatureSpec(FbankConfig(num_mel_bins=128), target_length=128, mean=-2.3, std=3.85)
train = make_split("train", SyntheticConfig(num_clips=args.clips))  # (waveforms [N, samples], labels [N])
val = make_split("val", SyntheticConfig(num_clips=args.clips // 4))


def run(schedule: Schedule) -> list[tuple]:
    """Train one schedule; one (epoch, R, accuracy, FLOPs, seconds) row per epoch."""
    torch.manual_seed(0)
    model, phase, rows = AST(ast_config("micro", num_classes=8, target_length=128)), -1, []
    for epoch in range(schedule.epochs):
        at = schedule.at_epoch(epoch)
        comp = schedule.compression(at.index)
        if at.index != phase:  # a new phase: carry the weights over, fresh optimizer (the paper's reset)
            phase = at.index
            carry(model, schedule.geometry(phase))
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        start, flops, model = time.perf_counter(), 0, model.train()
        for idx in torch.randperm(len(train[1])).split(16):
            x = compress(train[0][idx], comp, "waveforms", spec)  # the phase's model input
            loss = F.cross_entropy(model(x), train[1][idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            flops += step_flops(model, len(idx))
        seconds = time.perf_counter() - start
        with torch.no_grad():
            acc = (model.eval()(compress(val[0], comp, "waveforms", spec)).argmax(-1) == val[1]).float().mean().item()
        rows.append((epoch + 1, at.R, acc, flops, seconds))
        print(f"epoch {epoch + 1}: R={at.R} acc={acc:.3f} FLOPs={flops:.3g} time={seconds:.1f}s")
    return rows


full = dict(frames=128, mel_bins=128, method="fshift")
baseline = run(Schedule.build("1", args.epochs, **full))
coarse_to_fine = run(Schedule.build("4-1", args.epochs, **full))
print(savings(baseline, {"Fshift 4-1": coarse_to_fine}, "acc"))
