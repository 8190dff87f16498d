"""Eq. 3 + 8 against an independent computation (integer crops, F.interpolate, numpy 2-means)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.loss import alignment_loss


def np_mask(crop, vecs):
    """Independent Eq. 5-7: numpy cosine similarity, max over points, brute-force 2-means."""
    c = crop.reshape(crop.shape[0], -1)
    sim = (vecs @ c) / np.linalg.norm(vecs, axis=1)[:, None] / np.maximum(np.linalg.norm(c, axis=0), 1e-8)[None]
    sim = sim.max(0)
    u = np.unique(sim)
    if u.size < 2:
        return np.ones(crop.shape[1:], bool)
    best = min(u[1:], key=lambda t: sum(((g - g.mean()) ** 2).sum() for g in (sim[sim < t], sim[sim >= t])))
    return (sim >= best).reshape(crop.shape[1:])


def reference(feats, boxes, points, mode, reuse_first_group_mask=False):
    total = 0.0
    f = feats.detach()
    first_masks = []
    for g, gb in enumerate(boxes):
        x1, y1, x2, y2 = gb[0]
        crop0 = f[0, :, y1:y2, x1:x2]
        vecs = np.stack([f[0, :, y, x].numpy() for x, y in points[g]])
        m1 = np_mask(crop0.numpy(), vecs)
        first_masks.append(m1)
        if reuse_first_group_mask:
            m1 = first_masks[0] if first_masks[0].shape == m1.shape else m1
        for j in range(1, f.shape[0]):
            a1, b1, a2, b2 = gb[j]
            size = (b2 - b1, a2 - a1)
            target = F.interpolate(crop0[None], size=size, mode="bilinear", align_corners=False)[0]
            m1j = F.interpolate(torch.tensor(m1, dtype=torch.float32)[None, None], size=size, mode="nearest-exact")[0, 0]
            cur = f[j, :, b1:b2, a1:a2]
            mask = torch.ones(size)
            if mode in ("semantic", "static"):
                mask = mask * m1j
            if mode == "semantic":
                mask = mask * torch.tensor(np_mask(cur.numpy(), vecs), dtype=torch.float32)
            total += float((mask * (cur - target) ** 2).sum() / mask.sum().clamp_min(1))
    return total


BOXES = [
    [(2, 2, 8, 8), (3, 2, 9, 8), (4, 3, 10, 9), (5, 3, 13, 11)],
    [(10, 10, 15, 14), (9, 10, 14, 14), (8, 9, 13, 13), (7, 9, 11, 12)],
]
POINTS = [[(4, 4), (6, 5)], [(12, 11)]]


def feats_fixture(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 6, 16, 16, generator=g)


@pytest.mark.parametrize("mode", ["semantic", "static", "off"])
def test_matches_independent_computation(mode):
    feats = feats_fixture()
    got = alignment_loss(feats, torch.tensor(BOXES, dtype=torch.float64), POINTS, mode)
    assert float(got) == pytest.approx(reference(feats, BOXES, POINTS, mode), rel=1e-5)


def test_each_group_uses_its_own_first_frame_mask():
    """The reference bug reuses group 0's mask; with two different objects that gives another loss."""
    boxes = [[(2, 2, 8, 8)] * 4, [(8, 8, 14, 14)] * 4]
    feats = feats_fixture(3)
    feats[:, :, 8:11, 8:14] += 4 * torch.randn(6, 1, 1, generator=torch.Generator().manual_seed(9))  # object 1: top half of its box
    pts = [[(4, 4)], [(10, 9)]]
    ours = float(alignment_loss(feats, torch.tensor(boxes, dtype=torch.float64), pts, "static"))
    assert ours == pytest.approx(reference(feats, boxes, pts, "static"), rel=1e-5)
    assert ours != pytest.approx(reference(feats, boxes, pts, "static", reuse_first_group_mask=True), rel=1e-3)


def test_frame_zero_is_the_target_only_and_gets_no_gradient():
    feats = feats_fixture().requires_grad_(True)
    loss = alignment_loss(feats, torch.tensor(BOXES, dtype=torch.float64), POINTS, "off")
    loss.backward()
    assert feats.grad[0].abs().sum() == 0
    assert feats.grad[1:].abs().sum() > 0
    single = feats_fixture()[:1]
    assert float(alignment_loss(single, torch.tensor([[BOXES[0][0]]], dtype=torch.float64), [POINTS[0]])) == 0.0


def test_partial_box_keeps_geometry_and_outside_frames_are_skipped():
    feats = feats_fixture(5)
    boxes = torch.tensor([[(2, 2, 8, 8), (12, 4, 20, 10), (30, 30, 36, 36)]], dtype=torch.float64)
    f = feats[:3]
    got = float(alignment_loss(f, boxes, [[(4, 4)]], "off"))
    full_target = F.interpolate(f[0, :, 2:8, 2:8][None], size=(6, 8), mode="bilinear", align_corners=False)[0]
    visible = full_target[:, :, :4]  # columns 12..15 are on the 16-wide grid
    expected = float(((f[1, :, 4:10, 12:16] - visible) ** 2).sum() / (6 * 4))
    assert got == pytest.approx(expected, rel=1e-5)


def test_bad_inputs_name_the_field():
    feats = feats_fixture()
    outside = torch.tensor([[(40, 40, 44, 44)] * 4], dtype=torch.float64)
    with pytest.raises(ValueError, match="group 0"):
        alignment_loss(feats, outside, [[]])
    with pytest.raises(ValueError, match="mask_mode"):
        alignment_loss(feats, torch.tensor(BOXES, dtype=torch.float64), POINTS, "fuzzy")
    with pytest.raises(ValueError, match="boxes"):
        alignment_loss(feats, torch.zeros(2, 3, 4), POINTS)
    with pytest.raises(ValueError, match="points"):
        alignment_loss(feats, torch.tensor(BOXES, dtype=torch.float64), POINTS[:1])
