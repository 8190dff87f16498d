"""Finding the miniature's objects in decoded frames, and the metrics built on it.

Objects are saturated, backgrounds nearly grey (dev/miniature/scenes.py), so an object is a connected region
of saturated pixels. The locator knows nothing about the method or the boxes beyond frame 0:

- ``find(frame)``: the regions of one frame (HSV saturation >= 0.35 and value >= 0.15, a small closing,
  regions of at least MIN_AREA pixels), each with its centroid (pixels of the region and its one-pixel
  rim weighted by a saturation ramp, so anti-aliased edges count in part), area, bounding box and mean hue;
- ``track(frames, starts)``: one track per object: in frame 0 the regions are matched to the objects'
  expected first positions (the condition's objects), in every later frame to the track's previous
  position (nearest, with a hue term); an object with no region left keeps its last position and the
  frame is counted as missing.

Metrics: ObjMC is the mean distance in pixels between each frame's tracked centre and its box centre
(over all frames and objects; the paper's Table 1/2 metric, with boxes in place of tracked ground truth);
first-frame IoU is the IoU of frame 0's object pixels with the condition scene's object mask.
Every shape of the generator is centrally symmetric, so a region's centroid is its box centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .scenes import HUES, hue, saturation

SATURATION = 0.35
SOFT = (0.15, 0.55)  # saturation ramp of a pixel's weight in a region's centroid (sub-pixel edges)
VALUE = 0.15
MIN_AREA = 60
HUE_WEIGHT = 0.25  # pixels of distance per degree of hue difference, when matching regions to tracks


@dataclass
class Region:
    centre: np.ndarray  # (x, y) pixels
    area: float
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive)
    hue: float  # degrees
    saturation: float


def object_pixels(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) in 0..1 -> (H, W) bool: saturated, not dark, closed, without specks."""
    f = frame.float().clamp(0, 1)
    mask = ((saturation(f) >= SATURATION) & (f.amax(0) >= VALUE)).cpu().numpy()
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=1, border_value=0) | mask
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    areas = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = areas >= MIN_AREA
    return keep[labels]


def _circular_mean(deg: np.ndarray) -> float:
    rad = np.deg2rad(deg)
    return float(np.rad2deg(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360)


def hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def find(frame: torch.Tensor) -> list[Region]:
    """The object regions of one (3, H, W) frame, largest first."""
    mask = object_pixels(frame)
    labels, n = ndimage.label(mask)
    if n == 0:
        return []
    f = frame.float().clamp(0, 1)
    hues = hue(f).cpu().numpy()
    sats = saturation(f).cpu().numpy()
    soft = np.clip((sats - SOFT[0]) / (SOFT[1] - SOFT[0]), 0, 1) * (f.amax(0).cpu().numpy() >= VALUE)
    grown = ndimage.grey_dilation(labels, size=(3, 3))  # a region and its anti-aliased rim
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        sub = labels[sl] == i
        ys, xs = np.nonzero(sub)
        ys, xs = ys + sl[0].start, xs + sl[1].start
        ry, rx = np.nonzero((grown == i) & ((labels == i) | (labels == 0)))
        w = soft[ry, rx]
        out.append(Region(
            centre=np.array([(w * (rx + 0.5)).sum() / w.sum(), (w * (ry + 0.5)).sum() / w.sum()]),
            area=float(len(xs)),
            box=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
            hue=_circular_mean(hues[ys, xs]),
            saturation=float(sats[ys, xs].mean()),
        ))
    return sorted(out, key=lambda r: -r.area)


@dataclass
class Track:
    centres: np.ndarray  # (F, 2)
    found: np.ndarray  # (F,) bool: a region was matched in that frame
    regions: list[Region | None]


def _match(regions: list[Region], anchors: np.ndarray, hues: list[float | None]) -> list[int | None]:
    """For each anchor, the index of its region (Hungarian on distance + hue difference), or None."""
    if not regions:
        return [None] * len(anchors)
    cost = np.zeros((len(anchors), len(regions)))
    for i, a in enumerate(anchors):
        for j, r in enumerate(regions):
            cost[i, j] = np.linalg.norm(r.centre - a) + (HUE_WEIGHT * hue_distance(hues[i], r.hue) if hues[i] is not None else 0)
    rows, cols = linear_sum_assignment(cost)
    out: list[int | None] = [None] * len(anchors)
    for r, c in zip(rows, cols, strict=True):
        out[r] = int(c)
    return out


def track(frames: torch.Tensor, starts: np.ndarray) -> list[Track]:
    """frames (F, 3, H, W); starts (objects, 2): the objects' expected centres in frame 0."""
    starts = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
    n, f = len(starts), frames.shape[0]
    centres = np.zeros((n, f, 2))
    found = np.zeros((n, f), dtype=bool)
    regions: list[list[Region | None]] = [[None] * f for _ in range(n)]
    anchors, hues = starts.copy(), [None] * n
    for j in range(f):
        cand = find(frames[j])
        pick = _match(cand, anchors, hues)
        for i, k in enumerate(pick):
            if k is not None:
                r = cand[k]
                anchors[i] = r.centre
                hues[i] = r.hue if hues[i] is None else hues[i]
                found[i, j] = True
                regions[i][j] = r
            centres[i, j] = anchors[i]
    return [Track(centres[i], found[i], regions[i]) for i in range(n)]


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) boxes -> (..., 2) centres."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2], -1)


