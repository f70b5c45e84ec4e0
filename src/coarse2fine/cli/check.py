"""``coarse2fine check CONFIG``: what a run of a config would find before it trains. Every clip
is read once (bad ones listed with their problem; a pack's shards hashed against their
descriptors), then what else a run would train on: the classes per split, classes a split lacks,
clips in both splits, clips cut or padded to the clip length, warm-ups longer than their phase,
and ``model.init_from`` loaded into the config's model. Exit 1 when a run of it would stop."""

from __future__ import annotations

import logging

from coarse2fine.audio import audio_info
from coarse2fine.cli.options import add_common
from coarse2fine.config import RunConfig, load_config
from coarse2fine.data.manifest import shown_path
from coarse2fine.data.shard_layout import ShardError
from coarse2fine.data.shard_store import ShardStore, check_location, is_url
from coarse2fine.data.shards import split_sources, split_summary, verify_split
from coarse2fine.data.sources import load_splits
from coarse2fine.data.summary import class_lines, length_lines, rate_lines, shared_clips, shared_warning
from coarse2fine.logs import quiet_loggers
from coarse2fine.model.transfer import initialise
from coarse2fine.report.accounting import budget_lines
from coarse2fine.training.optim import long_warmups


def add_parsers(sub) -> None:
    p = sub.add_parser("check", help="check every clip of a config's data, list the bad ones and the classes per "
                                     "split, without training (exit 1: a run of it would stop on bad clips)")
    p.add_argument("config", help="preset name or YAML path")
    add_common(p)


def cmd_check(args) -> int:
    cfg = load_config(args.config, args.overrides)
    # Every clip is read once (nothing cached or kept), and every bad one is listed here: the data
    # layer's notes on skipping describe a run, which this is not.
    probe = cfg.replace({"data.on_error": "skip", "data.preload": False, "data.cache_dir": None, "data.in_memory": "off"})
    if probe.data.kind == "shards":
        return _check_shards(cfg, probe)
    with quiet_loggers({"coarse2fine.data": logging.ERROR}):
        splits = load_splits(probe)
    print(f"{len(splits.train)} training and {len(splits.val)} validation clips usable; {len(splits.skipped)} bad")
    for p in splits.skipped:
        print(f"  {shown_path(p.path)}: {p.problem}")
    _print_data_summary(cfg, splits)
    setups = _setups(cfg, splits.train.num_classes)
    _print_warmups(cfg, setups, len(splits.train))
    _print_budget(cfg, splits.train.num_classes, len(splits.train))
    starts = _init_from_fits(cfg, setups, (splits.train.class_names, splits.display_names))
    if splits.skipped:
        print("A run of this config " + ("trains on the usable clips and lists the bad ones in its log.json (skipped)"
                                         if cfg.data.on_error == "skip" else
                                         "stops on these before training (data.on_error: raise); data.on_error: skip "
                                         "trains on the usable clips and lists the bad ones in its log.json"))
    return 1 if (splits.skipped and cfg.data.on_error != "skip") or not starts else 0


def _print_budget(cfg: RunConfig, num_classes: int, clips: int) -> None:
    for line in budget_lines(cfg, num_classes, clips):  # what a run warns of before it trains
        print(f"warning: {line}")


def _init_from_fits(cfg: RunConfig, setups: list, classes: tuple[list[str], list[str]]) -> bool:
    """``model.init_from`` loaded into the model a run builds first (phase 0's), as the run loads
    it, for the task's ``classes`` (ids, display names): what it takes, or the error the run would
    stop on (a run of another size, say)."""
    if not cfg.model.init_from:
        return True
    try:
        summary = initialise(setups[0].build_model(), cfg.model.init_from, classes)
    except ValueError as err:
        print(f"A run of this config stops at its start: {err}")
        return False
    taken = "its weights" if summary.taken is None else f"{summary.taken} tensors"
    new = "" if summary.new is None else f", {len(summary.new)} left as initialised"
    head = f"; classifier head: {summary.head}" if summary.head else ""
    print(f"model.init_from: {taken} taken from {summary.source}{new}{head}")
    return True


