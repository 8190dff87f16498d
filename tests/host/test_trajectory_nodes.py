"""The trajectory nodes through the real executor."""

import json

import numpy as np
import pytest
import torch

from dev.support.comfy_run import PromptError
from dev.support.images import write_input_image

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
    # the background goes to the editor under its own key: no "images", so the frontend adds no preview below it
    assert list(out["t"]) == ["anyi2v_background"] and out["t"]["anyi2v_background"][0]["type"] == "temp"
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


@pytest.mark.parametrize("text, field", [
    ("", "trajectory: empty JSON"), ("{oops", "trajectory: malformed"),
    (json.dumps(dict(REF, bounding_box=[[1, 1, 1, 5]])), r"bounding_box\[0\]: zero or negative size"),
    (json.dumps(dict(REF, bounding_box=[[-1e300, 1, 1e300, 5]])), r"bounding_box\[0\]: \(-1e\+300, 1\) lies outside"),
    (json.dumps(dict(REF, target_box=[[0, 0, 1e15, 1e15]])), r"target_box\[0\]: end size 1e\+15"),
    (json.dumps(dict(REF, frames="<text>")), "frames: expected a whole number from 1 to 1024, got '<text>'"),
    ('{"bounding_box": ' + "[" * 100_000 + "]" * 100_000 + "}", "trajectory: nested deeper than 8 levels"),
    (json.dumps(dict(REF, note="x" * 600_000)), "trajectory: 600,1.. characters, at most 524,288"),
])
def test_bad_trajectory_json_is_refused_when_queued_with_a_clear_message(host, text, field):
    """validate_inputs refuses it before anything runs: the message names the field, no traceback."""
    with pytest.raises(PromptError, match=field) as e:
        host.run(traj_prompt(text))
    assert e.value.stage == "validation"
    assert "Traceback" not in str(e.value) and "RecursionError" not in str(e.value)


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
