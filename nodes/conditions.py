"""Condition builders: several condition images into one (mixed modalities, as in the paper)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..core.composite import SPLITS, composite, fit_mask, split_mask
from ..core.composite import feather as soften
from .types import CATEGORY


class MixConditions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VMixConditions",
            display_name="AnyI2V Mix Conditions",
            category=CATEGORY,
            description="Composite two condition images (e.g. depth for the background, a sketch for the "
            "foreground) into one condition image. Chain the node for more than two.",
            inputs=[
                io.Image.Input("base", tooltip="The condition image that fills everything outside the overlay region (e.g. a depth map)."),
                io.Image.Input("overlay", tooltip="The condition image placed inside the region (e.g. a sketch); resized to the base's size."),
                io.Combo.Input("mode", options=list(SPLITS), default="inside box", tooltip="Where the overlay goes: the MASK input, one side of a split, or a box."),
                io.Float.Input("position", default=0.5, min=0.0, max=1.0, step=0.01, tooltip="For the splits: where the split lies, as a fraction of the width or height."),
                io.Int.Input("x1", default=0, min=0, max=16384, tooltip="For 'inside box': left edge of the box, in base-image pixels."),
                io.Int.Input("y1", default=0, min=0, max=16384, tooltip="For 'inside box': top edge of the box, in base-image pixels."),
                io.Int.Input("x2", default=256, min=1, max=16384, tooltip="For 'inside box': right edge of the box (exclusive), in pixels."),
                io.Int.Input("y2", default=256, min=1, max=16384, tooltip="For 'inside box': bottom edge of the box (exclusive), in pixels."),
                io.Int.Input("feather", default=0, min=0, max=256, tooltip="Soften the region's edge by this many pixels (0 = hard edge)."),
                io.Mask.Input("mask", optional=True, tooltip="For mode 'mask': where the overlay goes (1 = overlay)."),
            ],
            outputs=[
                io.Image.Output(display_name="condition"),
                io.Mask.Output(display_name="overlay_mask"),
            ],
        )

    @classmethod
    def execute(cls, base, overlay, mode, position, x1, y1, x2, y2, feather, mask=None) -> io.NodeOutput:
        _, h, w, _ = base.shape
        if mode == "mask":
            if mask is None:
                raise ValueError("mask: mode 'mask' needs the MASK input connected")
            region = fit_mask(mask, h, w)
        else:
            region = split_mask(h, w, mode, position, (x1, y1, x2, y2))[None]
        region = torch.stack([soften(m, feather) for m in region]).to(base.device)
        return io.NodeOutput(composite(base, overlay, region), region)


NODES = [MixConditions]
