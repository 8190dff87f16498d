import pytest
import torch

from core.composite import composite, feather, split_mask


def test_left_right_split_takes_overlay_on_the_right():
    m = split_mask(4, 10, "left | right", 0.3)
    assert m[:, :3].sum() == 0 and m[:, 3:].min() == 1


def test_top_bottom_and_box_masks():
    assert torch.equal(split_mask(4, 2, "top | bottom", 0.5), torch.tensor([[0.0, 0], [0, 0], [1, 1], [1, 1]]))
    m = split_mask(8, 8, "inside box", box=(2, 3, 5, 9))
    assert m.sum() == 3 * 5 and m[3:8, 2:5].min() == 1


@pytest.mark.parametrize(
    "kwargs, field",
    [({"mode": "diagonal"}, "mode"), ({"mode": "inside box", "box": (5, 5, 5, 9)}, "box"),
     ({"mode": "inside box", "box": (20, 20, 30, 30)}, "box"), ({"mode": "left | right", "position": 1.5}, "position")],
)
def test_bad_split_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        split_mask(8, 8, **kwargs)


def test_composite_is_a_per_pixel_blend_and_resizes_the_overlay():
    base = torch.zeros(1, 4, 4, 3)
    overlay = torch.ones(1, 2, 2, 3)  # resized to 4x4
    mask = torch.zeros(4, 4)
    mask[:, 2:] = 0.5
    out = composite(base, overlay, mask)
    assert out.shape == base.shape
    assert torch.allclose(out[0, :, :2], torch.zeros(4, 2, 3)) and torch.allclose(out[0, :, 2:], torch.full((4, 2, 3), 0.5))


def test_composite_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="overlay"):
        composite(torch.zeros(2, 4, 4, 3), torch.zeros(3, 4, 4, 3), torch.ones(4, 4))


def test_feather_keeps_flat_regions_and_softens_the_edge():
    m = split_mask(6, 6, "left | right", 0.5)
    f = feather(m, 1)
    assert f[:, 0].max() == 0 and f[:, -1].min() == 1
    assert 0 < f[0, 2] < 1 and 0 < f[0, 3] < 1
