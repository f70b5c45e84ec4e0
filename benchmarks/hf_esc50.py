"""ESC-50 fold 1 through Hugging Face's documented path, timed beside coarse2fine's baseline and 4-1.

What a user would otherwise run: transformers' ``ASTFeatureExtractor`` computes every clip's
features once (as ``dataset.map(preprocess)`` does in the audio-classification guide), then
``ASTForAudioClassification`` of the same shape as ours trains. It trains in a plain PyTorch loop
rather than the ``Trainer``: the leanest HF path (no per-step logging, callbacks or accelerate
wrapping), so none of the Trainer's own overhead is counted against HF. To compare pipelines
rather than recipes, the HF side gets the same optimizer and LR schedule (``coarse2fine.training.optim``),
batch size, epochs, batch order and SpecAugment as the coarse2fine config; evaluation every
epoch, outside the timed training.

Reported (machine, threads and load average with the figures): seconds per training epoch of
each pipeline (median over epochs), each run's best accuracy, and the training time each needs
to reach the HF run's best accuracy (for the HF run, the time to its best epoch), with the
speedup; HF preprocessing is counted in the HF time. All runs are made in this one process, back
to back; run it alone on the machine. coarse2fine's runs go to ``--out`` as an experiment's do: a
finished run of the same config already there is reused, not trained again (point ``--out`` at
an empty folder to time all three in this process).

Since epoch times of runs made at different moments differ with what else the machine does,
the script first times one training step of HF's model and of ours on the same batches with the
same loop body, in alternating blocks of ``--block-steps`` steps in this process (``step_ms``):
the per-epoch comparison that other load moves least.

    python benchmarks/hf_esc50.py --out runs/hf_esc50     # transformers is a test extra
    python benchmarks/hf_esc50.py --steps-only            # the per-step comparison alone, ~1 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import _common
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.experiments.grid import Variant, run_experiment
from coarse2fine.training.augment import spec_augment
from coarse2fine.training.optim import build_optimizer, build_scheduler


def hf_features(waves: torch.Tensor, cfg) -> tuple[torch.Tensor, float]:
    """ASTFeatureExtractor on every clip (the HF guide's preprocessing); returns (features, seconds)."""
    from transformers import ASTFeatureExtractor

    fx = ASTFeatureExtractor(sampling_rate=cfg.features.sample_rate, num_mel_bins=cfg.features.num_mel_bins,
                             max_length=cfg.features.target_length, mean=cfg.features.mean, std=cfg.features.std)
    t0 = time.perf_counter()
    out = [fx(list(waves[i:i + 64].numpy()), sampling_rate=cfg.features.sample_rate, return_tensors="pt")["input_values"]
           for i in range(0, len(waves), 64)]
    return torch.cat(out), time.perf_counter() - t0


def hf_model(cfg, num_classes: int):
    """ASTForAudioClassification of the config's AST size and geometry."""
    from transformers import ASTConfig, ASTForAudioClassification

    ours = cfg.baseline().phase(0, num_classes).model_config
    torch.manual_seed(cfg.train.seed)
    return ASTForAudioClassification(ASTConfig(
        hidden_size=ours.embed_dim, num_hidden_layers=ours.depth, num_attention_heads=ours.num_heads,
        intermediate_size=int(ours.embed_dim * ours.mlp_ratio), max_length=ours.target_length,
        num_mel_bins=ours.num_mel_bins, patch_size=ours.patch_size[0], frequency_stride=ours.stride[0],
        time_stride=ours.stride[1], num_labels=num_classes, layer_norm_eps=ours.layer_norm_eps,
    ))


def train_hf(cfg, train_x, train_y, val_x, val_y, num_classes: int) -> dict:
    """The HF model trained epoch by epoch in a plain loop; per-epoch training seconds (evaluation
    excluded) and validation accuracy."""
    model = hf_model(cfg, num_classes)
    opt = build_optimizer(model.parameters(), cfg.train.optim)
    steps = -(-len(train_x) // cfg.train.batch_size)
    sched = build_scheduler(opt, steps, cfg.train.optim)
    gen = torch.Generator().manual_seed(cfg.train.seed + 1)
    aug = cfg.augment
    times, accs = [], []
    for epoch in range(1, cfg.train.epochs + 1):
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch))
        model.train()
        t0 = time.perf_counter()
        for i in range(0, len(order), cfg.train.batch_size):
            idx = order[i:i + cfg.train.batch_size]
            x = spec_augment(train_x[idx], aug.freqm, aug.timem, 1, gen, aug.spec_masks, aug.mask_value)
            loss = F.cross_entropy(model(input_values=x).logits, train_y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            loss.item()
        times.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(input_values=val_x[i:i + 64]).logits.argmax(-1) for i in range(0, len(val_x), 64)])
        accs.append(float((pred == val_y).float().mean()))
    return {"epoch_s": times, "acc": accs}


