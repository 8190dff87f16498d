"""Save and load ANYI2V_FEATURES as .safetensors (no pickle: a file can carry data only)."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..core.features import from_state, to_state
from .input_files import fingerprint, input_files, input_path
from .types import CATEGORY, Features

EXTENSION = ".safetensors"


class SaveFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VSaveFeatures",
            display_name="AnyI2V Save Features",
            category=CATEGORY,
            description="Save inverted condition features to ComfyUI's output folder, to reuse them without inverting again.",
            inputs=[
                Features.Input("features", tooltip="Features from AnyI2V Invert Condition."),
                io.String.Input("filename_prefix", default="AnyI2V/features", tooltip="File name prefix inside the output folder."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, features, filename_prefix) -> io.NodeOutput:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
        filename = f"{name}_{counter:05}_{EXTENSION}"
        path = os.path.join(folder, filename)
        tensors, meta = to_state(features)
        tmp = path + ".part"
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {os.path.join(subfolder, filename)}"))


def load_features(path: str, name: str):
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"features_file: '{name}' is not a readable .safetensors file ({e})") from e
    return from_state(tensors, meta, f"features_file '{name}'")


class LoadFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VLoadFeatures",
            display_name="AnyI2V Load Features",
            category=CATEGORY,
            description="Load features saved by AnyI2V Save Features (put the file in ComfyUI's input folder).",
            inputs=[io.Combo.Input("features_file", options=input_files((EXTENSION,)), tooltip="A .safetensors features file in the input folder.")],
            outputs=[Features.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, features_file) -> io.NodeOutput:
        path = input_path(features_file, (EXTENSION,), "features_file")
        return io.NodeOutput(load_features(path, features_file))

    @classmethod
    def fingerprint_inputs(cls, features_file):
        return fingerprint(features_file)


NODES = [SaveFeatures, LoadFeatures]
