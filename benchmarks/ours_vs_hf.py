"""Training and eval throughput of coarse2fine's AST against transformers' ASTForAudioClassification.

Both models get the same shape (hidden size, layers, heads, MLP width, 16x16 patches, strides,
max_length, mel bins, classes, LayerNorm eps), the same weights (the HF model's state dict,
loaded into ours with ``coarse2fine.model.ast.hf.load_hf_state_dict``), the same input, targets,
loss (cross-entropy) and optimizer (Adam from ``coarse2fine.training.optim.build_optimizer``). Before
timing, the logits of every HF variant are checked against ours (max |diff| <= 1e-4, eval mode)
and so is the loss of the first training step; the check is printed, and a failure makes the
script exit with status 2 after writing its JSON.

HF is timed with its default attention implementation (what ``from_pretrained`` would pick;
transformers 5 picks ``sdpa``) and with each one named in ``--attn`` (``eager``, ``sdpa``;
duplicates of the default are timed once). Training step = forward + loss + backward + Adam +
``loss.item()``; eval = forward under ``torch.no_grad()`` in eval mode (ours also under
``torch.inference_mode()``). All variants are timed in interleaved rounds (one step of each per
round), medians reported. speedup = HF time / our time (> 1: ours faster; target >= 1).

    python benchmarks/ours_vs_hf.py                  # tiny shape, 1024 frames, batch 8
    python benchmarks/ours_vs_hf.py --shape base --batch-size 2 --target-length 512
    python benchmarks/ours_vs_hf.py --quick          # ~20 s smoke run
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import _common
from coarse2fine.model import AST, ast_config
from coarse2fine.model.ast.hf import ast_config_from_hf, load_hf_state_dict
from coarse2fine.training.optim import OptimConfig, build_optimizer

NAME = "ours_vs_hf"
TOLERANCE = 1e-4
NUM_MEL_BINS = 128
PATCH = 16
NUM_CLASSES = 527


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default=None, help="AST preset: micro, tiny, small, base (default: tiny)")
    p.add_argument("--target-length", type=int, default=None, help="input frames = HF max_length (default: 1024; --quick: 256)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per training step (default: 8; --quick: 2)")
    p.add_argument("--eval-batch-size", type=int, default=None, help="clips per eval forward (default: 8; --quick: 4)")
    p.add_argument("--attn", default="eager,sdpa",
                   help="HF attn_implementation values to time besides the default (comma-separated)")
    p.add_argument("--eval-steps", type=int, default=None, help="timed eval forwards (default: --steps)")
    p.add_argument("--no-fused-adam-row", dest="fused_adam_row", action="store_false",
                   help="leave out the informational 'ours + fused Adam' row")
    _common.add_common_args(p, NAME)
    args = p.parse_args(argv)
    quick = args.quick
    args.shape = args.shape or "tiny"
    if args.target_length is None:
        args.target_length = 256 if quick else 1024
    if args.batch_size is None:
        args.batch_size = 2 if quick else 8
    if args.eval_batch_size is None:
        args.eval_batch_size = 4 if quick else 8
    if args.warmup is None:
        args.warmup = 1
    if args.steps is None:
        args.steps = 2 if quick else 6
    if args.eval_steps is None:
        args.eval_steps = args.steps
    return args


def hf_config(args: argparse.Namespace) -> Any:
    import transformers

    ours = ast_config(args.shape, num_classes=NUM_CLASSES, num_mel_bins=NUM_MEL_BINS, target_length=args.target_length)
    return transformers.ASTConfig(
        hidden_size=ours.embed_dim,
        num_hidden_layers=ours.depth,
        num_attention_heads=ours.num_heads,
        intermediate_size=int(ours.embed_dim * ours.mlp_ratio),
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=ours.layer_norm_eps,
        patch_size=PATCH,
        frequency_stride=PATCH,
        time_stride=PATCH,
        max_length=args.target_length,
        num_mel_bins=NUM_MEL_BINS,
        num_labels=NUM_CLASSES,
        qkv_bias=ours.qkv_bias,
    ), ours


def build_hf(cfg: Any, impl: str | None, state: dict[str, torch.Tensor] | None, device: torch.device) -> nn.Module:
    import transformers

    cls = transformers.ASTForAudioClassification
    cfg = copy.deepcopy(cfg)  # the model keeps (and _from_config edits) its config: one per model
    model = cls(cfg) if impl is None else cls._from_config(cfg, attn_implementation=impl)
    if state is not None:
        model.load_state_dict(state)
    return model.to(device)


def randomise_(model: nn.Module, seed: int) -> None:
    """HF zero-initialises tokens, positional embedding and biases: give every tensor values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.05 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def fused_adam(model: nn.Module) -> torch.optim.Optimizer | None:
    """Adam with the settings of build_optimizer but ``fused=True``; None where torch has no such kernel."""
    cfg = OptimConfig()
    try:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                fused=True)
    except (RuntimeError, ValueError, TypeError):
        return None


