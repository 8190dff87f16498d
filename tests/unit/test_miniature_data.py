"""The miniature's generator, latent space, locator and test set (dev/miniature/): pure PyTorch/NumPy, no ComfyUI."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dev.miniature import latent as L
from dev.miniature import locator as LOC
from dev.miniature import scenes as S
from dev.miniature import testset as TS


def scene(seed, n=None):
    return S.sample_scene(np.random.default_rng(seed), n_objects=n)


def test_scenes_are_deterministic_and_objects_stay_inside_and_apart():
    for seed in range(30):
        a, b = scene(seed), scene(seed)
        assert a.prompt == b.prompt and np.allclose(a.boxes(), b.boxes())
        boxes = a.boxes()
        assert (boxes[..., :2] >= 0).all() and (boxes[..., 2:] <= S.SIZE).all()
        if len(a.objects) == 2:
            (p, q) = boxes
            overlap = (np.minimum(p[:, 2], q[:, 2]) > np.maximum(p[:, 0], q[:, 0])) & \
                      (np.minimum(p[:, 3], q[:, 3]) > np.maximum(p[:, 1], q[:, 1]))
            assert not overlap.any()
    assert torch.equal(S.render_video(scene(3)), S.render_video(scene(3)))


def test_generator_covers_motions_sizes_counts_and_backgrounds():
    scenes = [scene(s) for s in range(200)]
    motions = {m for s in scenes for m in s.motions}
    assert motions == set(S.MOTIONS)
    assert {len(s.objects) for s in scenes} == {1, 2}
    assert {s.background.kind for s in scenes} == set(S.BACKGROUNDS)
    growth = [o.sizes[-1] / o.sizes[0] for s in scenes for o in s.objects]
    assert min(growth) < 0.8 and max(growth) > 1.3
    speeds = [np.linalg.norm(np.diff(o.centres, axis=0), axis=1).mean() for s in scenes for o in s.objects]
    assert min(speeds) == 0 and max(speeds) > 9


def test_objects_are_saturated_and_backgrounds_are_not():
    for seed in range(10):
        sc = scene(seed)
        frame = S.render_frame(sc, 0)
        sat = S.saturation(frame)
        masks = S.object_masks(sc, 0)
        inside = masks.sum(0) > 0.99
        outside = masks.sum(0) < 0.01
        assert sat[inside].min() > 0.5
        assert sat[outside].max() < S.MAX_SATURATION_BACKGROUND + 0.02


def test_conditions_show_the_objects():
    sc = scene(4, n=2)
    masks = S.object_masks(sc, 0).sum(0)
    sil = S.condition_image(sc, "silhouette")
    assert torch.allclose(sil[0], masks.clamp(0, 1))
    edges = S.condition_image(sc, "edges")[0]
    for box in sc.boxes()[:, 0]:  # the outline of every object is drawn
        x1, y1, x2, y2 = (int(v) for v in box)
        assert edges[y1:y2, x1:x2].max() > 0.9
    depth = S.condition_image(sc, "depth")[0]
    assert depth[masks > 0.99].mean() > depth[masks < 0.01].mean() + 0.1  # objects are nearer than the floor behind
    mixed = S.condition_image(sc, "mixed")[0]
    x1, y1, x2, y2 = (int(v) for v in sc.boxes()[0, 0])
    assert torch.equal(mixed[y1 + 1:y2 - 1, x1 + 1:x2 - 1], edges[y1 + 1:y2 - 1, x1 + 1:x2 - 1])
    assert torch.equal(mixed[:4, :4], depth[:4, :4]) or sc.boxes()[:, 0, :2].min() < 4


def test_latent_colour_channels_invert_exactly_and_the_offset_channel_places_edges():
    img = S.render_video(scene(7))[:2]
    z = L.encode(img)
    assert z.shape == (2, 4, 32, 32)
    assert torch.allclose(L.patch_colours(z), F.avg_pool2d(img, 8), atol=1e-5)
    y = img.mean(1)
    offset = (z[:, 3] * L.SPREAD[3] + L.OFFSET[3])
    assert torch.allclose(offset[:, 5, 7], y[:, 36:44, 52:60].mean((1, 2)), atol=1e-5)  # the window up and left
    assert torch.allclose(offset[:, 0, 0], y[:, :4, :4].sum((1, 2)) / 64, atol=1e-5)  # zero outside the image

    def edge_at(x):
        im = torch.full((1, 3, 16, 64), 0.5)
        im[..., x:] = 0.9
        return L.encode(im)[0, :, 1]

    a, b = edge_at(28), edge_at(26)
    assert (a[3] - b[3]).abs().max() > 0.5  # the offset channel tells the two edges apart


def test_locator_finds_ground_truth_centres_within_half_a_pixel():
    worst = 0.0
    for seed in range(8):  # `make eval` checks the whole test set, raw and through the VAE
        sc = scene(100 + seed)
        worst = max(worst, LOC.objmc(S.render_video(sc), sc.boxes())["objmc"])
    for c in TS.cases(1):
        worst = max(worst, LOC.objmc(S.render_video(c.scene), c.boxes)["objmc"])
    assert worst <= 0.5


def test_locator_measures_displacement_and_keeps_identities():
    sc = scene(11, n=2)
    video = S.render_video(sc)
    boxes = sc.boxes()
    shifted = boxes.copy()
    shifted[..., [0, 2]] += 20  # the boxes 20 px to the right of the objects
    assert LOC.objmc(video, shifted)["objmc"] == pytest.approx(20, abs=0.5)
    tracks = LOC.track(video, LOC.box_centres(boxes)[:, 0])
    for t, b in zip(tracks, boxes, strict=True):
        assert np.abs(t.centres - LOC.box_centres(b)).max() < 1.0 and t.found.all()


def test_locator_keeps_the_last_position_of_a_vanished_object():
    sc = scene(12, n=1)
    video = S.render_video(sc)
    video[4:] = S.render_background(sc.background, S.SIZE)
    res = LOC.objmc(video, sc.boxes())
    assert res["found"] == pytest.approx(4 / 8)
    last = LOC.box_centres(sc.boxes())[0, 3]
    assert np.allclose(res["centres"][0][7], last, atol=0.6)


def test_first_frame_iou_of_the_ground_truth_is_high_and_of_a_shifted_object_low():
    sc = scene(5, n=1)
    frame = S.render_frame(sc, 0)
    mask = S.object_masks(sc, 0).sum(0)
    assert LOC.iou(frame, mask) > 0.95
    assert LOC.iou(torch.roll(frame, 40, dims=2), mask) < 0.6


def test_quality_gate_passes_ground_truth_and_catches_broken_videos():
    for seed in range(10):
        sc = scene(200 + seed)
        assert LOC.gate(S.render_video(sc), len(sc.objects))["pass"]
    sc = scene(210, n=1)
    video = S.render_video(sc)
    assert not LOC.gate(video, 2)["pass"]  # wrong count
    grey = video.mean(1, keepdim=True).expand_as(video).clone()
    assert not LOC.gate(grey, 1)["pass"]  # no object at all
    jumpy = video.clone()
    jumpy[5] = torch.roll(video[5], 60, dims=2)
    assert not LOC.gate(jumpy, 1)["pass"]  # the object jumps
    tiny = S.Scene(sc.background, [S.SceneObject("ball", "red", sc.objects[0].centres, np.full(8, 14.0))])
    assert not LOC.gate(S.render_video(tiny), 1)["pass"]  # implausibly small


def test_test_set_is_fixed_and_its_scenes_sit_on_the_boxes():
    a, b = TS.cases(4), TS.cases(4)
    assert [c.key for c in a] == [c.key for c in b] and len(a) == 20
    assert [c.prompt for c in a] == [c.prompt for c in b]
    assert {c.modality for c in a} == set(TS.MODALITIES)
    assert {len(c.boxes) for c in a} == {1, 2}
    for c in a:
        assert np.allclose(c.scene.boxes(), c.boxes)
        assert (c.boxes[..., :2] >= 0).all() and (c.boxes[..., 2:] <= TS.SIZE).all()
        step = np.linalg.norm(np.diff(LOC.box_centres(c.boxes), axis=1), axis=-1)
        assert step.max() <= 12.5  # within the training speeds
    grow = TS.case("grow", 0).boxes[0]
    assert grow[-1, 2] - grow[-1, 0] > 1.3 * (grow[0, 2] - grow[0, 0])


def test_a_scene_drawn_at_twice_the_resolution_is_the_same_scene_and_the_locator_finds_it_at_256_px():
    """The 512 px miniature trains on and is measured against the test set's scenes drawn at 2x (Scene.scaled); its
    frames are averaged 2 x 2 before the locator (evaluate.measured), whose ground-truth error must stay within the
    0.5 px that `make eval` demands."""
    from dev.miniature.evaluate import measured

    worst = 0.0
    for c in TS.cases(1):
        big = S.render_video(c.scene.scaled(2))
        assert big.shape == (TS.FRAMES, 3, 512, 512)
        small = measured(big)
        assert (small - S.render_video(c.scene)).abs().mean() < 0.01  # the same picture (edges anti-aliased at 512)
        worst = max(worst, LOC.objmc(small, c.boxes)["objmc"])
        assert LOC.iou(small[0], c.condition_mask()) > 0.9
    assert worst <= 0.5
    shifted = S.render_video(TS.case("right", 0).scene.scaled(2))
    boxes = TS.case("right", 0).boxes.copy()
    boxes[..., [0, 2]] += 10  # 10 px at 256 = 20 px of the 512 px frame
    assert LOC.objmc(measured(shifted), boxes)["objmc"] == pytest.approx(10, abs=0.5)


def test_rendering_all_frames_at_once_gives_each_frame_as_drawn_alone():
    sc = scene(21, n=2)
    video = S.render_video(sc)
    for f in (0, 3, 7):
        assert torch.equal(video[f], S.render_frame(sc, f))
    assert torch.equal(S.render_frames(sc, np.array([2, 5])), video[[2, 5]])