def objmc(frames: torch.Tensor, boxes: np.ndarray) -> dict:
    """ObjMC of one video against its (objects, F, 4) pixel boxes: mean distance (pixels) of the tracked
    centres from the box centres over all frames and objects; also the share of frames found."""
    targets = box_centres(boxes)
    tracks = track(frames, targets[:, 0])
    dist = np.stack([np.linalg.norm(t.centres - targets[i], axis=1) for i, t in enumerate(tracks)])
    return {"objmc": float(dist.mean()), "per_frame": dist.mean(0).tolist(),
            "found": float(np.mean([t.found.mean() for t in tracks])),
            "centres": [t.centres.tolist() for t in tracks]}


def iou(frame: torch.Tensor, target_mask: torch.Tensor) -> float:
    """IoU of a frame's object pixels with a target mask (coverage >= 0.5)."""
    pred = object_pixels(frame)
    tgt = (target_mask.float() >= 0.5).cpu().numpy()
    union = (pred | tgt).sum()
    return float((pred & tgt).sum() / union) if union else 1.0


# ---------------------------------------------------------------------------------------------------- quality gate

SIZE_RANGE = (40.0, 190.0)  # plausible box sides: training covers 45..168 px
MAX_STEP = 24.0  # pixels per frame a region may move (training: at most 12) before it counts as a new object
AREA_RATIO = (0.6, 1.67)  # area change per frame (training: at most 1.4 over the whole clip)
HUE_TOLERANCE = 25.0


def palette_colour(h: float) -> str | None:
    best = min(HUES, key=lambda k: hue_distance(HUES[k], h))
    return best if hue_distance(HUES[best], h) <= HUE_TOLERANCE else None


def gate(frames: torch.Tensor, expected_objects: int) -> dict:
    """Is this unconditional sample plausible? The expected number of regions in every frame, each of a
    plausible size and a palette colour, and the same objects from frame to frame (small steps, steady area)."""
    per_frame = [find(f) for f in frames]
    counts = [len(r) for r in per_frame]
    reasons = []
    if any(c != expected_objects for c in counts):
        reasons.append(f"counts {counts}")
    else:
        for regions in per_frame:
            for r in regions:
                side = max(r.box[2] - r.box[0], r.box[3] - r.box[1])
                if not SIZE_RANGE[0] <= side <= SIZE_RANGE[1]:
                    reasons.append(f"size {side}")
                if palette_colour(r.hue) is None or r.saturation < 0.45:
                    reasons.append(f"colour hue {r.hue:.0f} sat {r.saturation:.2f}")
        tracks = track(frames, np.array([r.centre for r in per_frame[0]]))
        for t in tracks:
            steps = np.linalg.norm(np.diff(t.centres, axis=0), axis=1)
            if steps.size and steps.max() > MAX_STEP:
                reasons.append(f"jump {steps.max():.0f}px")
            areas = np.array([r.area if r is not None else 0.0 for r in t.regions])
            ratio = areas[1:] / np.maximum(areas[:-1], 1)
            if (ratio < AREA_RATIO[0]).any() or (ratio > AREA_RATIO[1]).any() or not t.found.all():
                reasons.append("area or identity changes")
    return {"pass": not reasons, "reasons": sorted(set(reasons)), "counts": counts}
