import pytest
import torch

from core.view import first_frame_masks, pca_rgb, upsample


def test_pca_rgb_shapes_range_and_structure():
    tokens = torch.zeros(2, 16, 5)
    tokens[:, :8, 0] = 3.0  # two regions along the first direction
    rgb = pca_rgb(tokens + 0.01 * torch.randn(2, 16, 5, generator=torch.Generator().manual_seed(0)), 4, 4)
    assert rgb.shape == (2, 4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    top, bottom = rgb[0, :2, :, 0].mean(), rgb[0, 2:, :, 0].mean()
    assert abs(float(top - bottom)) > 0.8  # the dominant component separates the two regions
    with pytest.raises(ValueError, match="tokens"):
        pca_rgb(tokens, 3, 4)


def test_first_frame_masks_follow_the_object_inside_each_box():
    maps = torch.zeros(1, 2, 8, 8)
    maps[0, 0] = 1.0
    maps[0, :, 2:4, 2:4] = torch.tensor([0.0, 1.0])[:, None, None]  # object of group 0
    masks = first_frame_masks([maps], torch.tensor([[[1, 1, 6, 6]], [[6, 6, 8, 8]]]), [[(2.5, 2.5)], []])
    assert masks.shape == (2, 8, 8)
    assert masks[0, 2:4, 2:4].min() == 1 and masks[0].sum() == 4
    assert masks[1, :6].sum() == 0 and masks[1].sum() > 0
    assert upsample(masks, 16, 16).shape == (2, 16, 16)


def test_loss_masks_follow_each_frames_box():
    from core.view import loss_masks, maps_rgb

    g = torch.Generator().manual_seed(0)
    maps = 0.1 * torch.randn(3, 4, 8, 8, generator=g)
    maps[0, 0, 1:3, 1:3] += 5.0  # an object in frame 0's box, moved one cell right in frame 1
    maps[1, 0, 1:3, 2:4] += 5.0
    boxes = torch.tensor([[[1.0, 1.0, 4.0, 4.0], [2.0, 1.0, 5.0, 4.0], [9.0, 9.0, 12.0, 12.0]]])
    off = loss_masks([maps], boxes, [[]], "off")
    expected = torch.zeros(3, 8, 8)
    expected[0, 1:4, 1:4] = 1
    expected[1, 1:4, 2:5] = 1  # frame 2's box; frame 3's lies outside the grid: skipped
    assert torch.equal(off[0], expected)
    semantic = loss_masks([maps], boxes, [[]], "semantic")
    assert torch.equal(semantic[0, 0], first_frame_masks([maps], boxes, [[]])[0])
    assert (semantic[0] <= expected).all()
    assert semantic[0, 0, 1:3, 1:3].min() == 1 and semantic[0, 1, 1:3, 2:4].min() == 1  # the object, where it is
    rgb = maps_rgb(maps)
    assert rgb.shape == (3, 8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1 and rgb.std() > 0.1
