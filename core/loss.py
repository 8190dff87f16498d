"""Cross-frame alignment loss (paper Eq. 3 and 8), per box group with that group's own masks.

feats (F, M, H, W): the PCA-reduced query maps of all frames on the feature grid; frame 0 is the
first (injected) frame. For group i and frame j >= 1 (the paper's j >= 2):

    L_ij = || M_1^i * M_j^i * (F_j[B_j^i] - SG(F_1[B_1^i] resized to B_j^i)) ||^2 / area(mask)

Boxes are continuous (x1, y1, x2, y2) on the grid. A box covers the cells floor(x1)..ceil(x2)-1
(at least one cell). The target is frame 0's box content mapped onto box j (bilinear, like resizing
the crop, align_corners=False; masks by centre-aligned nearest); where a box sticks out of the grid only its inside part counts, with
the geometry kept (the target is mapped as for the full box, then cropped). A frame whose box is
entirely outside is skipped for that group; a first box entirely outside is an error.
The reference reuses object 0's first-frame mask for every object; here each group has its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .mask import semantic_mask

MASK_MODES = ("semantic", "static", "off")


@dataclass
class Region:
    """The cells of a box that lie on the grid: rows y0:y1, columns x0:x1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    def crop(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap[..., self.y0:self.y1, self.x0:self.x1]


def box_region(box, height: int, width: int) -> Region:
    x1, y1, x2, y2 = (float(v) for v in box)
    cx0, cy0 = math.floor(x1), math.floor(y1)
    cx1, cy1 = max(cx0 + 1, math.ceil(x2)), max(cy0 + 1, math.ceil(y2))
    return Region(max(0, cx0), max(0, cy0), min(width, cx1), min(height, cy1))


def _source_coords(region: Region, box_j, box_0, src_region: Region):
    """For each cell of `region` (in box j), its continuous source position in box 0, normalised to
    src_region for grid_sample, and whether that position lies on the grid."""
    xs = torch.arange(region.x0, region.x1, dtype=torch.float64) + 0.5
    ys = torch.arange(region.y0, region.y1, dtype=torch.float64) + 0.5
    bj, b0 = [float(v) for v in box_j], [float(v) for v in box_0]
    sx = b0[0] + (xs - bj[0]) / (bj[2] - bj[0]) * (b0[2] - b0[0])
    sy = b0[1] + (ys - bj[1]) / (bj[3] - bj[1]) * (b0[3] - b0[1])
    nx = 2 * (sx - src_region.x0) / (src_region.x1 - src_region.x0) - 1
    ny = 2 * (sy - src_region.y0) / (src_region.y1 - src_region.y0) - 1
    return nx, ny, sx, sy


def map_from_first_box(src: torch.Tensor, src_region: Region, region: Region, box_j, box_0, grid_hw, mode="bilinear"):
    """Sample `src` (C, h0, w0), the crop of box 0, at the positions of box j's cells.

    Returns (values (C, h, w), valid (h, w) bool): valid where the source position is on the grid."""
    nx, ny, sx, sy = _source_coords(region, box_j, box_0, src_region)
    gy, gx = torch.meshgrid(ny, nx, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].to(src.device, src.dtype if src.is_floating_point() else torch.float32)
    inp = src[None] if src.is_floating_point() else src[None].float()
    out = F.grid_sample(inp, grid, mode=mode, padding_mode="border", align_corners=False)[0]
    h, w = grid_hw
    vy = (sy >= 0) & (sy < h)
    vx = (sx >= 0) & (sx < w)
    valid = (vy[:, None] & vx[None, :]).to(src.device)
    return out, valid


def point_vectors(feat0: torch.Tensor, points, region0: Region, box0) -> torch.Tensor:
    """Feature vectors of frame 0 at the salient points (grid coords); the box centre when none."""
    _, h, w = feat0.shape
    pts = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2) if points is not None else torch.zeros(0, 2)
    if pts.numel() == 0:
        pts = torch.tensor([[(box0[0] + box0[2]) / 2, (box0[1] + box0[3]) / 2]], dtype=torch.float64)
    xs = pts[:, 0].floor().long().clamp(region0.x0, region0.x1 - 1).clamp(0, w - 1)
    ys = pts[:, 1].floor().long().clamp(region0.y0, region0.y1 - 1).clamp(0, h - 1)
    return feat0[:, ys.to(feat0.device), xs.to(feat0.device)].T


def group_terms(feats: torch.Tensor, boxes, points, mask_mode: str = "semantic", group: int = 0):
    """Yield (frame j, region j, mask (h, w) float, diff (M, h, w)) for one group, frames j >= 1."""
    n_frames, _, h, w = feats.shape
    b = torch.as_tensor(boxes, dtype=torch.float64)
    region0 = box_region(b[group, 0], h, w)
    if region0.empty:
        raise ValueError(f"boxes: the first box of group {group} lies entirely outside the {w}x{h} feature grid")
    target_src = region0.crop(feats[0].detach())
    vecs = point_vectors(feats[0].detach(), points, region0, b[group, 0])
    m1 = semantic_mask(target_src, vecs).float() if mask_mode == "semantic" or mask_mode == "static" else None
    for j in range(1, n_frames):
        region = box_region(b[group, j], h, w)
        if region.empty:
            continue
        target, valid = map_from_first_box(target_src, region0, region, b[group, j], b[group, 0], (h, w))
        mask = valid.to(feats.dtype)
        if m1 is not None:
            m1_j, _ = map_from_first_box(m1[None], region0, region, b[group, j], b[group, 0], (h, w), mode="nearest")
            mask = mask * m1_j[0].to(feats.dtype)
        current = region.crop(feats[j])
        if mask_mode == "semantic":
            mask = mask * semantic_mask(current.detach(), vecs).to(feats.dtype)
        yield j, region, mask, current - target


def alignment_loss(feats: torch.Tensor, boxes, points, mask_mode: str = "semantic") -> torch.Tensor:
    """Eq. 3 + 8 summed over groups and frames j >= 1 (0-based), each term normalised by its mask area.

    boxes: (G, F, 4) on the feature grid; points: G lists/tensors of (x, y) grid points (may be empty).
    """
    if feats.ndim != 4:
        raise ValueError(f"feats: expected (F, M, H, W), got shape {tuple(feats.shape)}")
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode: expected one of {', '.join(MASK_MODES)}, got '{mask_mode}'")
    b = torch.as_tensor(boxes, dtype=torch.float64)
    if b.ndim != 3 or b.shape[2] != 4 or b.shape[1] != feats.shape[0]:
        raise ValueError(f"boxes: expected (groups, {feats.shape[0]}, 4), got shape {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError("boxes: contain NaN or inf")
    if len(points) != b.shape[0]:
        raise ValueError(f"points: expected one entry per group ({b.shape[0]}), got {len(points)}")
    total = feats.new_zeros(())
    for g in range(b.shape[0]):
        for _, _, mask, diff in group_terms(feats, b, points[g], mask_mode, g):
            total = total + (mask * diff.pow(2)).sum() / mask.sum().clamp_min(1.0)
    return total
