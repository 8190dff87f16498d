"""AnyI2V Feature View: see the captured features (paper Fig. 5) and the masks the trajectory gets."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..core.blocks import DEFAULT_OPT_BLOCKS
from ..core.optimize import COMPRESS, query_maps
from ..core.trajectory import on_grid
from ..core.view import first_frame_masks, pca_rgb, upsample
from .types import CATEGORY, Features
from .types import Trajectory as TrajectoryType


class FeatureView(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VFeatureView",
            display_name="AnyI2V Feature View",
            category=CATEGORY,
            description="The captured query features of each block as RGB (first three principal components), and "
                        "each trajectory group's semantic mask in its first box, to see why a trajectory is or is not followed.",
            inputs=[
                Features.Input("features", tooltip="Features from AnyI2V Invert Condition."),
                TrajectoryType.Input("trajectory", optional=True, tooltip="Optional: the trajectory whose first-frame masks to show."),
                io.Int.Input("pca_dim", default=64, min=1, max=1280, tooltip="Components M used for the masks (as the sampler)."),
            ],
            outputs=[io.Image.Output(display_name="features_rgb"), io.Mask.Output(display_name="group_masks")],
        )

    @classmethod
    def execute(cls, features, pca_dim, trajectory=None) -> io.NodeOutput:
        h, w = features.image_hw
        views = [upsample(pca_rgb(features.queries[b], *features.query_hw[b]), h, w) for b in sorted(features.queries)]
        rgb = torch.cat(views)
        if trajectory is None:
            return io.NodeOutput(rgb, torch.zeros(1, h, w))
        blocks = [b for b in DEFAULT_OPT_BLOCKS if b in features.queries] or sorted(features.queries)[:1]
        grid = (h // COMPRESS, w // COMPRESS)
        maps = query_maps({b: features.queries[b] for b in blocks}, {b: features.query_hw[b] for b in blocks}, grid, pca_dim)
        boxes, points = on_grid(trajectory, 1, (w, h), (grid[1], grid[0]))
        masks = first_frame_masks(maps, torch.from_numpy(boxes), [torch.from_numpy(p) for p in points])
        return io.NodeOutput(rgb, upsample(masks, h, w))


NODES = [FeatureView]
