"""Looking at features (the paper's Figure 5): first three principal components as RGB, and the
semantic masks a trajectory's groups get on them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .loss import first_frame, group_terms
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


def first_frame_masks(layers: list[torch.Tensor], boxes, points, mask_mode: str = "semantic") -> torch.Tensor:
    """layers: per optimised layer (1+, M_l, H, W) maps; boxes (G, >=1, 4) and points per group on that grid ->
    (G, H, W): where each group's first-frame masks (Eq. 5-7, any layer) lie in its first box (the whole
    on-grid box when mask_mode is "off")."""
    h, w = layers[0].shape[-2:]
    b = torch.as_tensor(boxes, dtype=torch.float64)
    out = layers[0].new_zeros(len(b), h, w)
    for g in range(len(b)):
        _, region, _, masks = first_frame(layers, b, points[g], mask_mode, g)
        rows, cols = slice(region.y0, region.y1), slice(region.x0, region.x1)
        out[g, rows, cols] = 1.0 if masks is None else masks.any(0).to(out)
    return out


def maps_rgb(maps: torch.Tensor) -> torch.Tensor:
    """(F, M, H, W) query maps of the optimisation -> (F, H, W, 3): their first three principal components."""
    f, m, h, w = maps.shape
    return pca_rgb(maps.detach().permute(0, 2, 3, 1).reshape(f, h * w, m), h, w)


def loss_masks(layers: list[torch.Tensor], boxes, points, mask_mode: str = "semantic") -> torch.Tensor:
    """(G, F, H, W) where the alignment loss of each group looks in each frame (any layer): frame 0's masks in
    its first box, and for the later frames where that frame's term has weight (Eq. 8)."""
    n, _, h, w = layers[0].shape
    detached = [t.detach() for t in layers]
    b = torch.as_tensor(boxes, dtype=torch.float64)
    out = layers[0].new_zeros(len(b), n, h, w)
    out[:, 0] = first_frame_masks(detached, b, points, mask_mode)
    for g in range(len(b)):
        for term in group_terms(detached, b, points[g], mask_mode, g):
            r = term.region
            out[g, term.frame, r.y0:r.y1, r.x0:r.x1] = (term.weights > 0).any(0).to(out)
    return out


def upsample(images: torch.Tensor, height: int, width: int, mode: str = "nearest") -> torch.Tensor:
    """(N, h, w, C) or (N, h, w) -> the same at height x width."""
    x = images if images.ndim == 4 else images[..., None]
    y = F.interpolate(x.permute(0, 3, 1, 2), size=(height, width), mode=mode).permute(0, 2, 3, 1)
    return y if images.ndim == 4 else y[..., 0]