class Variant:
    """A model under test with its optimizer and step functions."""

    def __init__(self, label: str, impl: str, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device, optimizer: torch.optim.Optimizer | None = None, eval_modes: Sequence[str] = ("no_grad",)):
        self.label, self.impl, self.model, self.forward, self.device = label, impl, model, forward, device
        self.optimizer = optimizer or build_optimizer(model.parameters(), OptimConfig())
        self.eval_modes = tuple(eval_modes)
        self.train_times: dict[str, list[float]] = {"fwd_bwd": [], "optimizer": [], "step": []}
        self.eval_times: dict[str, list[float]] = {"no_grad": [], "inference_mode": []}
        self.first_loss: float | None = None

    def train_step(self, x: torch.Tensor, y: torch.Tensor, record: bool) -> float:
        self.model.train()
        timer = _common.Timer(self.device)
        _common.sync(self.device)
        t0 = time.perf_counter()
        with timer("fwd_bwd"):
            loss = F.cross_entropy(self.forward(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with timer("optimizer"):
            self.optimizer.step()
            value = loss.item()
        _common.sync(self.device)
        total = time.perf_counter() - t0
        if record:
            for k, v in timer.times.items():
                self.train_times[k].append(v)
            self.train_times["step"].append(total)
        return value

    def eval_step(self, x: torch.Tensor, mode: str, record: bool) -> None:
        self.model.eval()
        ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()

        def run() -> None:
            with ctx:
                self.forward(x)

        dt = _common.time_call(run, self.device)
        if record:
            self.eval_times[mode].append(dt)


def check_logits(ours: Variant, others: list[Variant], x: torch.Tensor) -> list[dict[str, Any]]:
    checks = []
    with torch.no_grad():
        ours.model.eval()
        ref = ours.forward(x)
        for v in others:
            v.model.eval()
            diff = (v.forward(x) - ref).abs().max().item()
            checks.append({"variant": v.label, "max_abs_logit_diff": diff, "ok": bool(diff <= TOLERANCE)})
    return checks


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = _common.setup(args)
    info = _common.machine_info(device, packages=("transformers",))
    cfg, expected = hf_config(args)

    # Reference weights: one HF model, randomised, its state dict loaded into every variant.
    torch.manual_seed(args.seed)
    ref_hf = build_hf(cfg, None, None, torch.device("cpu"))
    randomise_(ref_hf, args.seed)
    state = {k: v.clone() for k, v in ref_hf.state_dict().items()}
    default_impl = ref_hf.config._attn_implementation
    del ref_hf

    ours_cfg = ast_config_from_hf(cfg)
    mismatched = {k for k, v in expected.to_dict().items() if ours_cfg.to_dict()[k] != v and k != "num_classes"}
    if mismatched:
        raise SystemExit(f"HF config does not reproduce our {args.shape} preset: {sorted(mismatched)}")
    ours_model = AST(ours_cfg)
    load_hf_state_dict(ours_model, state)
    ours_model.to(device)
    variants = [Variant("ours", "sdpa (fused qkv)", ours_model, ours_model, device,
                        eval_modes=("no_grad", "inference_mode"))]
    fused_model = copy.deepcopy(ours_model)
    fused_opt = fused_adam(fused_model) if args.fused_adam_row else None

    skipped: list[dict[str, str]] = []
    impls: list[tuple[str, str | None]] = [(f"hf default ({default_impl})", None)]
    for impl in (a.strip() for a in args.attn.split(",") if a.strip()):
        if impl != default_impl:
            impls.append((f"hf {impl}", impl))
    for label, impl in impls:
        try:
            model = build_hf(cfg, impl, state, device)
        except Exception as exc:  # an implementation this transformers / torch does not offer
            skipped.append({"variant": label, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        variants.append(Variant(label, model.config._attn_implementation, model,
                                lambda x, m=model: m(input_values=x).logits, device))
    if fused_opt is not None:  # informational: what torch.optim.Adam(fused=True) would give ours
        variants.append(Variant("ours + fused Adam", "sdpa (fused qkv)", fused_model, fused_model, device, fused_opt))
    elif args.fused_adam_row:
        skipped.append({"variant": "ours + fused Adam", "reason": "torch.optim.Adam(fused=True) unsupported here"})

    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch_size, args.target_length, NUM_MEL_BINS, generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=gen).to(device)
    x_eval = torch.randn(args.eval_batch_size, args.target_length, NUM_MEL_BINS, generator=gen).to(device)

    checks = check_logits(variants[0], variants[1:], x)

    # Training: interleaved rounds; the first (warm-up) step also checks that the losses agree.
    for i in range(args.warmup + args.steps):
        for v in variants:
            loss = v.train_step(x, y, record=i >= args.warmup)
            if i == 0:
                v.first_loss = loss
    for v, c in zip(variants[1:], checks):
        c["first_step_loss_diff"] = abs(v.first_loss - variants[0].first_loss)
        c["ok"] = c["ok"] and c["first_step_loss_diff"] <= TOLERANCE

    # Eval: no_grad for all, inference_mode for ours too (the fused-Adam copy is the same model: skipped).
    evaluated = [v for v in variants if v.label != "ours + fused Adam"]
    for i in range(args.warmup + args.eval_steps):
        for v in evaluated:
            for mode in v.eval_modes:
                v.eval_step(x_eval, mode, record=i >= args.warmup)

    ours = variants[0]
    o_step, o_step_min = _common.median(ours.train_times["step"]), min(ours.train_times["step"])
    o_eval, o_eval_min = _common.median(ours.eval_times["no_grad"]), min(ours.eval_times["no_grad"])
    rows = []
    for v in variants:
        step, step_min = _common.median(v.train_times["step"]), min(v.train_times["step"])
        evals = v.eval_times["no_grad"]
        ev = _common.median(evals) if evals else None
        ev_min = min(evals) if evals else None
        im = _common.median(v.eval_times["inference_mode"]) if v.eval_times["inference_mode"] else None
        rows.append({
            "variant": v.label,
            "attn_implementation": v.impl,
            "optimizer": "Adam(fused=True)" if v.label == "ours + fused Adam" else "build_optimizer (Adam)",
            "train_step_s": step,
            "train_step_min_s": step_min,
            "fwd_bwd_s": _common.median(v.train_times["fwd_bwd"]),
            "optimizer_s": _common.median(v.train_times["optimizer"]),
            "train_samples_per_s": args.batch_size / step,
            "train_speedup_of_ours": step / o_step,
            "train_speedup_of_ours_best": step_min / o_step_min,
            "eval_s": ev,
            "eval_min_s": ev_min,
            "eval_samples_per_s": None if ev is None else args.eval_batch_size / ev,
            "eval_speedup_of_ours": None if ev is None else ev / o_eval,
            "eval_speedup_of_ours_best": None if ev_min is None else ev_min / o_eval_min,
            "eval_inference_mode_s": im,
            "eval_inference_mode_samples_per_s": None if im is None else args.eval_batch_size / im,
            "first_step_loss": v.first_loss,
            "train_step_times_s": v.train_times["step"],
            "eval_times_s": evals,
        })

    lines = [
        f"{NAME}: coarse2fine AST vs transformers ASTForAudioClassification, same weights and input",
        _common.format_machine(info),
        f"shape {args.shape} (hidden {cfg.hidden_size}, layers {cfg.num_hidden_layers}, heads {cfg.num_attention_heads}), "
        f"{args.target_length} frames x {NUM_MEL_BINS} mel bins, {PATCH}x{PATCH} patches, {ours_cfg.num_tokens} tokens; "
        f"train batch {args.batch_size}, eval batch {args.eval_batch_size}; median of {args.steps} (eval {args.eval_steps}) "
        f"after {args.warmup} warm-up, interleaved rounds",
        "",
        "equivalence check (eval logits on the training batch, and the first training-step loss):",
    ]
    for c in checks:
        lines.append(f"  {c['variant']:<22} max |logit diff| {c['max_abs_logit_diff']:.2e}, "
                     f"first-step loss diff {c['first_step_loss_diff']:.2e}  -> {'OK' if c['ok'] else 'FAIL'} "
                     f"(tolerance {TOLERANCE:g})")
    for sk in skipped:
        lines.append(f"  {sk['variant']:<22} skipped: {sk['reason']}")

    def x_(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}x"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{1000 * v:.1f}"

    headers = ["variant", "attention", "step ms", "best", "fwd+bwd ms", "adam ms", "train samples/s",
               "ours speedup", "(best)", "eval ms", "best", "eval samples/s", "ours speedup", "(best)",
               "inference_mode ms"]
    table = [[
        r["variant"], r["attn_implementation"], ms(r["train_step_s"]), ms(r["train_step_min_s"]), ms(r["fwd_bwd_s"]),
        ms(r["optimizer_s"]), f"{r['train_samples_per_s']:.2f}",
        "-" if r["variant"] == "ours" else x_(r["train_speedup_of_ours"]),
        "-" if r["variant"] == "ours" else x_(r["train_speedup_of_ours_best"]),
        ms(r["eval_s"]), ms(r["eval_min_s"]), _common.fmt(r["eval_samples_per_s"], ".2f"),
        "-" if r["variant"] == "ours" else x_(r["eval_speedup_of_ours"]),
        "-" if r["variant"] == "ours" else x_(r["eval_speedup_of_ours_best"]),
        ms(r["eval_inference_mode_s"]),
    ] for r in rows]
    lines += ["", _common.format_table(headers, table), "",
              "ours speedup = variant time / our time, from medians and (best) from each one's fastest step:",
              "> 1 means ours is faster (target >= 1 against every HF variant). Every row uses the same Adam",
              "(coarse2fine.training.optim.build_optimizer) except 'ours + fused Adam', which shows what",
              "torch.optim.Adam(fused=True) would change (< 1: faster than ours today)."]
    print("\n".join(lines))

    result = {
        "benchmark": NAME,
        "machine": info,
        "settings": {
            "shape": args.shape, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.intermediate_size,
            "patch_size": PATCH, "stride": [PATCH, PATCH], "max_length": args.target_length,
            "num_mel_bins": NUM_MEL_BINS, "num_labels": NUM_CLASSES, "tokens": ours_cfg.num_tokens,
            "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size, "warmup": args.warmup,
            "steps": args.steps, "eval_steps": args.eval_steps, "quick": args.quick, "device": args.device,
            "threads": torch.get_num_threads(), "seed": args.seed, "hf_default_attn_implementation": default_impl,
        },
        "tolerance": TOLERANCE,
        "checks": checks,
        "skipped": skipped,
        "results": rows,
    }
    path = _common.write_json(args.out, result)
    print(f"\nwrote {path}")
    if not all(c["ok"] for c in checks):
        print("equivalence check FAILED: the timings compare different computations", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(0 if all(c["ok"] for c in main()["checks"]) else 2)
