"""The request the trajectory editor sends for the picture behind its boxes (web/background.js),
against the real server: the whole prompt plus one Preview Image on the image source, with
partial_execution_targets. Only the image chain runs, and the executor's cache keeps everything else
(a pruned prompt would drop the other nodes' cached outputs)."""

import pytest

from dev.support.examples import copy_inputs
from dev.support.server import ComfyServer

pytestmark = pytest.mark.host

PROMPT = {
    "img": {"class_type": "LoadImage", "inputs": {"image": "anyi2v_canny_car.png"}},
    "scale": {"class_type": "ImageScale", "inputs": {"image": ["img", 0], "upscale_method": "bilinear", "width": 96,
                                                     "height": 64, "crop": "center"}},
    "traj": {"class_type": "AnyI2VTrajectory", "inputs": {"trajectory": '{"bounding_box": [[10, 10, 40, 40]], '
                                                          '"center_traj": [[[25, 25], [60, 30]]], "width": 96, "height": 64}',
                                                          "frames": 4, "width": 512, "height": 512, "image": ["scale", 0]}},
    "show": {"class_type": "PreviewAny", "inputs": {"source": ["traj", 0]}},
    "blank": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
    "invert": {"class_type": "ImageInvert", "inputs": {"image": ["blank", 0]}},
    "save": {"class_type": "SaveImage", "inputs": {"images": ["invert", 0], "filename_prefix": "other"}},
}


def cached(entry):
    return set(next(data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached"))


def test_the_editor_request_runs_only_the_image_chain_and_keeps_the_cache():
    with ComfyServer() as server:
        copy_inputs(server.base / "input")
        first = server.run(PROMPT)
        assert first["status"]["status_str"] == "success" and set(first["outputs"]) == {"traj", "show", "save"}

        target = "anyi2v_background_traj"
        body = {"prompt": {**PROMPT, target: {"class_type": "PreviewImage", "inputs": {"images": ["scale", 0]}}},
                "client_id": "anyi2v-editor-background", "partial_execution_targets": [target]}
        status, queued = server.post("/prompt", body)
        assert status == 200, queued
        preview = server.wait(queued["prompt_id"])
        assert preview["status"]["status_str"] == "success"
        assert set(preview["outputs"]) == {target}  # nothing but the picture was produced
        image = preview["outputs"][target]["images"][0]
        assert image["type"] == "temp" and server.view(image)[:4] == b"\x89PNG"

        again = server.run(PROMPT)
        assert cached(again) == set(PROMPT)  # every node still cached: the picture evicted nothing
        assert again["status"]["status_str"] == "success"
