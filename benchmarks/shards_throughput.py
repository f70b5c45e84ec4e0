"""Packed shards against per-file reading (issue 21): clips per second delivered, bytes read per
coarse and per fine epoch, and the memory of indexing a 2-million-clip split.

A set of clips is packed with ``coarse2fine pack`` (FLAC audio, and the features of a 4-1 Fshift
schedule: R = 1 and R = 4, float16), then one epoch in a random order (the loop's
``epoch_batches``) is read four ways through a ``DataLoader`` with a batch sampler, as the
training loop reads, for each number of loader worker processes:

- ``files``: one audio file decoded per clip (``data.kind: manifest``);
- ``shards audio``: the FLAC members of the audio shards, decoded (phases without packed features);
- ``shards R=1`` / ``shards R=4``: the packed features of the fine and the coarse phase.

The variants are timed in interleaved rounds; the median clips/s over ``--repeats`` is reported
(time from the first batch to the last, so worker start-up is left out; it is reported apart).

Sources: ``--source esc50`` (ESC-50 from ``--root``, 5 s clips, 512 frames) or ``--source
audioset`` (a generated AudioSet-shaped set: ``--clips`` clips of 10 s at 16 kHz, 1-4 of 527
labels each, 1024 frames x 128 mel bins). ``--index-clips N`` also measures, each in a fresh
process, building the index of an N-clip split from its shard records (what ``pack`` does last)
and opening it for training (what every process does first): peak traced memory, peak RSS over
the interpreter's, seconds.

    python benchmarks/shards_throughput.py --source esc50 --workers 0,2
    python benchmarks/shards_throughput.py --source audioset --clips 5000 --workers 0,2 --work /tmp/c2f_audioset
    python benchmarks/shards_throughput.py --source none --index-clips 2000000
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from _common import format_machine, format_table, machine_info, median, write_json
from coarse2fine.compression import Compression
from coarse2fine.config import load_config
from coarse2fine.data.files import FileDataset
from coarse2fine.data.manifest import read_manifest
from coarse2fine.data.pack import index_from_records, pack
from coarse2fine.data.shard_layout import DESCRIPTOR, FORMAT, INDEX
from coarse2fine.data.shard_store import ShardStore
from coarse2fine.data.shards import ShardDataset
from coarse2fine.data.synthetic import SyntheticConfig, make_clip
from coarse2fine.training.sampling import epoch_batches

AUDIOSET_CLASSES = 527
VARIANTS = ("files", "shards audio", "shards R=1", "shards R=4")


# ----------------------------------------------------------------------------- the clips


def esc50_set(work: Path, root: Path, clips: int) -> Path:
    """CSV manifests of the first ``clips`` ESC-50 clips (training) and 40 more (validation)."""
    rows = list(csv.DictReader(open(root / "esc50.csv", newline="")))
    names = {int(r["target"]): r["category"] for r in rows}
    (work / "labels.csv").write_text("index,mid,display_name\n" + "".join(f"{t},{t},{names[t]}\n" for t in sorted(names)))
    for split, chosen in (("train", rows[:clips]), ("val", rows[clips:clips + 40] or rows[:40])):
        (work / f"{split}.csv").write_text("path,label\n" + "".join(f"{root / 'audio' / r['filename']},{r['target']}\n" for r in chosen))
    return _config(work, "esc50", 5.0, 512, "esc50")


def audioset_set(work: Path, clips: int, seconds: float) -> Path:
    """``clips`` generated clips of ``seconds`` at 16 kHz as 16-bit FLAC, each with 1-4 of 527 labels."""
    rng = np.random.default_rng(0)
    (work / "labels.csv").write_text("index,mid,display_name\n" + "".join(f"{c},/m/{c},class {c}\n" for c in range(AUDIOSET_CLASSES)))
    audio = work / "audio"
    audio.mkdir(exist_ok=True)
    gen = SyntheticConfig(num_clips=clips, clip_seconds=seconds, sample_rate=16000, seed=0)
    for split, n in (("train", clips), ("val", max(8, clips // 50))):
        lines = []
        for i in range(n):
            path = audio / f"{split}-{i:06d}.flac"
            if not path.exists():
                wave, _ = make_clip(i, split, gen)
                sf.write(path, np.clip(wave, -1, 32767 / 32768), 16000, subtype="PCM_16")
            labels = ";".join(f"/m/{c}" for c in sorted(rng.choice(AUDIOSET_CLASSES, rng.integers(1, 5), replace=False)))
            lines.append(f'{path},"{labels}"\n')
        (work / f"{split}.csv").write_text("path,labels\n" + "".join(lines))
    frames = max(64, round(seconds * 100 / 64) * 64)  # AST's 1024 frames for 10 s
    return _config(work, "audioset_shaped", seconds, frames, None, multilabel=True)


def _config(work: Path, name: str, seconds: float, frames: int, extends: str | None, multilabel: bool = False) -> Path:
    path = work / "files.yaml"
    loss = "bce\n  metric: mAP" if multilabel else "ce"
    path.write_text(f"""extends: {extends or 'demo'}
