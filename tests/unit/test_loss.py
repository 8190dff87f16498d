"""Eq. 3, 5-8 against an independent loop-by-loop computation of the reference's rule, written from its
description (docs: reference-parity.md): per layer its own similarity map over its own PCA channels, max over
the salient points; ONE 2-means threshold over all layers' values; a mask per layer for frame j and for frame 0;
each layer's loss masked by its own pair, averaged over its channels; the sum over groups, frames, layers and
cells divided by the total mask count. Box cells floored; the frame-0 crop resized to box j bicubically, the
first-frame mask bilinearly (both align_corners=False, resampled here cell by cell in numpy)."""

import math

import numpy as np
import pytest
import torch

from core.loss import alignment_loss, box_cells, frame_sums, group_target

A = -0.75  # the bicubic convolution constant of PyTorch (and OpenCV)


def cells(box):
    x1, y1, x2, y2 = (math.floor(v) for v in box)
    return x1, y1, max(x1 + 1, x2), max(y1 + 1, y2)


def cubic_weights(t):
    c1 = lambda x: ((A + 2) * x - (A + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    c2 = lambda x: ((A * x - 5 * A) * x + 8 * A) * x - 4 * A  # noqa: E731  1 < |x| < 2
    return [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)]


def bicubic_at(img, oy, ox, out_h, out_w):
    """img (C, h, w) resized to (out_h, out_w), the value at output cell (oy, ox)."""
    _, h, w = img.shape
    sy, sx = (oy + 0.5) * h / out_h - 0.5, (ox + 0.5) * w / out_w - 0.5
    iy, ix = math.floor(sy), math.floor(sx)
    wy, wx = cubic_weights(sy - iy), cubic_weights(sx - ix)
    out = np.zeros(img.shape[0])
    for a in range(4):
        for b in range(4):
            out += wy[a] * wx[b] * img[:, min(max(iy - 1 + a, 0), h - 1), min(max(ix - 1 + b, 0), w - 1)]
    return out


def bilinear_at(img, oy, ox, out_h, out_w):
    h, w = img.shape
    sy, sx = max((oy + 0.5) * h / out_h - 0.5, 0.0), max((ox + 0.5) * w / out_w - 0.5, 0.0)
    y0, x0 = math.floor(sy), math.floor(sx)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = sy - y0, sx - x0
    return ((1 - ly) * ((1 - lx) * img[y0, x0] + lx * img[y0, x1]) + ly * ((1 - lx) * img[y1, x0] + lx * img[y1, x1]))


def two_means_threshold(values):
    """Brute force: the threshold (a value) whose split has the least within-cluster sum of squares."""
    u = np.unique(values)
    if u.size < 2:
        return u[0]
    return min(u[1:], key=lambda t: sum(((g - g.mean()) ** 2).sum() for g in (values[values < t], values[values >= t])))


def cos(a, b):
    return float(a @ b / max(np.linalg.norm(a), 1e-8) / max(np.linalg.norm(b), 1e-8))


def reference(layers, boxes, points, mode):
    """layers: list of (F, M_l, H, W) numpy arrays; boxes [group][frame] = (x1, y1, x2, y2) grid units."""
    n_frames, _, H, W = layers[0].shape
    n_layers = len(layers)
    num = count = 0.0
    for g, gb in enumerate(boxes):
        x1, y1, x2, y2 = cells(gb[0])
        crops0 = [lay[0, :, y1:y2, x1:x2] for lay in layers]
        vecs = [[lay[0, :, math.floor(py), math.floor(px)] for px, py in points[g]] for lay in layers]

        def sims(frame, cell_list, vecs=vecs):
            return [[max(cos(layers[k][frame, :, y, x], v) for v in vecs[k]) for y, x in cell_list] for k in range(n_layers)]

        first_cells = [(y, x) for y in range(y1, y2) for x in range(x1, x2)]
        s0 = np.array(sims(0, first_cells))
        m1 = (s0 >= two_means_threshold(s0.ravel())).astype(float).reshape(n_layers, y2 - y1, x2 - x1)
        if mode == "off":
            m1[:] = 1.0
        for j in range(1, n_frames):
            a1, b1, a2, b2 = cells(gb[j])
            on = [(y, x) for y in range(max(b1, 0), min(b2, H)) for x in range(max(a1, 0), min(a2, W))]
            if not on:
                continue
            sj = np.array(sims(j, on))
            mj = (sj >= two_means_threshold(sj.ravel())).astype(float) if mode == "semantic" else np.ones_like(sj)
            for k in range(n_layers):
                for c, (y, x) in enumerate(on):
                    oy, ox = y - b1, x - a1
                    wgt = mj[k, c] * bilinear_at(m1[k], oy, ox, b2 - b1, a2 - a1)
                    target = bicubic_at(crops0[k], oy, ox, b2 - b1, a2 - a1)
                    num += wgt**2 * ((layers[k][j, :, y, x] - target) ** 2).mean()
                    count += wgt
    return num / max(count, 1e-8)


# two layers of different widths; a non-square grid
SHAPES = [(4, 3, 12, 16), (4, 5, 12, 16)]
# group 0: a non-square box growing and moving, frame 3 partly off the grid; group 1: shrinking, fractional edges
BOXES = [
    [(2.0, 1.0, 8.0, 5.0), (3.0, 1.5, 10.5, 6.25), (4.25, 2.0, 12.0, 8.0), (9.0, 3.0, 18.0, 10.0)],
    [(8.5, 6.0, 14.0, 11.0), (8.0, 6.25, 12.75, 10.5), (7.5, 6.5, 11.0, 10.0), (7.0, 7.0, 10.0, 9.5)],
]
POINTS = [[(3.5, 2.5), (6.2, 4.1)], [(10.0, 8.0), (12.5, 9.9)]]  # two salient points per group


def layers_fixture(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(*s, generator=g, dtype=torch.float64) for s in SHAPES]
    for t in out:  # an object in each group's first box, so the masks have structure
        t[:, :, 2:4, 3:7] += 2.0 * torch.randn(1, t.shape[1], 1, 1, generator=g, dtype=torch.float64)
        t[:, :, 7:10, 9:13] += 2.0 * torch.randn(1, t.shape[1], 1, 1, generator=g, dtype=torch.float64)
    return out


@pytest.mark.parametrize("mode", ["semantic", "static", "off"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_reference_rule_loop_by_loop(mode, seed):
    layers = layers_fixture(seed)
    got = float(alignment_loss(layers, torch.tensor(BOXES, dtype=torch.float64), POINTS, mode))
    assert got == pytest.approx(reference([t.numpy() for t in layers], BOXES, POINTS, mode), rel=1e-9)


def test_one_threshold_over_all_layers_not_one_per_layer():
    """A layer whose similarities all sit above the other's: one shared 2-means keeps it whole and drops the
    other (per-layer thresholds would split both)."""
    from core.mask import layer_masks

    a = torch.tensor([[[1.0, 0.0, 1.0, 0.0]], [[0.0, 1.0, 0.0, 1.0]]])  # cos to (1, 0): 1, 0, 1, 0
    b = torch.tensor([[[1.0, 1.0, 1.0, 1.0]], [[0.0, 0.1, 0.0, 0.1]]])  # cos to (1, 0): 1, ~0.995, 1, ~0.995
    pts = [torch.tensor([[1.0, 0.0]])] * 2
    masks = layer_masks([a, b], pts)
    assert masks[1].all() and masks[0].tolist() == [[True, False, True, False]]


def test_each_group_uses_its_own_first_frame_mask():
    """The reference reuses group 0's first-frame mask for every group; with another object in group 1's box
    that gives another loss."""
    layers = layers_fixture(3)
    ours = float(alignment_loss(layers, torch.tensor(BOXES, dtype=torch.float64), POINTS, "static"))
    assert ours == pytest.approx(reference([t.numpy() for t in layers], BOXES, POINTS, "static"), rel=1e-9)
    buggy = [BOXES[0], [BOXES[0][0]] + BOXES[1][1:]]  # group 1 seen through group 0's first box
    assert ours != pytest.approx(reference([t.numpy() for t in layers], buggy, POINTS, "static"), rel=1e-3)


def test_box_cells_floor_every_edge():
    assert box_cells((2.0, 1.5, 7.99, 4.0)) == box_cells((2.9, 1.0, 7.0, 4.5))
    r = box_cells((23.5, 26.25, 120.25, 70.0))
    assert (r.x0, r.y0, r.x1, r.y1) == (23, 26, 120, 70)
    one = box_cells((5.2, 5.2, 5.7, 5.9))  # thinner than a cell: one cell
    assert (one.x0, one.y0, one.x1, one.y1) == (5, 5, 6, 6)
    assert box_cells((-3.5, 0.0, 2.0, 1.0)).x0 == -4


def test_frame_zero_is_the_target_only_and_gets_no_gradient():
    layers = [t.requires_grad_(True) for t in layers_fixture()]
    alignment_loss(layers, torch.tensor(BOXES, dtype=torch.float64), POINTS, "off").backward()
    for t in layers:
        assert t.grad[0].abs().sum() == 0 and t.grad[1:].abs().sum() > 0
    single = [t.detach()[:1] for t in layers_fixture()]
    assert float(alignment_loss(single, torch.tensor([[BOXES[0][0]]], dtype=torch.float64), [POINTS[0]])) == 0.0


@pytest.mark.parametrize("mode", ["semantic", "static", "off"])
def test_split_frames_sum_to_the_loss_and_its_gradient(mode):
    """What the per-window gradient relies on (nodes/window_grad.py): frame 0's targets from its maps alone,
    the frames split into windows (overlapping frames counted in one), the sums of terms and of mask weights
    added up give the loss over all frames, and the sum of the parts' gradients its gradient."""
    layers = [t.requires_grad_(True) for t in layers_fixture()]
    boxes = torch.tensor(BOXES, dtype=torch.float64)
    whole = alignment_loss(layers, boxes, POINTS, mode)
    whole_grads = torch.autograd.grad(whole, layers)
    targets = [group_target([t[0].detach() for t in layers], boxes, POINTS[g], mode, g) for g in range(len(POINTS))]
    n = layers[0].shape[0]
    parts = [list(range(0, 2)), list(range(2, n))]  # windows [0, 1, 2] and [1 .. n-1]: frame 1 counted in the first
    total = count = 0.0
    grads = [torch.zeros_like(t) for t in layers]
    for frames in parts:
        part, weight = frame_sums([t[frames] for t in layers], frames, targets, boxes, mode)
        for acc, g in zip(grads, torch.autograd.grad(part, layers, allow_unused=True), strict=True):
            acc += 0 if g is None else g
        total, count = total + part.detach(), count + weight
    assert float(total / count) == pytest.approx(float(whole.detach()), rel=1e-12)
    for got, want in zip(grads, whole_grads, strict=True):
        assert torch.allclose(got / count, want, rtol=1e-10, atol=1e-14)


def test_a_first_box_partly_off_the_grid_gives_no_target_beyond_it():
    """Its on-grid cells keep their place in the later boxes; the cells that map to off-grid cells count nothing."""
    layers = [t[:2] for t in layers_fixture(4)]
    boxes = torch.tensor([[(-2.0, 2.0, 4.0, 6.0), (5.0, 2.0, 11.0, 6.0)]], dtype=torch.float64)
    got = float(alignment_loss(layers, boxes, [[(1.0, 3.0)]], "off"))
    num = sum(float(((lay[1, :, 2:6, 7:11] - lay[0, :, 2:6, 0:4]) ** 2).mean(0).sum()) for lay in layers)
    assert got == pytest.approx(num / (len(layers) * 4 * 4), rel=1e-12)


def test_bad_inputs_name_the_field():
    layers = layers_fixture()
    boxes = torch.tensor(BOXES, dtype=torch.float64)
    with pytest.raises(ValueError, match="group 0"):
        alignment_loss(layers, torch.tensor([[(40, 40, 44, 44)] * 4], dtype=torch.float64), [[]])
    with pytest.raises(ValueError, match="mask_mode"):
        alignment_loss(layers, boxes, POINTS, "fuzzy")
    with pytest.raises(ValueError, match="boxes"):
        alignment_loss(layers, torch.zeros(2, 3, 4), POINTS)
    with pytest.raises(ValueError, match="points"):
        alignment_loss(layers, boxes, POINTS[:1])
    with pytest.raises(ValueError, match="layers"):
        alignment_loss([layers[0], layers[1][:2]], boxes, POINTS)