def _print_data_summary(cfg: RunConfig, splits, both: list[str] | None = None) -> None:
    """The classes with their clips per split, and what a run would train on that the user may not
    expect: classes a split lacks, clips in both splits (``both``, for splits that list no files:
    a pack's, from its records), clips cut or padded to the clip length."""
    train, val = splits.train, splits.val
    lines, warnings = (class_lines(train.class_names, splits.display_names, train.class_counts(), val.class_counts())
                       if train.class_names else ([], []))  # unlabeled audio has no classes
    entries = [getattr(ds, "entries", None) for ds in (train, val)]
    if entries[0] is not None and entries[1] is not None:
        both = shared_clips(entries[0], entries[1])
        headers = {p: audio_info(p) for p in dict.fromkeys(e.path for e in [*entries[0], *entries[1]])}
        if cfg.data.kind != "unlabeled":  # long recordings are cut into windows there, not to one clip
            durations = [(e.path, headers[e.path][2] / headers[e.path][0] - e.start) for e in [*entries[0], *entries[1]]]
            lines += length_lines(durations, cfg.data.clip_seconds, cfg.data.pad)
        warnings += rate_lines([headers[e.path][0] for e in entries[0]], cfg.features.sample_rate)
    warnings += splits.listing  # what the run's data path warns of (quiet here) about the lists themselves
    if both is None and cfg.data.kind == "shards":
        lines.append("clips in both splits: not checked (the pack has no records of its clips' sources)")
    elif both:
        warnings.append(shared_warning(both))
    for line in lines:
        print(line)
    for line in warnings:
        print(f"warning: {line}")


def _setups(cfg: RunConfig, num_classes: int) -> list:
    return [cfg.phase(p, num_classes) for p in range(len(cfg.phases()))]


def _print_warmups(cfg: RunConfig, setups: list, clips: int) -> None:
    for line in long_warmups(cfg, setups, clips):  # what a run warns of before it trains, in one process
        print(f"warning: {line}")


def _check_shards(cfg: RunConfig, probe: RunConfig) -> int:
    """``check`` of packed shards: every shard of every set against its descriptor (size, sha256,
    clip count, keys), the clips the pack skipped (from its report); then the splits opened as a
    run opens them (sample rate, clip length, index, classes, loss) and what each phase reads."""
    store = ShardStore(cfg.data.shard_cache)
    bad = 0
    sources: dict[str, list[str] | None] = {}
    roots = {split: cfg.data.split_path(split) for split in ("train", "val")}
    for split, root in roots.items():
        check_location(root, f"data.{split}")  # a pack's top folder, or none, named as a run names it
    for split, root in roots.items():
        if is_url(root):  # every shard is downloaded to be hashed: say how much first
            audio = split_summary(root)
            size = audio.bytes + sum(int(e.get("bytes") or 0) for e in audio.meta.get("feature_sets") or [])
            print(f"{split}: downloading what the cache ({store.cache_dir}) lacks of {size / 2**30:.2f} GiB of shards "
                  f"to hash them ({root})", flush=True)
        audio, sets, problems = verify_split(root, store)
        sources[split] = split_sources(root, audio)
        skipped = int(audio.meta.get("num_skipped", 0))
        state = "ok" if not problems else f"{len(problems)} bad"
        print(f"{split}: {audio.num_clips} clips in {len(audio.shards)} shards (sets: {', '.join(sets)}): {state}; "
              f"{skipped} clip(s) skipped when packed ({root}/report.json)")
        for line in problems:
            print(f"  {line}")
        bad += len(problems)
    try:
        with quiet_loggers({"coarse2fine.data": logging.ERROR}):
            splits = load_splits(probe)
        train = splits.train
        setups = _setups(cfg, train.num_classes)
        reads = [train.feature_set(s.features) for s in setups]
    except (ShardError, ValueError) as err:
        print(f"A run of this config stops at its start: {err}")
        return 1
    for s, found in zip(setups, reads):
        print(f"phase {s.index + 1} (R={s.R}): " + (f"packed features ({found.name})" if found is not None else
                                                "waveforms, its features computed at every step (no packed set of "
                                                "this phase's features at this clip length; pack --features with "
                                                "this config packs them)"))
    both = (sorted(set(sources["train"]) & set(sources["val"]))
            if sources["train"] is not None and sources["val"] is not None else None)
    _print_data_summary(cfg, splits, both)
    _print_warmups(cfg, setups, len(train))
    _print_budget(cfg, train.num_classes, len(train))
    starts = _init_from_fits(cfg, setups, (splits.train.class_names, splits.display_names))
    return 1 if bad or not starts else 0


COMMANDS = {"check": cmd_check}
