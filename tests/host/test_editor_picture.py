"""The request the trajectory editor sends for the picture behind its boxes (web/background.js), built
by the editor's own code (web/upstream.js, run by node) and sent to the real server: only the image
chain and one Preview Image of its source, with partial_execution_targets. Node types missing
elsewhere in the graph do not matter (the whole prompt is refused for them), only the chain runs, and
the next full run reuses the chain's outputs. The allowlist of nodes the editor runs by itself
(web/local_nodes.js) is checked against the real /object_info."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dev.support.examples import copy_inputs
from dev.support.server import ComfyServer

pytestmark = pytest.mark.host
REPO = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
PLAIN = {"IMAGE", "MASK", "INT", "FLOAT", "STRING", "BOOLEAN", "ANYI2V_TRAJECTORY"}

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
# what app.graphToPrompt() adds for AnimateDiff-Evolved's nodes on a server without it
MISSING = {
    "ade": {"class_type": "ADE_UseEvolvedSampling", "inputs": {"model": ["other", 0], "beta_schedule": "autoselect"}},
    "other": {"inputs": {"model_name": "mm_sd_v15_v2.ckpt"}},
}


def run_node(script: str):
    if NODE is None:
        pytest.skip("node is not installed (make js needs it too)")
    out = subprocess.run([NODE, "--input-type=module", "-e", script], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def editor_request(prompt: dict, editor: str, target: str) -> dict:
    """The /prompt body web/background.js sends for `editor`'s picture (its chainPrompt)."""
    script = ("import { imageChain, chainPrompt } from './web/upstream.js';"
              f"const p = {json.dumps(prompt)};"
              f"console.log(JSON.stringify(chainPrompt(imageChain(p, {json.dumps(editor)}), {json.dumps(target)})));")
    return {"prompt": run_node(script), "client_id": "anyi2v-editor-background", "partial_execution_targets": [target]}


@pytest.fixture(scope="module")
def server():
    with ComfyServer() as s:  # the pack alone: no AnimateDiff-Evolved, no stand-in
        copy_inputs(s.base / "input")
        yield s


def cached(entry):
    return set(next(data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached"))


def test_the_editor_request_holds_only_the_image_chain_and_ignores_missing_nodes_elsewhere(server):
    first = server.run(PROMPT)
    assert first["status"]["status_str"] == "success" and set(first["outputs"]) == {"traj", "show", "save"}

    graph = {**PROMPT, **MISSING}
    target = "anyi2v_background_traj"
    whole = {"prompt": {**graph, target: {"class_type": "PreviewImage", "inputs": {"images": ["scale", 0]}}},
             "client_id": "anyi2v-editor-background", "partial_execution_targets": [target]}
    status, refused = server.post("/prompt", whole)
    assert status == 400 and refused["error"]["message"].startswith("Cannot execute because")  # why the whole prompt is never sent

    body = editor_request(graph, "traj", target)
    assert set(body["prompt"]) == {"img", "scale", target}
    status, queued = server.post("/prompt", body)
    assert status == 200, queued
    preview = server.wait(queued["prompt_id"])
    assert preview["status"]["status_str"] == "success"
    assert set(preview["outputs"]) == {target}  # nothing but the picture was produced
    image = preview["outputs"][target]["images"][0]
    assert image["type"] == "temp" and server.view(image)[:4] == b"\x89PNG"

    again = server.run(PROMPT)
    assert again["status"]["status_str"] == "success"
    # the chain's outputs are reused by the next run; the executor's classic cache keeps only what
    # the last prompt held, so the rest of the graph runs again (README: "The picture behind the boxes")
    assert cached(again) == {"img", "scale"}


def test_the_allowlist_names_real_local_nodes_only(server):
    allowed = run_node("import { LOCAL_NODES } from './web/local_nodes.js'; console.log(JSON.stringify(LOCAL_NODES));")
    info = server.object_info()
    assert len(allowed) >= 40
    for node_id in allowed:
        definition = info.get(node_id)
        assert definition is not None, f"{node_id} is not a node type of this ComfyUI"
        assert not definition.get("output_node") and not definition.get("api_node"), node_id
        for group in ("required", "optional"):
            for name, spec in definition["input"].get(group, {}).items():
                kind = "COMBO" if isinstance(spec[0], list) else spec[0]
                assert kind == "COMBO" or kind in PLAIN, f"{node_id}.{name} takes a {kind}"
    # what the editor relies on to refuse them: the server marks API and output nodes in /object_info
    assert info["FluxProExpandNode"]["api_node"] is True and info["SaveImage"]["output_node"] is True
    assert sum(1 for d in info.values() if d.get("api_node")) > 50
