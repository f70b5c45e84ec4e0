"""Patch-kernel resizing: bilinear and PI-resize (FlexiViT)."""

from __future__ import annotations

import pytest
import torch

from coarse2fine.model import resize_patch_kernel
from coarse2fine.model.patch_embed import resize_2d


def _kernel(size: tuple[int, int], out: int = 5) -> torch.Tensor:
    return torch.randn(out, 1, *size, generator=torch.Generator().manual_seed(1))


def _tokens(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """<x_i, w_o> for patches x [S, h, w] and kernel w [O, 1, h, w] -> [S, O] (float64)."""
    return x.double().flatten(1) @ w.double().flatten(1).T


@pytest.mark.parametrize("method", ["bilinear", "pi"])
def test_identity_when_same_size(method):
    w = _kernel((8, 8))
    assert torch.equal(resize_patch_kernel(w, (8, 8), method), w)


@pytest.mark.parametrize("old,new", [((8, 8), (8, 16)), ((8, 8), (8, 32)), ((16, 16), (16, 64))])
def test_pi_resize_exact_when_upsampling(old, new):
    w = _kernel(old)
    w_new = resize_patch_kernel(w, new, "pi")
    assert w_new.shape == (5, 1, *new) and w_new.dtype == w.dtype
    x = torch.randn(64, *old, generator=torch.Generator().manual_seed(2))
    ref, got = _tokens(x, w), _tokens(resize_2d(x, new), w_new)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def _resize_matrix_t(old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """B^T [old, new]: row i is the resize of the i-th one-hot old patch (float64)."""
    n = old[0] * old[1]
    return resize_2d(torch.eye(n).reshape(n, *old), new).reshape(n, -1).double()


@pytest.mark.parametrize("old,new", [((8, 32), (8, 8)), ((16, 64), (16, 16)), ((8, 16), (8, 8))])
def test_pi_resize_least_squares_beats_bilinear_when_shrinking(old, new):
    w = _kernel(old)
    x = torch.randn(2000, *old, generator=torch.Generator().manual_seed(3))
    ref, x_small = _tokens(x, w), resize_2d(x, new)

    def err(method: str) -> float:
        return (_tokens(x_small, resize_patch_kernel(w, new, method)) - ref).pow(2).mean().item()

    assert err("pi") < err("bilinear")
    # Least squares: w_new minimises ||B^T w_new - w_old|| (the expected error for white input),
    # so the residual is orthogonal to the range of B^T: B (B^T w_new - w_old) = 0.
    b_t = _resize_matrix_t(old, new)
    w_old, w_pi = w.double().flatten(1).T, resize_patch_kernel(w, new, "pi").double().flatten(1).T
    grad = b_t.T @ (b_t @ w_pi - w_old)
    assert grad.abs().max() < 1e-4 * w_old.abs().max()
    w_bl = resize_patch_kernel(w, new, "bilinear").double().flatten(1).T
    assert (b_t @ w_pi - w_old).norm() < (b_t @ w_bl - w_old).norm()


def test_bilinear_resize_of_constant_kernel_is_constant():
    w = torch.full((2, 1, 8, 8), 0.5)
    torch.testing.assert_close(resize_patch_kernel(w, (8, 32), "bilinear"), torch.full((2, 1, 8, 32), 0.5))
    torch.testing.assert_close(resize_patch_kernel(w, (8, 2), "bilinear"), torch.full((2, 1, 8, 2), 0.5))


def test_dtype_kept_and_unknown_method_rejected():
    w = _kernel((4, 4)).double()
    assert resize_patch_kernel(w, (4, 8), "pi").dtype == torch.float64
    with pytest.raises(ValueError, match="unknown patch resize method"):
        resize_patch_kernel(w, (4, 8), "nearest")  # type: ignore[arg-type]


def test_pi_matrix_is_cached_and_thread_count_restored():
    threads = torch.get_num_threads()
    w = _kernel((4, 4))
    a = resize_patch_kernel(w, (4, 12), "pi")
    b = resize_patch_kernel(w, (4, 12), "pi")
    assert torch.equal(a, b) and torch.get_num_threads() == threads
