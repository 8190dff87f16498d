"""Cross-frame alignment loss (paper Eq. 3, 5-8), computed as the reference computes it, per box group with
that group's own masks.

``layers``: the PCA-reduced query maps of the optimised layers, each (F, M_l, H, W) on the feature grid;
frame 0 is the first (injected) frame. For group i, frame j >= 1 (the paper's j >= 2) and layer l:

    w     = M_1^i[l] resized to box j  *  M_j^i[l]                              (Eq. 8's two masks)
    term  = sum over box j's cells of  w^2 * mean over l's channels of (F_j^l - SG(F_1^l[B_1^i] resized to B_j^i))^2
    loss  = sum of the terms over groups, frames and layers / sum of w over the same (the total mask count)

(``static``: M_j = 1; ``off``: both masks 1.)

Geometry, as the reference: box edges in grid cells are floored; a box covers the cells [x1, max(x1 + 1, x2))
x [y1, max(y1 + 1, y2)). Frame 0's crop of the first box is resized to box j's cell size bicubically and the
first-frame masks bilinearly (soft values), both with align_corners=False. Where box j sticks out of the grid
only its on-grid cells count, with the geometry kept; a frame whose box is entirely off the grid is skipped for
that group; a first box entirely off the grid is an error. (Where the first box sticks out, its off-grid cells
give no target: the cells they map to in later boxes are left out.)

Masks (Sec. 3.4, core/mask.py): the salient points pick frame 0's vectors at their grid cells (the paper's
F_1[P]); per layer, the cosine similarity of each cell to each point over that layer's channels, max over the
points; one exact 2-means threshold over all layers' values gives each layer's mask. The first-frame masks M_1
come the same way from frame 0's crop of the first box. Each group has its own (the reference reuses group 0's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .mask import layer_masks

MASK_MODES = ("semantic", "static", "off")
_EDGE_EPS = 1e-9  # a box edge computed as 0.9999999 of a cell is on the cell's edge


@dataclass
class Region:
    """Cells x0:x1 (columns) and y0:y1 (rows) of the feature grid; may extend beyond it."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    @property
    def size(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def clip(self, height: int, width: int) -> Region:
        return Region(max(0, self.x0), max(0, self.y0), min(width, self.x1), min(height, self.y1))

    def within(self, outer: Region) -> tuple[slice, slice]:
        """This region's rows and columns inside `outer`'s own crop."""
        return slice(self.y0 - outer.y0, self.y1 - outer.y0), slice(self.x0 - outer.x0, self.x1 - outer.x0)

    def crop(self, fmap: torch.Tensor) -> torch.Tensor:
        """The region's cells of an (…, H, W) map; it must lie on the grid (see clip)."""
        return fmap[..., self.y0:self.y1, self.x0:self.x1]


def box_cells(box) -> Region:
    """The reference's cells of a box given in grid units: edges floored, at least one cell each way."""
    x1, y1, x2, y2 = (math.floor(float(v) + _EDGE_EPS) for v in box)
    return Region(x1, y1, max(x1 + 1, x2), max(y1 + 1, y2))


def box_region(box, height: int, width: int) -> Region:
    """The on-grid cells of a box given in grid units."""
    return box_cells(box).clip(height, width)


def full_crop(fmap: torch.Tensor, cells: Region) -> torch.Tensor:
    """(C, H, W) -> (C, h, w) of all of the box's cells; cells off the grid repeat the nearest on-grid cell."""
    _, h, w = fmap.shape
    inside = cells.clip(h, w)
    crop = inside.crop(fmap)
    pad = (inside.x0 - cells.x0, cells.x1 - inside.x1, inside.y0 - cells.y0, cells.y1 - inside.y1)
    return F.pad(crop[None], pad, mode="replicate")[0] if any(pad) else crop


def resize(t: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(C, h, w) -> (C, *size) by F.interpolate (align_corners=False where it applies)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    corners = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(t[None], size=size, mode=mode, **corners)[0]


def point_vectors(feat0: torch.Tensor, points, region0: Region, box0) -> torch.Tensor:
    """(K, C): frame 0's feature vectors at the salient points' cells (grid coordinates, kept inside the first
    box's on-grid cells); the box centre when there are none."""
    pts = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2) if points is not None else torch.zeros(0, 2)
    if pts.numel() == 0:
        pts = torch.tensor([[(box0[0] + box0[2]) / 2, (box0[1] + box0[3]) / 2]], dtype=torch.float64)
    xs = pts[:, 0].floor().long().clamp(region0.x0, region0.x1 - 1)
    ys = pts[:, 1].floor().long().clamp(region0.y0, region0.y1 - 1)
    return feat0[:, ys.to(feat0.device), xs.to(feat0.device)].T


@dataclass
class Term:
    """One group's term in frame j: the on-grid cells of its box, each layer's mask weight w (L, h, w) and
    each layer's difference to the target (M_l, h, w)."""

    frame: int
    region: Region
    weights: torch.Tensor
    diffs: list[torch.Tensor]


def first_frame(layers: list[torch.Tensor], boxes: torch.Tensor, points, mask_mode: str, group: int):
    """(cells of the first box, its on-grid part, each layer's point vectors, first-frame masks (L, h0, w0)
    on the on-grid part, or None when mask_mode is off)."""
    h, w = layers[0].shape[-2:]
    cells0 = box_cells(boxes[group, 0])
    region0 = cells0.clip(h, w)
    if region0.empty:
        raise ValueError(f"boxes: the first box of group {group} lies entirely outside the {w}x{h} feature grid")
    vecs = [point_vectors(layer[0].detach(), points, region0, boxes[group, 0]) for layer in layers]
    m1 = None if mask_mode == "off" else layer_masks([region0.crop(layer[0].detach()) for layer in layers], vecs)
    return cells0, region0, vecs, m1


@dataclass
class Target:
    """One group's frame-0 quantities, all without gradient: the first box's cells, the salient points' vectors per
    layer, the first box's on-grid cells (1, h0, w0), the first-frame masks (L, h0, w0) or None, and frame 0's
    crop of the first box per layer (M_l, h0, w0)."""

    group: int
    cells0: Region
    vecs: list[torch.Tensor]
    inside0: torch.Tensor
    first_masks: torch.Tensor | None
    crops: list[torch.Tensor]


def group_target(frame0: list[torch.Tensor], boxes: torch.Tensor, points, mask_mode: str, group: int) -> Target:
    """A group's Target from frame 0's maps of each layer (M_l, H, W); boxes (G, F, 4) in grid units, float64."""
    layers = [f[None] for f in frame0]
    cells0, region0, vecs, m1 = first_frame(layers, boxes, points, mask_mode, group)
    dtype, device = frame0[0].dtype, frame0[0].device
    rows0, cols0 = region0.within(cells0)
    inside0 = torch.zeros(1, *cells0.size, dtype=dtype, device=device)
    inside0[:, rows0, cols0] = 1.0
    first_masks = None
    if m1 is not None:
        first_masks = torch.zeros(len(frame0), *cells0.size, dtype=dtype, device=device)
        first_masks[:, rows0, cols0] = m1.to(dtype)
    crops = [full_crop(f.detach(), cells0) for f in frame0]
    return Target(group, cells0, vecs, inside0, first_masks, crops)


def frame_term(target: Target, maps: list[torch.Tensor], j: int, boxes: torch.Tensor, mask_mode: str) -> Term | None:
    """Frame j's Term of one group from that frame's maps of each layer (M_l, H, W); None when its box is entirely
    off the grid."""
    h, w = maps[0].shape[-2:]
    cells = box_cells(boxes[target.group, j])
    region = cells.clip(h, w)
    if region.empty:
        return None
    rows, cols = region.within(cells)
    weights = resize(target.inside0, cells.size, "nearest-exact")[:, rows, cols].expand(len(maps), -1, -1)
    if target.first_masks is not None:
        weights = weights * resize(target.first_masks, cells.size, "bilinear")[:, rows, cols]
    if mask_mode == "semantic":
        weights = weights * layer_masks([region.crop(m.detach()) for m in maps], target.vecs).to(maps[0].dtype)
    diffs = [region.crop(m) - resize(t, cells.size, "bicubic")[:, rows, cols] for m, t in zip(maps, target.crops, strict=True)]
    return Term(j, region, weights, diffs)


def group_terms(layers: list[torch.Tensor], boxes, points, mask_mode: str = "semantic", group: int = 0):
    """Yield the Term of each frame j >= 1 whose box has cells on the grid, for one group."""
    b = torch.as_tensor(boxes, dtype=torch.float64)
    target = group_target([layer[0] for layer in layers], b, points, mask_mode, group)
    for j in range(1, layers[0].shape[0]):
        term = frame_term(target, [layer[j] for layer in layers], j, b, mask_mode)
        if term is not None:
            yield term


def frame_sums(layers: list[torch.Tensor], frames, targets: list[Target], boxes, mask_mode: str = "semantic"):
    """(sum of the terms, sum of the mask weights) of the given video frames: layers[l] holds their maps
    (len(frames), M_l, H, W) in that order; frame 0 has no term. ``alignment_loss`` is the first over the
    second, for all frames; summed over any split of the frames, both give the same."""
    b = torch.as_tensor(boxes, dtype=torch.float64)
    total = layers[0].new_zeros(())
    count = layers[0].new_zeros(())
    for target in targets:
        for row, j in enumerate(frames):
            if j == 0:
                continue
            term = frame_term(target, [layer[row] for layer in layers], j, b, mask_mode)
            if term is None:
                continue
            for weight, diff in zip(term.weights, term.diffs, strict=True):
                total = total + (weight.square() * diff.square().mean(0)).sum()
            count = count + term.weights.sum()
    return total, count


def check_inputs(layers, boxes, points, mask_mode: str) -> torch.Tensor:
    if not layers or any(t.ndim != 4 or t.shape[0] != layers[0].shape[0] or t.shape[2:] != layers[0].shape[2:] for t in layers):
        raise ValueError(f"layers: expected (F, M_l, H, W) maps of the same frames and grid, got {[tuple(t.shape) for t in layers]}")
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode: expected one of {', '.join(MASK_MODES)}, got '{mask_mode}'")
    b = torch.as_tensor(boxes, dtype=torch.float64)
    if b.ndim != 3 or b.shape[2] != 4 or b.shape[1] != layers[0].shape[0]:
        raise ValueError(f"boxes: expected (groups, {layers[0].shape[0]}, 4), got shape {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError("boxes: contain NaN or inf")
    if len(points) != b.shape[0]:
        raise ValueError(f"points: expected one entry per group ({b.shape[0]}), got {len(points)}")
    return b


def alignment_loss(layers: list[torch.Tensor], boxes, points, mask_mode: str = "semantic") -> torch.Tensor:
    """Eq. 3 + 8 over groups, frames j >= 1 (0-based) and layers, normalised by the total mask count.

    layers: per optimised layer (F, M_l, H, W); boxes: (G, F, 4) in grid units; points: G lists/tensors of
    (x, y) grid points (may be empty). Zero, with no gradient, when no mask has any weight.
    """
    b = check_inputs(layers, boxes, points, mask_mode)
    targets = [group_target([layer[0] for layer in layers], b, points[g], mask_mode, g) for g in range(b.shape[0])]
    total, count = frame_sums(layers, range(layers[0].shape[0]), targets, b, mask_mode)
    return total / count.clamp_min(1e-8)
