"""Looking at features (the paper's Figure 5): first three principal components as RGB, and the
semantic masks a trajectory's groups get on them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .loss import box_region, group_terms, point_vectors
from .mask import semantic_mask
from .pca import PCA


def pca_rgb(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(frames, h*w, C) -> (frames, h, w, 3) in 0..1: the first three principal components, each
    stretched over its range across all frames (so frames stay comparable)."""
    f, n, c = tokens.shape
    if n != h * w:
        raise ValueError(f"tokens: {n} tokens do not form a {h}x{w} grid")
    pca = PCA.fit(tokens.reshape(-1, c).float(), 3)
    comp = pca.transform(tokens.float())
    if comp.shape[-1] < 3:
        comp = torch.cat([comp, comp.new_zeros(f, n, 3 - comp.shape[-1])], -1)
    lo, hi = comp.amin((0, 1)), comp.amax((0, 1))
    rgb = (comp - lo) / (hi - lo).clamp_min(1e-8)
    return rgb.reshape(f, h, w, 3)


def first_frame_masks(maps: torch.Tensor, boxes, points) -> torch.Tensor:
    """maps (1+, M, H, W) feature maps; boxes (G, >=1, 4) and points per group on that grid ->
    (G, H, W) float masks of each group's semantic mask inside its first box (Eq. 5-7)."""
    _, _, h, w = maps.shape
    out = maps.new_zeros(len(boxes), h, w)
    for g, gb in enumerate(torch.as_tensor(boxes, dtype=torch.float64)):
        region = box_region(gb[0], h, w)
        if region.empty:
            continue
        crop = region.crop(maps[0].detach())
        vecs = point_vectors(maps[0].detach(), points[g], region, gb[0])
        out[g, region.y0:region.y1, region.x0:region.x1] = semantic_mask(crop, vecs).to(out)
    return out


def maps_rgb(maps: torch.Tensor) -> torch.Tensor:
    """(F, M, H, W) query maps of the optimisation -> (F, H, W, 3): their first three principal components."""
    f, m, h, w = maps.shape
    return pca_rgb(maps.detach().permute(0, 2, 3, 1).reshape(f, h * w, m), h, w)


def loss_masks(maps: torch.Tensor, boxes, points, mask_mode: str = "semantic") -> torch.Tensor:
    """(G, F, H, W) where the alignment loss of each group looks in each frame: frame 0's semantic mask in
    its first box, and for the later frames the mask of that frame's term (Eq. 8; the box when mask_mode is
    "off")."""
    n, _, h, w = maps.shape
    b = torch.as_tensor(boxes, dtype=torch.float64)
    out = maps.new_zeros(len(b), n, h, w)
    if mask_mode == "off":
        for g in range(len(b)):
            region = box_region(b[g, 0], h, w)
            out[g, 0, region.y0:region.y1, region.x0:region.x1] = 1.0
    else:
        out[:, 0] = first_frame_masks(maps, b, points)
    for g in range(len(b)):
        for j, region, mask, _ in group_terms(maps.detach(), b, points[g], mask_mode, g):
            out[g, j, region.y0:region.y1, region.x0:region.x1] = (mask > 0).to(out)
    return out


def upsample(images: torch.Tensor, height: int, width: int, mode: str = "nearest") -> torch.Tensor:
    """(N, h, w, C) or (N, h, w) -> the same at height x width."""
    x = images if images.ndim == 4 else images[..., None]
    y = F.interpolate(x.permute(0, 3, 1, 2), size=(height, width), mode=mode).permute(0, 2, 3, 1)
    return y if images.ndim == 4 else y[..., 0]
