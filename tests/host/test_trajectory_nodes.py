"""The trajectory nodes through the real executor."""

import json

import numpy as np
import pytest
import torch

from tests.support.comfy_run import PromptError
from tests.support.images import write_input_image

pytestmark = pytest.mark.host

REF = {"bounding_box": [[10, 20, 50, 60]], "target_box": [[0, 0, 40, 40]],
       "center_traj": [[[30, 40], [60, 40]]], "query_point": [[[30, 40]]], "width": 128, "height": 128}


def traj_prompt(text, frames=4, image=None):
    p = {"t": {"class_type": "AnyI2VTrajectory", "inputs": {"trajectory": text, "frames": frames, "width": 128, "height": 128}}}
    if image is not None:
        p["img"] = {"class_type": "LoadImage", "inputs": {"image": image}}
        p["t"]["inputs"]["image"] = ["img", 0]
    return p


def test_trajectory_node_scales_to_the_connected_image(host):
    name = write_input_image("traj_bg.png", np.zeros((64, 256, 3), np.uint8))
    out = host.run(traj_prompt(json.dumps(REF), image=name))
    assert out["t"]["images"][0]["type"] == "temp"  # the background goes to the widget
    (traj,) = host.node_output(traj_prompt(json.dumps(REF), image=name), "t")
    assert (traj.width, traj.height, traj.num_frames) == (256, 64, 4)
    assert np.allclose(traj.boxes()[0, 0], [20, 10, 100, 30])


def test_kjnodes_coordinates_pasted_into_the_editor_and_from_coordinates_node(host):
    (traj,) = host.node_output(traj_prompt('[{"x": 64, "y": 64}, {"x": 100, "y": 64}]'), "t")
    assert traj.boxes().shape == (1, 4, 4)
    p = {"c": {"class_type": "AnyI2VTrajectoryFromCoordinates",
               "inputs": {"coordinates": '[[{"x": 10, "y": 10}, {"x": 20, "y": 10}], [{"x": 50, "y": 50}, {"x": 50, "y": 60}]]',
                          "box_sizes": "8x8, 16x12", "width": 64, "height": 64, "frames": 3}}}
    (two,) = host.node_output(p, "c")
    assert np.allclose(two.boxes()[1, 0], [42, 44, 58, 56])


@pytest.mark.parametrize("text, field", [("", "trajectory"), ("{oops", "malformed"),
                                         (json.dumps(dict(REF, bounding_box=[[1, 1, 1, 5]])), "bounding_box")])
def test_bad_trajectory_json_is_a_clear_error(host, text, field):
    with pytest.raises(PromptError, match=field):
        host.run(traj_prompt(text))


def test_draw_trajectory_marks_the_boxes(host):
    name = write_input_image("draw_bg.png", np.zeros((128, 128, 3), np.uint8))
    p = traj_prompt(json.dumps(REF), frames=2)
    p["img"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    p["rep"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["img", 0], "amount": 2}}
    p["d"] = {"class_type": "AnyI2VDrawTrajectory", "inputs": {"images": ["rep", 0], "trajectory": ["t", 0]}}
    drawn, sheet = host.node_output(p, "d")
    assert drawn.shape == (2, 128, 128, 3)
    assert sheet.shape == (1, 128, 256, 3) and torch.equal(sheet[0, :, 128:], drawn[1])
    assert drawn[0, 20:60, 10].max() > 0.2  # left edge of frame 0's box
    assert drawn[1, 20:60, 40].max() > 0.2  # frame 1's box moved right by 30 px
    assert drawn[0, 100:, 100:].max() == 0
