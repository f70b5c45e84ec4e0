"""The models: a seam every family implements (:mod:`.base`), a registry by name (:mod:`.registry`),
and the families, each defined and registered in its own module: AST (:mod:`.ast`), HTS-AT
(:mod:`.htsat`), SSAST (:mod:`.ssast`). Importing this package registers them."""

from coarse2fine.model import ast, htsat, ssast  # noqa: F401,I001  (each registers its family)
from coarse2fine.model.ast import (
    AST,
    PRESETS,
    ASTConfig,
    adapt_state_dict,
    ast_config,
    ast_forward_flops,
    ast_training_flops,
)
from coarse2fine.model.base import C2FModel
from coarse2fine.model.flops import measured_training_flops, register_cpu_sdpa_flops
from coarse2fine.model.ast.hf import load_hf_state_dict
from coarse2fine.model.patch_embed import resize_patch_kernel
from coarse2fine.model.pos_embed import resample_pos_embed
from coarse2fine.model.registry import (
    Arch,
    arch_names,
    build_model,
    get_arch,
    model_from_config_dict,
    register,
)

__all__ = [
    "AST", "ASTConfig", "Arch", "C2FModel", "PRESETS", "adapt_state_dict", "arch_names", "ast_config",
    "ast_forward_flops", "ast_training_flops", "build_model", "get_arch", "load_hf_state_dict",
    "measured_training_flops", "model_from_config_dict", "register", "register_cpu_sdpa_flops",
    "resample_pos_embed", "resize_patch_kernel",
]
