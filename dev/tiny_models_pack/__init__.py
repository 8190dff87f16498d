"""TEST SUPPORT pack for a ComfyUI server: teaches ComfyUI's model detection the tiny SD1.5-layout
checkpoint and the miniature's (see dev/support/tiny_models.py, dev/miniature/profiles.py). Linked into a
server's custom_nodes by the tests and by `make demo` in tiny-model mode; never shipped. It adds no nodes."""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.append(_REPO)  # appended: ComfyUI's own top-level modules keep precedence

from dev.miniature.profiles import PROFILES  # noqa: E402
from dev.support.tiny_models import register_sd15_layout, register_tiny_sd15  # noqa: E402

register_tiny_sd15()
for _profile in PROFILES.values():
    register_sd15_layout(_profile.model_channels, _profile.num_heads)

NODE_CLASS_MAPPINGS = {}
