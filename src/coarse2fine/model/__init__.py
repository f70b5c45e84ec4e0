"""The model: AST, its geometry transfer between phases, and FLOP counting."""

from coarse2fine.model.ast import AST, PRESETS, ASTConfig, adapt_state_dict, ast_config
from coarse2fine.model.flops import (
    ast_forward_flops,
    ast_training_flops,
    measured_training_flops,
    register_cpu_sdpa_flops,
)
from coarse2fine.model.hf import load_hf_state_dict
from coarse2fine.model.patch_embed import resize_patch_kernel
from coarse2fine.model.pos_embed import resample_pos_embed

__all__ = [
    "AST", "ASTConfig", "PRESETS", "adapt_state_dict", "ast_config", "ast_forward_flops",
    "ast_training_flops", "load_hf_state_dict", "measured_training_flops", "register_cpu_sdpa_flops",
    "resample_pos_embed", "resize_patch_kernel",
]
