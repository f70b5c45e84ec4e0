"""FLOPs: how models count them analytically, and their measurement with FlopCounterMode.

Each model counts its own training FLOPs (``C2FModel.training_flops``; AST's in
:func:`coarse2fine.model.ast.ast_training_flops`); this module holds the conventions they follow
and the measurement the tests hold them to.

Counting follows ``torch.utils.flop_counter`` (one multiply-add = 2 FLOPs):

* a matmul [m, k] x [k, n] is 2mkn; the patch-embedding conv is 2 * tokens * D * (pf * pt);
* only matmuls, convolutions and attention are counted; LayerNorm, GELU, softmax, dropout,
  residual adds, bias adds and the cls/dist pooling are not (FlopCounterMode does not count them);
* backward: every Linear costs twice its forward (input and weight gradients); the first conv
  only its weight gradient (1x forward), because the input spectrogram needs no gradient;
  fused attention (the CPU flash kernel, and CUDA flash / memory-efficient kernels) recomputes
  the scores in its backward: 5 matmuls against 2 in the forward (2.5x).

So AST's ``ast_training_flops`` equals FlopCounterMode's total for a forward + backward through the
fused SDPA kernels exactly. (On the meta device SDPA falls back to the math path, whose backward
has 4 attention matmuls instead of 5; that count is lower by 2 * N^2 * D per block and clip.)
On CPU FlopCounterMode has no formula for the fused attention kernel and silently counts 0 for
it; :func:`register_cpu_sdpa_flops` adds one.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch.utils import flop_counter

log = logging.getLogger(__name__)


def _cpu_sdpa_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu`` (arguments arrive as shapes)."""
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu_backward``."""
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def register_cpu_sdpa_flops() -> None:
    """Teach FlopCounterMode the CPU flash-attention kernels (forward and backward). Idempotent.

    FlopCounterMode copies the registry when it is constructed, so call this before creating one.
    Ops that are already registered (by an earlier call or by a newer torch) are left alone.
    """
    aten = torch.ops.aten
    formulas = {
        "_scaled_dot_product_flash_attention_for_cpu": _cpu_sdpa_forward_flops,
        "_scaled_dot_product_flash_attention_for_cpu_backward": _cpu_sdpa_backward_flops,
    }
    for name, formula in formulas.items():
        if not hasattr(aten, name):
            log.debug("torch has no aten.%s; nothing to register", name)
            continue
        op = getattr(aten, name)
        if op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op)(formula)


def measured_training_flops(
    model: torch.nn.Module,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """FLOPs of one forward + backward of ``model`` on ``x``, measured by FlopCounterMode.

    ``loss_fn`` maps the model output to a scalar loss (default: the sum of the outputs; the loss
    itself adds no counted FLOPs). Gradients are accumulated into the parameters' ``.grad``.
    """
    register_cpu_sdpa_flops()
    with flop_counter.FlopCounterMode(display=False) as counter:
        out = model(x)
        loss = loss_fn(out) if loss_fn is not None else out.float().sum()
        loss.backward()
    return counter.get_total_flops()


_MEASURED: dict[tuple[str, str, str, bool], int] = {}


def measured_model_flops(model: torch.nn.Module, backward: bool = True) -> int:
    """FLOPs per clip of ``model``'s forward (+ backward) at its current geometry, measured with
    FlopCounterMode on a fresh model of the same config (random weights, on the CPU, one clip of
    zeros), once per (family, config, geometry) and cached: what a family without an analytic
    count gets. The geometry is part of the key: a family may keep it outside its config."""
    config, geo = model.config, model.geometry  # type: ignore[attr-defined]
    key = (f"{type(model).__module__}.{type(model).__qualname__}", repr(config), repr(geo), backward)
    if key not in _MEASURED:
        with torch.random.fork_rng():
            fresh = type(model)(config)
        fresh.set_geometry(geo)  # type: ignore[attr-defined]
        x = torch.zeros(1, geo.frames, geo.mel_bins)
        register_cpu_sdpa_flops()
        with flop_counter.FlopCounterMode(display=False) as counter:
            out = fresh(x)
            if backward:
                out.float().sum().backward()
        _MEASURED[key] = int(counter.get_total_flops())
        log.info("%s: %.4g %s FLOPs per clip measured with FlopCounterMode (no analytic count)", type(model).__name__,
                 _MEASURED[key], "training" if backward else "forward")
    return _MEASURED[key]
