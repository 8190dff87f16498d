"""Patch-wise AdaIN (paper Eq. 1-2): keep the injected feature's structure, take the current
generation's local statistics, per channel and per non-overlapping p x p patch.

When H or W is not a multiple of p, the last row/column of patches is smaller (it holds the
remainder), so every pixel belongs to exactly one patch. The standard deviation is the unbiased one
(as the reference); a patch of a single pixel has no spread, so only its mean is moved.
"""

from __future__ import annotations

import torch


def _check(name: str, t: torch.Tensor):
    if t.ndim != 4:
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")


def _patch_stats(x: torch.Tensor, p: int):
    """Per-patch mean and unbiased std, broadcast back to (B, C, H, W)."""
    b, c, h, w = x.shape
    ph, pw = -(-h // p), -(-w // p)  # patches per axis, the last one may be partial
    rows = torch.arange(h, device=x.device) // p
    cols = torch.arange(w, device=x.device) // p
    index = (rows[:, None] * pw + cols[None, :]).reshape(-1)  # patch id of every pixel
    flat = x.reshape(b, c, h * w)
    count = torch.zeros(ph * pw, device=x.device, dtype=x.dtype).index_add_(0, index, torch.ones_like(index, dtype=x.dtype))
    total = torch.zeros(b, c, ph * pw, device=x.device, dtype=x.dtype).index_add_(2, index, flat)
    mean = total / count
    centred = flat - mean[..., index]
    sq = torch.zeros_like(total).index_add_(2, index, centred * centred)
    var = sq / (count - 1).clamp(min=1)
    std = var.sqrt()
    single = (count == 1)[index]
    return mean[..., index].reshape(b, c, h, w), std[..., index].reshape(b, c, h, w), single.reshape(h, w)


def patch_adain(injected: torch.Tensor, current: torch.Tensor, patch_size: int = 4, eps: float = 1e-6) -> torch.Tensor:
    """out = (inj - mean(inj)) / (std(inj) + eps) * std(cur) + mean(cur), per channel and patch."""
    _check("injected", injected)
    _check("current", current)
    if injected.shape != current.shape:
        raise ValueError(f"injected: shape {tuple(injected.shape)} differs from current {tuple(current.shape)}")
    if int(patch_size) < 1:
        raise ValueError(f"patch_size: must be >= 1, got {patch_size}")
    p = int(patch_size)
    mi, si, single = _patch_stats(injected, p)
    mc, sc, _ = _patch_stats(current, p)
    out = (injected - mi) / (si + eps) * sc + mc
    return torch.where(single, injected - mi + mc, out)
