"""Every example workflow end to end through a real ComfyUI server's /prompt (tiny models, ADE stand-in)."""

import pytest

from dev.support.examples import EXAMPLES, copy_inputs, example_prompt, tiny_profile
from dev.support.host import cache_dir
from dev.support.server import STANDIN_ADE, TINY_MODELS_PACK, ComfyServer, error_message
from dev.support.tiny_models import ensure_models

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def server():
    ensure_models(cache_dir())
    with ComfyServer(extra_nodes=[STANDIN_ADE, TINY_MODELS_PACK], models_dir=cache_dir()) as s:
        copy_inputs(s.base / "input")
        yield s


def test_there_are_the_five_examples():
    names = [p.stem for p in EXAMPLES]
    assert len(names) >= 5 and names[0].startswith("01_canny")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_writes_a_video(server, path):
    entry = server.run(example_prompt(path, server.object_info()), timeout=600)
    assert entry["status"]["status_str"] == "success", error_message(entry) + server.log_tail(20)
    files = [img for out in entry["outputs"].values() for img in out.get("images", []) if img.get("type") == "output"]
    assert any(f["filename"].endswith(".webp") for f in files), files
    assert any(f["filename"].endswith(".png") for f in files), files
    webp = next(f for f in files if f["filename"].endswith(".webp"))
    assert server.view(webp)[:4] == b"RIFF"


def test_a_long_video_in_uniform_context_windows(server):
    """Example 6's graph at 24 frames in ADE's Standard Uniform windows (length 16, overlap 4: the windows move
    every step), through /prompt."""
    path = next(p for p in EXAMPLES if p.stem.startswith("06_"))
    prompt = example_prompt(path, server.object_info(), tiny=False)
    prompt = tiny_profile(prompt, {"width": 64, "height": 64, "frames": 24, "steps": 6, "stride": 10})
    ctx = next(k for k, n in prompt.items() if n["class_type"] == "ADE_StandardStaticContextOptions")
    prompt[ctx] = {"class_type": "ADE_StandardUniformContextOptions", "inputs": {
        "context_length": 16, "context_stride": 1, "context_overlap": 4, "fuse_method": "pyramid"}}
    entry = server.run(prompt, timeout=900)
    assert entry["status"]["status_str"] == "success", error_message(entry) + server.log_tail(20)
    log = server.log_tail(400)
    assert "optimising the latent before steps 0" in log, log[-2000:]
    files = [img for out in entry["outputs"].values() for img in out.get("images", []) if img.get("type") == "output"]
    assert any(f["filename"].endswith(".webp") for f in files), files


MODEL_FILE = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
LOADER_FOLDERS = {"CheckpointLoaderSimple": "checkpoints", "ADE_LoadAnimateDiffModel": "animatediff_models",
                  "LoraLoader": "loras"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_model_an_example_loads_can_be_fetched_or_says_what_to_put_there(path):
    """The frontend's missing-models dialog reads a loader node's properties.models ({name, url, directory}): each
    model file an example names is described at its official home (Hugging Face, which both tested frontends
    download from), in the folder its loader reads; a model only the user can choose (example 4's style LoRA)
    is named so on the node's title."""
    import json

    found = 0
    for node in json.loads(path.read_text())["nodes"]:
        names = [v for v in node.get("widgets_values", []) if isinstance(v, str) and v.endswith(MODEL_FILE)]
        if not names:
            continue
        assert node["type"] in LOADER_FOLDERS, node["type"]
        described = {m["name"]: m for m in node.get("properties", {}).get("models", [])}
        for name in names:
            found += 1
            if name in described:
                model = described[name]
                assert model["directory"] == LOADER_FOLDERS[node["type"]], model
                assert model["url"].startswith("https://huggingface.co/") and model["url"].endswith("/" + name), model
            else:
                title = node.get("title", "")
                assert f"models/{LOADER_FOLDERS[node['type']]}" in title and "pick it here" in title, (name, title)
    assert found >= 2  # at least the checkpoint and the motion module
