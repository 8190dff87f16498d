"""The pack's own ComfyUI socket types."""

from comfy_api.latest import io

Trajectory = io.Custom("ANYI2V_TRAJECTORY")
Features = io.Custom("ANYI2V_FEATURES")

CATEGORY = "AnyI2V"
