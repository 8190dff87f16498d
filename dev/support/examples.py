"""Running the example workflows on the tiny generated models (tests and `make demo`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .tiny_models import CHECKPOINT_NAME, LORA_NAME, MOTION_MODEL_NAME
from .workflow_api import ui_to_api

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
INPUTS = REPO / "example_workflows" / "input"

# Small enough to finish in seconds on a CPU with the tiny models; the graph itself is unchanged.
TINY_PROFILE = {"width": 128, "height": 128, "frames": 8, "steps": 12, "stride": 10}


def copy_inputs(input_dir: Path):
    """The example inputs into a ComfyUI input folder, sub-folders kept (3d/ as core Load 3D uses)."""
    for path in INPUTS.rglob("*"):
        if path.is_file():
            target = Path(input_dir) / path.relative_to(INPUTS)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


def tiny_profile(prompt: dict, profile: dict = TINY_PROFILE) -> dict:
    """Swap model names for the tiny files and shrink size, frames, steps and the inversion stride."""
    p = profile
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = CHECKPOINT_NAME
        elif kind == "ADE_LoadAnimateDiffModel":
            inputs["model_name"] = MOTION_MODEL_NAME
        elif kind == "LoraLoader":
            inputs["lora_name"] = LORA_NAME
        elif kind == "AnyI2VInvertCondition":
            inputs["stride"] = p["stride"]
        if kind in ("ImageScale", "EmptyLatentImage", "AnyI2VRenderMesh"):
            inputs["width"], inputs["height"] = p["width"], p["height"]
        if kind in ("ADE_StandardStaticContextOptions", "ADE_StandardUniformContextOptions"):  # still sliding
            inputs["context_length"], inputs["context_overlap"] = max(2, p["frames"] // 2), 1
        if kind == "EmptyLatentImage":
            inputs["batch_size"] = p["frames"]
        if kind == "AnyI2VTrajectory":
            inputs["frames"] = p["frames"]
        if kind in ("AnyI2VKSampler", "BasicScheduler"):
            inputs["steps"] = p["steps"]
    return prompt


def example_prompt(path: Path, object_info: dict, tiny: bool = True) -> dict:
    prompt = ui_to_api(json.loads(Path(path).read_text()), object_info)
    return tiny_profile(prompt) if tiny else prompt
