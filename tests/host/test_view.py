"""AnyI2V Feature View through the real executor."""

import pytest

from tests.host import prompts

pytestmark = pytest.mark.host


def test_feature_view_gives_one_rgb_per_block_and_a_mask_per_group(host):
    p = prompts.trajectory(prompts.invert(prompts.base(motion=False)))
    p["view"] = {"class_type": "AnyI2VFeatureView", "inputs": {"features": ["inv", 0], "trajectory": ["traj", 0], "pca_dim": 16}}
    rgb, masks = host.node_output(p, "view")
    assert rgb.shape == (4, 64, 64, 3) and 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    assert masks.shape == (1, 64, 64)
    inside = masks[0, 20:44, 16:44]
    assert masks.sum() == inside.sum() and inside.sum() > 0  # only inside the first box
