"""AnyI2V Mix Conditions through the real executor."""

import numpy as np
import pytest
import torch

from dev.support.comfy_run import PromptError
from dev.support.images import write_input_image

pytestmark = pytest.mark.host


def mix_prompt(mode, **extra):
    a = write_input_image("mix_a.png", np.full((32, 48, 3), 40, np.uint8))
    b = write_input_image("mix_b.png", np.full((16, 24, 3), 200, np.uint8))
    inputs = {"base": ["a", 0], "overlay": ["b", 0], "mode": mode, "position": 0.5,
              "x1": 8, "y1": 4, "x2": 24, "y2": 20, "feather": 0}
    inputs.update(extra)
    return {
        "a": {"class_type": "LoadImage", "inputs": {"image": a}},
        "b": {"class_type": "LoadImage", "inputs": {"image": b}},
        "mix": {"class_type": "AnyI2VMixConditions", "inputs": inputs},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["mix", 0]}},
    }


def test_box_mix_places_the_overlay_inside_the_box(host):
    image, mask = host.node_output(mix_prompt("inside box"), "mix")
    assert image.shape == (1, 32, 48, 3) and mask.shape == (1, 32, 48)
    inside = image[0, 4:20, 8:24]
    assert torch.allclose(inside, torch.full_like(inside, 200 / 255), atol=1e-6)
    assert torch.allclose(image[0, 25:, :], torch.full_like(image[0, 25:, :], 40 / 255), atol=1e-6)
    assert mask.sum() == 16 * 16


def test_mask_mode_without_mask_fails_with_a_clear_message(host):
    with pytest.raises(PromptError, match="mask"):
        host.run(mix_prompt("mask"))
