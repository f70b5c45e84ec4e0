"""Commands that prepare data: pack (a config's clips as WebDataset shards)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from coarse2fine.cli.options import add_common
from coarse2fine.config import load_config
from coarse2fine.data.manifest import LIST_LIMIT
from coarse2fine.data.pack import DEFAULT_SHARD_CLIPS, pack
from coarse2fine.data.shard_layout import REPORT
from coarse2fine.runtime import resolve_device
from coarse2fine.training.progress import show_bars

log = logging.getLogger("coarse2fine")


def add_parsers(sub) -> None:
    """pack: commands that prepare data."""
    p = sub.add_parser("pack", help="write a config's training and validation clips as WebDataset shards "
                                    "(FLAC, optionally features per R) for data.kind: shards")
    p.add_argument("config", help="preset name or YAML path (its data section says which clips)")
    p.add_argument("--out", required=True, help="output folder: OUT/train and OUT/val, the data.train / data.val "
                                                "of a shards config")
    p.add_argument("--features", action="store_true",
                   help="also pack each phase's features (R=1, and for Fshift each R of the schedule), float16")
    p.add_argument("--shard-clips", type=int, default=DEFAULT_SHARD_CLIPS,
                   help=f"clips per shard (default {DEFAULT_SHARD_CLIPS})")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    p.add_argument("--device", default="cpu", help="where features are computed (default cpu)")
    p.add_argument("--fresh", action="store_true", help="replace a pack of other settings in --out")
    add_common(p)


def cmd_pack(args) -> int:
    cfg = load_config(args.config, args.overrides)
    results = pack(cfg, args.out, features=args.features, shard_clips=args.shard_clips,
                   device=resolve_device(args.device, "--device"), workers=args.workers,
                   progress=show_bars(args.quiet), fresh=args.fresh)
    for r in results:
        sizes = ", ".join(f"{name} {n / 2**20:.1f} MiB" for name, n in r.bytes.items())
        print(f"{r.name}: {r.clips} clips in {r.shards} shards ({r.written} written, {r.kept} kept), "
              f"{r.skipped} skipped; {sizes}")
        skipped = json.loads((Path(args.out) / r.name / REPORT).read_text()).get("skipped") or []
        for clip in skipped[:LIST_LIMIT]:
            print(f"  skipped {clip['path']}: {clip['problem']}")
        if len(skipped) > LIST_LIMIT:
            print(f"  ... and {len(skipped) - LIST_LIMIT} more ({Path(args.out) / r.name / REPORT})")
    if any(r.skipped for r in results) and cfg.data.on_error == "raise":
        print("warning: the pack leaves bad clips out (a run of the files would stop on them: data.on_error: raise); "
              "fix or remove them and pack again to keep every clip")
    print(f"packed into {args.out}; train on it with data.kind: shards, data.train: {args.out}/train, "
          f"data.val: {args.out}/val (skipped clips: {args.out}/<split>/report.json)")
    return 0


COMMANDS = {"pack": cmd_pack}