name: {name}
data:
  kind: manifest
  train: train.csv
  val: val.csv
  label_csv: labels.csv
  clip_seconds: {seconds}
features:
  target_length: {frames}
train:
  loss: {loss}
c2f:
  schedule: "4-1"
  method: fshift
""")
    return path


# ----------------------------------------------------------------------------- reading


def variants(config: Path, packed: Path, cache: Path) -> dict[str, torch.utils.data.Dataset]:
    cfg = load_config(config)
    d, f = cfg.data, cfg.features
    samples = int(round(d.clip_seconds * f.sample_rate))
    files = FileDataset.from_manifest(read_manifest(d.train, d.label_csv), samples, f.sample_rate)
    made = {"files": files}
    for name, R in (("shards audio", None), ("shards R=1", 1), ("shards R=4", 4)):
        ds = ShardDataset(str(packed / "train"), f.sample_rate, samples, store=ShardStore(cache))
        if R is not None:
            comp = Compression("fshift", R)
            ds.set_phase(comp.feature_spec(f.spec()), comp)
            if ds.serves != "features":
                raise SystemExit(f"{packed}: no packed features for R={R}")
        made[name] = ds
    return made


def read_epoch(ds, clips: int, batch: int, workers: int, seed: int) -> dict[str, float]:
    """One epoch of ``clips`` clips in the loop's random order; seconds to the first batch and clips/s after it."""
    batches = epoch_batches(len(ds), batch, seed, 1)[: max(2, -(-clips // batch))]
    loader = DataLoader(ds, batch_sampler=batches, num_workers=workers, prefetch_factor=4 if workers else None)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter()
    rest = sum(len(x) for x, _ in it)
    end = time.perf_counter()
    return {"first_batch_s": first - start, "clips_per_s": rest / (end - first) if end > first else float("nan")}


def epoch_bytes(packed: Path, config: Path) -> dict[str, int]:
    """Bytes one epoch reads: every clip once (the shard sets' sizes; the audio files' sizes)."""
    desc = json.loads((packed / "train" / DESCRIPTOR).read_text())
    out = {"files": sum(Path(e.path).stat().st_size for e in _manifest(config).entries), "shards audio": desc["bytes"]}
    for entry in desc["feature_sets"]:
        out[f"shards R={entry['R']}"] = entry["bytes"]
    return out


def _manifest(config: Path):
    d = load_config(config).data
    return read_manifest(d.train, d.label_csv)


# ----------------------------------------------------------------------------- the index at scale


def index_step(step: str, folder: Path, clips: int) -> dict[str, float]:
    """``build``: the index of ``clips`` clips from shard records of 1,000 clips (written first);
    ``open``: a training process opening it. Measured in this (fresh) process."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if step == "build":
        parts = folder / "parts"
        parts.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        per = 1000
        shards = -(-clips // per)
        for s in range(shards):
            n = min(per, clips - s * per)
            labels = [sorted(rng.choice(AUDIOSET_CLASSES, rng.integers(1, 5), replace=False).tolist()) for _ in range(n)]
            info = {"url": f"audio-{s:06d}.tar", "nsamples": n, "filesize": 175_000_000, "sha256": "0" * 64}
            (parts / f"{s:06d}.json").write_text(json.dumps({"nsamples": n, "labels": labels, "lengths": [160000] * n,
                                                             "skipped": [], "sets": {"audio": info}}))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        start = time.perf_counter()
        records = (json.loads((parts / f"{s:06d}.json").read_text()) for s in range(shards))
        built = index_from_records(records, AUDIOSET_CLASSES, ["audio"])
        built.index.save(folder / INDEX)
        desc = {"wids_version": 1, "name": "audio", "format": FORMAT, "member": "flac", "sample_rate": 16000,
                "clip_seconds": 10.0, "num_samples": 160000, "classes": [f"/m/{c}" for c in range(AUDIOSET_CLASSES)],
                "multilabel": True, "index": INDEX, "shardlist": [s.to_dict() for s in built.shardlists["audio"]]}
        (folder / DESCRIPTOR).write_text(json.dumps(desc))
    else:
        tracemalloc.start()
        start = time.perf_counter()
        ds = ShardDataset(str(folder), 16000, 160000)
        ds.sampling_weights()
        if len(ds) != clips:
            raise SystemExit(f"{folder}: {len(ds)} clips indexed, {clips} expected")
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"seconds": seconds, "peak_traced_mib": peak / 2**20, "peak_rss_over_start_mib": (rss - base) / 1024}


def index_memory(clips: int, work: Path) -> dict[str, dict[str, float]]:
    folder = work / f"index_{clips}"
    out = {}
    for step in ("build", "open"):  # each in a fresh process, so that peaks are its own
        proc = subprocess.run([sys.executable, __file__, "--index-step", step, "--index-clips", str(clips),
                               "--work", str(folder)], capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"index {step} failed:\n{proc.stderr[-3000:]}")
        out[step] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=["esc50", "audioset", "none"], default="esc50")
    ap.add_argument("--root", type=Path, default=Path("../shared/data/esc50"), help="ESC-50 folder (--source esc50)")
    ap.add_argument("--clips", type=int, default=None, help="training clips (default: 2000 for esc50, 5000 for audioset)")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length of the generated set (default 10)")
    ap.add_argument("--workers", default="0,2", help="comma-separated loader worker counts (default 0,2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epoch-clips", type=int, default=None, help="clips per timed epoch (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--shard-clips", type=int, default=1000)
    ap.add_argument("--pack-workers", type=int, default=2)
    ap.add_argument("--index-clips", type=int, default=2_000_000, help="clips of the index measured (0: skip)")
    ap.add_argument("--work", type=Path, default=None, help="work folder, kept (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke run: few short clips, one round, a 20,000-clip index")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "shards_throughput.json")
    ap.add_argument("--index-step", choices=["build", "open"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.index_step:
        print(json.dumps(index_step(args.index_step, args.work, args.index_clips)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.clips, args.seconds, args.repeats, args.index_clips = args.clips or 24, 2.0, 1, min(args.index_clips, 20_000)
        args.batch_size = min(args.batch_size, 4)
        args.shard_clips = min(args.shard_clips, 8)
    with tempfile.TemporaryDirectory() as tmp:
        run(args, args.work or Path(tmp))


def run(args: argparse.Namespace, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    info = machine_info(torch.device("cpu"), ["webdataset", "wids"])
    result: dict = {"benchmark": "shards_throughput", "machine": info, "source": args.source}
    print(format_machine(info))
    if args.source != "none":
        clips = args.clips or (2000 if args.source == "esc50" else 5000)
        config = esc50_set(work, args.root, clips) if args.source == "esc50" else audioset_set(work, clips, args.seconds)
        packed = work / "packed"
        start = time.perf_counter()
        made = pack(load_config(config), packed, features=True, shard_clips=args.shard_clips, workers=args.pack_workers,
                    progress=False)
        pack_s = time.perf_counter() - start
        done = {r.name: r for r in made}
        result["pack"] = {"seconds": pack_s, "clips": sum(r.clips for r in made), "written_shards": sum(r.written for r in made),
                          "clips_per_s": sum(r.clips for r in made) / pack_s if any(r.written for r in made) else None}
        datasets = variants(config, packed, work / "cache")
        n = min(args.epoch_clips or len(datasets["files"]), len(datasets["files"]))
        workers = [int(w) for w in args.workers.split(",")]
        runs: dict[tuple[str, int], list[dict]] = {}
        for w in workers:
            for r in range(args.repeats):
                for name in VARIANTS:  # interleaved: a change of load hits every variant alike
                    runs.setdefault((name, w), []).append(read_epoch(datasets[name], n, args.batch_size, w, seed=r))
        sizes = epoch_bytes(packed, config)
        rows, table = [], []
        for (name, w), got in runs.items():
            row = {"variant": name, "workers": w, "clips_per_s": median([g["clips_per_s"] for g in got]),
                   "first_batch_s": median([g["first_batch_s"] for g in got]), "runs": got,
                   "bytes_per_clip": sizes[name] / done["train"].clips}
            rows.append(row)
            table.append([name, w, f"{row['clips_per_s']:.0f}", f"{row['first_batch_s']:.2f}", f"{row['bytes_per_clip'] / 1024:.0f}"])
        result.update({"clips": done["train"].clips, "epoch_clips": n, "batch_size": args.batch_size,
                       "repeats": args.repeats, "throughput": rows, "bytes_per_epoch": sizes,
                       "coarse_over_fine_bytes": sizes["shards R=4"] / sizes["shards R=1"]})
        print(f"{args.source}: {done['train'].clips} training clips, {n} per timed epoch, batch {args.batch_size}, "
              f"median of {args.repeats} interleaved rounds; pack {pack_s:.1f} s")
        print(format_table(["variant", "workers", "clips/s", "first batch s", "KiB/clip"], table))
        print("bytes per epoch: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items())
              + f"; coarse (R=4) / fine (R=1) = {result['coarse_over_fine_bytes']:.3f}")
    if args.index_clips:
        result["index"] = {"clips": args.index_clips, **index_memory(args.index_clips, work)}
        for step in ("build", "open"):
            m = result["index"][step]
            print(f"index of {args.index_clips:,} clips, {step}: {m['seconds']:.2f} s, peak traced "
                  f"{m['peak_traced_mib']:.0f} MiB, peak RSS +{m['peak_rss_over_start_mib']:.0f} MiB")
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
