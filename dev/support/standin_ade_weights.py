"""Deterministic weights for the stand-in motion module (TEST DOUBLE, see dev/standin_ade)."""

from __future__ import annotations

import torch

# (kind, block, channels) of the tiny SD1.5-layout UNet: 8 input and 12 output slots, as ADE's 8 down + 12 up.
TINY_SLOTS = [("input", i, c) for i, c in ((1, 32), (2, 32), (4, 64), (5, 64), (7, 64), (8, 64), (10, 64), (11, 64))] + [
    ("output", i, 64 if i < 9 else 32) for i in range(12)
]


def motion_module_state_dict(seed: int = 4, slots=TINY_SLOTS) -> dict[str, torch.Tensor]:
    """slots: (kind, block, channels) per motion module (dev/standin_ade/motion.motion_slots gives them for a UNet)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for kind, block, c in slots:
        key = f"{kind}.{block}"
        sd[f"{key}.norm.weight"] = torch.ones(c)
        sd[f"{key}.norm.bias"] = torch.zeros(c)
        for name in ("to_q", "to_k", "to_v", "to_out"):
            sd[f"{key}.{name}.weight"] = torch.randn(c, c, generator=gen) / c**0.5
            sd[f"{key}.{name}.bias"] = 0.02 * torch.randn(c, generator=gen)
        sd[f"{key}.pos"] = 0.1 * torch.randn(64, c, generator=gen)
    return sd