def step_costs(cfg, train_x, train_y, num_classes: int, blocks: int, block: int) -> dict:
    """Milliseconds per training step of HF's model and ours on the same batches, with the same
    loop body (SpecAugment, forward, cross-entropy, backward, Adam, scheduler, ``loss.item()``),
    timed in this process in alternating blocks of ``block`` steps (a block keeps one model's
    working set warm; alternating shares whatever else the machine does between the two)."""
    torch.manual_seed(cfg.train.seed)
    ours = cfg.baseline().phase(0, num_classes).build_model()
    models = {"hf": (hf_model(cfg, num_classes), lambda m, x: m(input_values=x).logits), "ours": (ours, lambda m, x: m(x))}
    gen, aug, bs = torch.Generator().manual_seed(0), cfg.augment, cfg.train.batch_size
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(cfg.train.seed))
    batches = [order[i:i + bs] for i in range(0, len(order) - bs + 1, bs)]
    steps = {}
    for name, (model, logits) in models.items():
        opt = build_optimizer(model.parameters(), cfg.train.optim)
        steps[name] = (model.train(), logits, opt, build_scheduler(opt, len(batches), cfg.train.optim))
    times: dict[str, list[float]] = {name: [] for name in steps}
    k = 0
    for b in range(blocks + 1):  # the first round warms up
        for name, (model, logits, opt, sched) in steps.items():
            t0 = time.perf_counter()
            for _ in range(block):
                idx = batches[k % len(batches)]
                k += 1
                x = spec_augment(train_x[idx], aug.freqm, aug.timem, 1, gen, aug.spec_masks, aug.mask_value)
                loss = F.cross_entropy(logits(model, x), train_y[idx])
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                loss.item()
            if b > 0:
                times[name].append(1e3 * (time.perf_counter() - t0) / block)
    out = {name: {"ms_per_step": statistics.median(t), "min": min(t), "max": max(t)} for name, t in times.items()}
    out["hf_over_ours"] = out["hf"]["ms_per_step"] / out["ours"]["ms_per_step"]
    out["blocks"], out["block_steps"] = blocks, block
    return out


def time_to(accs: list[float], cum: list[float], target: float) -> float | None:
    """Cumulative training time at the first epoch whose accuracy reaches ``target``."""
    return next((c for a, c in zip(accs, cum) if a >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="esc50-cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--method", default="fshift")
    parser.add_argument("--out", type=Path, default=Path("runs/hf_esc50"))
    parser.add_argument("--step-blocks", type=int, default=6, help="alternating blocks of the per-step comparison")
    parser.add_argument("--block-steps", type=int, default=25, help="training steps per block")
    parser.add_argument("--steps-only", action="store_true", help="only the per-step comparison, no training runs")
    args = parser.parse_args()
    cfg = load_config(args.config, [*args.overrides, "data.in_memory=off"])
    splits = load_splits(cfg)
    num_classes = splits.train.num_classes
    train_x, hf_prep_s = hf_features(splits.train.waves, cfg)
    train_y = splits.train.targets.argmax(-1)
    per_step = step_costs(cfg, train_x, train_y, num_classes, args.step_blocks, args.block_steps)
    machine = _common.machine_info(torch.device("cpu"), ["transformers"])
    if args.steps_only:
        print(json.dumps({"config": cfg.name, "machine": machine, "step_ms": per_step}, indent=2))
        return
    val_x, _ = hf_features(splits.val.waves, cfg)
    val_y = splits.val.targets.argmax(-1)
    hf = train_hf(cfg, train_x, train_y, val_x, val_y, num_classes)
    ours_cfg = load_config(args.config, args.overrides)
    base, runs = run_experiment(ours_cfg, [Variant(args.method, "4-1")], args.out, progress=False)
    c2f = next(iter(runs.values()))
    hf_best = max(hf["acc"])
    hf_cum = list(np.cumsum(hf["epoch_s"]) + hf_prep_s)
    rows = {
        "hf": {"epoch_s": statistics.median(hf["epoch_s"]), "best_acc": hf_best, "time_to_hf_best_s": time_to(hf["acc"], hf_cum, hf_best),
               "preprocessing_s": hf_prep_s},
        "ours_baseline": {"epoch_s": statistics.median(r["train_time"] for r in base.records),
                          "best_acc": max(r["acc"] for r in base.records),
                          "time_to_hf_best_s": time_to([r["acc"] for r in base.records], [r["cum_time"] for r in base.records], hf_best)},
        "ours_4-1": {"epoch_s_fine": statistics.median(r["train_time"] for r in c2f.records if r["R"] == 1),
                     "epoch_s_coarse": statistics.median(r["train_time"] for r in c2f.records if r["R"] > 1),
                     "best_acc": max(r["acc"] for r in c2f.records),
                     "time_to_hf_best_s": time_to([r["acc"] for r in c2f.records], [r["cum_time"] for r in c2f.records], hf_best)},
    }
    ours = rows["ours_4-1"]["time_to_hf_best_s"]
    result = {"config": cfg.name, "method": args.method, "machine": machine, "step_ms": per_step,
              "rows": rows, "speedup_to_hf_best": (rows["hf"]["time_to_hf_best_s"] / ours) if ours else None,
              "hf_acc": hf["acc"], "hf_epoch_s": hf["epoch_s"]}
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hf_esc50.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
