"""Locate and boot the real ComfyUI 0.3.75 test host (built by dev/setup_host.sh) in-process.

``boot()`` puts the host's ComfyUI folder first on sys.path (its top-level ``nodes`` must win over
this pack's ``nodes/`` package), chooses the device before ``comfy.model_management`` is imported (the CPU for
tests; ComfyUI's own choice, CUDA where torch sees a GPU, for the miniature's training and evaluation), and
returns the ComfyUI folder. ``load_pack()`` imports this checkout through ComfyUI's own custom-node loader.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def host_dir() -> Path:
    return Path(os.environ.get("ANYI2V_HOST", Path.home() / ".cache" / "comfyui-anyi2v" / "host"))


def comfy_dir() -> Path:
    return host_dir() / "ComfyUI"


def cache_dir() -> Path:
    """Where generated test models live (never in git)."""
    return Path(os.environ.get("ANYI2V_CACHE", Path.home() / ".cache" / "comfyui-anyi2v")) / "models"


def host_available() -> bool:
    return (comfy_dir() / "comfy" / "model_management.py").is_file()


def accelerator_available() -> bool:
    """A device ComfyUI's model management would pick over the CPU (CUDA, or Apple's MPS)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def boot(device: str | None = None) -> Path:
    """device: "cpu" (the default: tests are deterministic on the CPU) or "auto" (whatever ComfyUI's model
    management picks: CUDA when torch sees a GPU, else the CPU). ANYI2V_DEVICE (cpu or auto) overrides it. The
    first boot of a process decides: ComfyUI picks its device when comfy.model_management is imported."""
    choice = os.environ.get("ANYI2V_DEVICE") or device or "cpu"
    if choice not in ("cpu", "auto"):
        raise ValueError(f"ANYI2V_DEVICE: expected cpu or auto, got '{choice}'")
    root = comfy_dir()
    if not host_available():
        raise RuntimeError(f"no ComfyUI test host at {root}: run `bash dev/setup_host.sh` (make test does)")
    path = str(root)
    if sys.path[:1] != [path]:
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    stale = sys.modules.get("nodes")
    if stale is not None and not str(getattr(stale, "__file__", "")).startswith(path):
        del sys.modules["nodes"]
    # main.py imports ComfyUI's `utils` package before nodes.py puts ComfyUI/comfy first on sys.path
    # (after which `utils` would resolve to comfy/utils.py); do the same.
    import comfy.cli_args
    import utils.extra_config  # noqa: F401
    import utils.install_util  # noqa: F401
    import utils.json_util  # noqa: F401

    if "comfy.model_management" not in sys.modules:
        comfy.cli_args.args.cpu = choice == "cpu" or not accelerator_available()
    import comfy.model_management  # noqa: F401  (device selection happens at import)

    return root


def load_pack():
    """Import this checkout with ComfyUI's own custom-node loader (registers its nodes); return the module."""
    import asyncio

    boot()
    import nodes

    name = str(REPO).replace(".", "_x_")
    if name not in sys.modules:
        if not asyncio.run(nodes.load_custom_node(str(REPO))):
            raise RuntimeError(f"ComfyUI could not load the pack at {REPO}")
    return sys.modules[name]


def pack_module(dotted: str):
    """A submodule of the loaded pack, e.g. pack_module("nodes.inject")."""
    import importlib

    pack = load_pack()
    return importlib.import_module(f"{pack.__name__}.{dotted}")
