"""FLOPs of an AST, counted analytically from its shapes, and measured with FlopCounterMode.

Counting follows ``torch.utils.flop_counter`` (one multiply-add = 2 FLOPs):

* a matmul [m, k] x [k, n] is 2mkn; the patch-embedding conv is 2 * tokens * D * (pf * pt);
* only matmuls, convolutions and attention are counted; LayerNorm, GELU, softmax, dropout,
  residual adds, bias adds and the cls/dist pooling are not (FlopCounterMode does not count them);
* backward: every Linear costs twice its forward (input and weight gradients); the first conv
  only its weight gradient (1x forward), because the input spectrogram needs no gradient;
  fused attention (the CPU flash kernel, and CUDA flash / memory-efficient kernels) recomputes
  the scores in its backward: 5 matmuls against 2 in the forward (2.5x).

So ``ast_training_flops`` equals FlopCounterMode's total for a forward + backward through the
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

from coarse2fine.model.ast import NUM_PREFIX_TOKENS, ASTConfig

log = logging.getLogger(__name__)


def _attention_matmul_flops(cfg: ASTConfig) -> int:
    """One q @ k^T (or attn @ v) over all heads, one clip, one block: 2 * N^2 * D."""
    n = cfg.num_tokens + NUM_PREFIX_TOKENS
    return 2 * n * n * cfg.embed_dim


def _patch_embed_flops(cfg: ASTConfig) -> int:
    """Forward FLOPs of the patch-embedding conv for one clip."""
    pf, pt = cfg.patch_size
    return 2 * cfg.num_tokens * cfg.embed_dim * pf * pt


def ast_forward_flops(cfg: ASTConfig, batch_size: int = 1) -> int:
    """Forward-pass FLOPs of ``batch_size`` clips (matmuls, conv and attention only)."""
    d, n = cfg.embed_dim, cfg.num_tokens + NUM_PREFIX_TOKENS
    hidden = int(d * cfg.mlp_ratio)
    per_block = (
        2 * n * d * 3 * d  # qkv
        + 2 * _attention_matmul_flops(cfg)  # q @ k^T and attn @ v over all heads
        + 2 * n * d * d  # proj
        + 2 * n * d * hidden * 2  # fc1 + fc2
    )
    head = 2 * d * cfg.num_classes
    return batch_size * (_patch_embed_flops(cfg) + cfg.depth * per_block + head)


def ast_training_flops(cfg: ASTConfig, batch_size: int = 1) -> int:
    """Forward + backward FLOPs of one training step on ``batch_size`` clips, as FlopCounterMode
    counts them with fused attention: 3x forward, less the first conv's input gradient, plus the
    attention-score recomputation of the fused backward."""
    no_input_grad = _patch_embed_flops(cfg)
    recompute = cfg.depth * _attention_matmul_flops(cfg)
    return 3 * ast_forward_flops(cfg, batch_size) + batch_size * (recompute - no_input_grad)


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
