"""Composite condition images (the paper's mixed modalities, e.g. depth for the background and a
sketch for the foreground) into one condition image. Images are [B, H, W, C] floats in 0..1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SPLITS = ("mask", "left | right", "top | bottom", "inside box")


def split_mask(height: int, width: int, mode: str, position: float = 0.5, box=None) -> torch.Tensor:
    """A [H, W] mask (1 = take the overlay) for a simple split.

    ``left | right``: the overlay fills the right part, from ``position`` (fraction of the width) on;
    ``top | bottom``: the overlay fills the bottom part; ``inside box``: the overlay fills the
    (x1, y1, x2, y2) box in pixels (clipped to the image).
    """
    if mode not in SPLITS[1:]:
        raise ValueError(f"mode: expected one of {', '.join(SPLITS[1:])}, got '{mode}'")
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"position: must be within 0..1, got {position}")
    mask = torch.zeros(height, width)
    if mode == "left | right":
        mask[:, round(position * width):] = 1.0
    elif mode == "top | bottom":
        mask[round(position * height):, :] = 1.0
    else:
        if box is None or len(box) != 4:
            raise ValueError("box: 'inside box' needs (x1, y1, x2, y2)")
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box: x2 > x1 and y2 > y1 are required, got {tuple(box)}")
        mask[max(0, y1):max(0, min(height, y2)), max(0, x1):max(0, min(width, x2))] = 1.0
        if mask.sum() == 0:
            raise ValueError(f"box: {tuple(box)} lies entirely outside the {width}x{height} image")
    return mask


def feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Soften a [H, W] mask's edge with a box blur of ``radius`` pixels (0 = hard edge)."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    m = F.pad(mask[None, None], (radius,) * 4, mode="replicate")
    return F.avg_pool2d(m, k, stride=1)[0, 0]


def _fit(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if image.shape[1:3] == (height, width):
        return image
    return F.interpolate(image.movedim(-1, 1), size=(height, width), mode="bilinear", align_corners=False).movedim(1, -1)


def fit_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A [H, W] or [B, H, W] mask as [B, height, width] in 0..1 (bilinear when resized)."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError("mask: expected [H, W] or [B, H, W]")
    if mask.shape[1:] != (height, width):
        mask = F.interpolate(mask[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return mask.clamp(0, 1)


def composite(base: torch.Tensor, overlay: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """base * (1 - mask) + overlay * mask; the overlay and mask are resized to the base's size."""
    if base.ndim != 4 or overlay.ndim != 4:
        raise ValueError("base/overlay: expected IMAGE tensors [B, H, W, C]")
    if base.shape[0] != overlay.shape[0] and 1 not in (base.shape[0], overlay.shape[0]):
        raise ValueError(f"overlay: batch of {overlay.shape[0]} does not match the base's {base.shape[0]}")
    _, h, w, c = base.shape
    overlay = _fit(overlay[..., :c], h, w).to(base)
    mask = fit_mask(mask, h, w).to(base)[..., None]
    return base * (1 - mask) + overlay * mask
