"""Locate and boot the real ComfyUI 0.3.75 test host (built by dev/setup_host.sh) in-process.

``boot()`` puts the host's ComfyUI folder first on sys.path (its top-level ``nodes`` must win over
this pack's ``nodes/`` package), forces the CPU before ``comfy.model_management`` is imported, and
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


def boot() -> Path:
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

    comfy.cli_args.args.cpu = True
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
