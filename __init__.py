"""ComfyUI-AnyI2V: training-free controllable image-to-video (AnyI2V, ICCV 2025) for ComfyUI.

The repository root is the custom node folder. ComfyUI finds the V3 entry point below;
``core/`` holds the method in plain PyTorch, ``nodes/`` everything that touches ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import AnyI2VExtension

    return AnyI2VExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
