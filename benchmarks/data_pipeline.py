"""Data pipeline vs pure model time: how close an epoch gets to the model's own cost.

On real audio (FSDD, read from ../shared/data/fsdd), one training epoch of the micro AST is
timed four ways, in one run:

- ``model only``: features precomputed in memory; the epoch is forward + backward + Adam step;
- ``cache (warm)``: the on-disk fbank cache, already filled, read through a DataLoader;
- ``preloaded waves``: waveforms in memory, fbank computed per batch (the default for small sets);
- ``decode each epoch``: files decoded and resampled every epoch, fbank per batch.

Target: the cached epoch within 1.05x of the model-only epoch.

    python benchmarks/data_pipeline.py [--clips 800] [--preset micro] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from coarse2fine.data.cache import FeatureCache
from coarse2fine.data.cached import CachedFeatureDataset
from coarse2fine.data.files import FileDataset
from coarse2fine.data.manifest import fsdd_manifest
from coarse2fine.features import FbankConfig, FeatureSpec, extract
from coarse2fine.model import AST, ast_config


def epoch_time(model, loader, spec, steps_done: list[int]) -> float:
    """Seconds for one pass of ``loader`` training ``model`` (features computed if given waves)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    for x, y in loader:
        feats = x if x.ndim == 3 else extract(x, spec)
        loss = torch.nn.functional.cross_entropy(model(feats), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps_done[0] += 1
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="../shared/data/fsdd")
    ap.add_argument("--clips", type=int, default=800)
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per variant (median reported)")
    ap.add_argument("--out", default="benchmarks/results/data_pipeline.json")
    args = ap.parse_args()

    manifest = fsdd_manifest(args.root, "digits", "train")
    manifest.entries = manifest.entries[: args.clips]
    spec = FeatureSpec(FbankConfig(), target_length=128, mean=-9.435641, std=5.12005)
    files = FileDataset.from_manifest(manifest, num_samples=20480)
    waves = files.load_all()
    labels = waves.targets.argmax(1)
    feats = torch.cat([extract(waves.waves[i : i + 256], spec) for i in range(0, len(waves), 256)])
    torch.manual_seed(0)
    model = AST(ast_config(args.preset, num_classes=manifest.num_classes, target_length=128))
    kw = dict(batch_size=args.batch_size, shuffle=False, num_workers=args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        cached = CachedFeatureDataset(files, cache, spec)
        for i in range(len(cached)):  # fill the cache (the first epoch of a first run)
            cached[i]
        variants = {
            "model only": DataLoader(TensorDataset(feats, labels), **kw),
            "cache (warm)": DataLoader(_Labelled(cached), **kw),
            "preloaded waves": DataLoader(TensorDataset(waves.waves, labels), **kw),
            "decode each epoch": DataLoader(_Labelled(files), **kw),
        }
        steps = [0]
        epoch_time(model, variants["model only"], spec, steps)  # warm-up
        times = {name: sorted(epoch_time(model, loader, spec, steps) for _ in range(args.repeats))[args.repeats // 2]
                 for name, loader in variants.items()}

    base = times["model only"]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"Data pipeline vs model, {len(files)} FSDD clips, {args.preset} AST, batch {args.batch_size}, {machine}")
    print(f"{'variant':<20} {'s/epoch':>8} {'x model only':>13}")
    for name, t in times.items():
        print(f"{name:<20} {t:>8.2f} {t / base:>13.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "clips": len(files), "seconds_per_epoch": times,
                               "ratio_to_model_only": {k: v / base for k, v in times.items()}}, indent=2))


class _Labelled(torch.utils.data.Dataset):
    """(x, multi-hot target) -> (x, class index), as the model-only variant feeds."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return x, int(y.argmax())


if __name__ == "__main__":
    main()
