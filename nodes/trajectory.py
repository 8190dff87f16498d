"""Trajectory nodes: the box editor's node, KJNodes coordinates in, and a drawing node to check."""

from __future__ import annotations

import math

import numpy as np
import torch
from comfy_api.latest import io, ui
from PIL import Image, ImageDraw

from ..core.trajectory import MAX_SIDE, Trajectory
from .types import CATEGORY
from .types import Trajectory as TrajectoryType

EXAMPLE_JSON = (
    '{"bounding_box": [[96, 200, 256, 330]], "target_box": [[0, 0, 160, 130]], '
    '"center_traj": [[[176, 265], [256, 262], [336, 265]]], "query_point": [[[176, 265]]], '
    '"width": 512, "height": 512}'
)
BACKGROUND_KEY = "anyi2v_background"  # the node's ui output: the editor draws it; the frontend shows no preview
PALETTE = [(255, 80, 80), (80, 200, 255), (120, 230, 90), (255, 200, 60), (210, 110, 255), (255, 140, 200)]


def parse_trajectory(text: str, width: int, height: int, frames: int | None) -> Trajectory:
    """The widget's JSON (reference format or KJNodes coordinates) for an image of width x height."""
    text = (text or "").strip()
    if not text:
        raise ValueError("trajectory: empty JSON (draw a box in the editor or paste a trajectory)")
    if text.startswith("[") or '"x"' in text[:200]:
        traj = Trajectory.from_coordinates(text, (width / 4, height / 4), width, height)
    else:
        traj = Trajectory.from_reference_json(text)
    if (traj.width, traj.height) != (width, height):
        traj = traj.resized(width, height)
    return traj.with_frames(frames)


class TrajectoryNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VTrajectory",
            display_name="AnyI2V Trajectory",
            category=CATEGORY,
            description="Draw boxes and their motion paths on the condition image. The JSON is the single source of truth.",
            inputs=[
                io.String.Input("trajectory", multiline=True, default=EXAMPLE_JSON,
                                tooltip="The trajectory as JSON (edited by the box editor): the paper's reference format, "
                                        "or KJNodes {x, y} coordinates. Coordinates are image pixels."),
                io.Int.Input("frames", default=16, min=1, max=1024, tooltip="Number of video frames the boxes are laid out for."),
                io.Int.Input("width", default=512, min=8, max=16384, step=8,
                             tooltip="Image width in pixels when no image is connected."),
                io.Int.Input("height", default=512, min=8, max=16384, step=8,
                             tooltip="Image height in pixels when no image is connected."),
                io.Image.Input("image", optional=True,
                               tooltip="The condition image: shown behind the boxes; its size sets the coordinate space."),
            ],
            outputs=[TrajectoryType.Output(display_name="trajectory")],
        )

    @classmethod
    def validate_inputs(cls, trajectory=None):
        """Refuse a bad trajectory when the prompt is queued (a message on the node, nothing runs).
        A linked trajectory is checked when the node runs. KJNodes coordinates carry no image size:
        here they are checked against the largest one, at run time against the real one."""
        if not isinstance(trajectory, str):
            return True
        try:
            parse_trajectory(trajectory, MAX_SIDE, MAX_SIDE, None)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, trajectory, frames, width, height, image=None) -> io.NodeOutput:
        if image is not None:
            height, width = int(image.shape[1]), int(image.shape[2])
        traj = parse_trajectory(trajectory, width, height, frames)
        if image is None:
            return io.NodeOutput(traj)
        # under a key of our own: the editor draws it behind the boxes, the frontend adds no preview below
        background = ui.PreviewImage(image[:1], cls=cls).as_dict()["images"]
        return io.NodeOutput(traj, ui={BACKGROUND_KEY: background})


class TrajectoryFromCoordinates(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VTrajectoryFromCoordinates",
            display_name="AnyI2V Trajectory From Coordinates",
            category=CATEGORY,
            description="KJNodes Spline Editor coordinates (one or several paths) to an AnyI2V trajectory: "
                        "a box of the given size rides on each path.",
            inputs=[
                io.String.Input("coordinates", multiline=True, default='[{"x": 128, "y": 256}, {"x": 384, "y": 256}]',
                                tooltip='The coordinates STRING of a Spline Editor: [{"x": .., "y": ..}, ...] or a list of such paths.'),
                io.String.Input("box_sizes", default="128x128",
                                tooltip="Box width x height in pixels: one for all paths (128x128) or one per path, comma-separated (128x96, 64x64)."),
                io.Int.Input("width", default=512, min=8, max=16384, step=8, tooltip="Width of the image the coordinates refer to."),
                io.Int.Input("height", default=512, min=8, max=16384, step=8, tooltip="Height of the image the coordinates refer to."),
                io.Int.Input("frames", default=16, min=1, max=1024, tooltip="Number of video frames."),
            ],
            outputs=[TrajectoryType.Output(display_name="trajectory")],
        )

    @classmethod
    def execute(cls, coordinates, box_sizes, width, height, frames) -> io.NodeOutput:
        return io.NodeOutput(Trajectory.from_coordinates(coordinates, parse_sizes(box_sizes), width, height, frames))


def parse_sizes(text: str) -> list[tuple[float, float]]:
    sizes = []
    for item in str(text).replace(" ", "").split(","):
        if not item:
            continue
        try:
            w, h = (float(v) for v in item.lower().split("x"))
        except ValueError as e:
            raise ValueError(f"box_sizes: '{item}' is not WIDTHxHEIGHT (e.g. 128x96)") from e
        if w <= 0 or h <= 0:
            raise ValueError(f"box_sizes: '{item}' must be positive")
        sizes.append((w, h))
    if not sizes:
        raise ValueError("box_sizes: give at least one WIDTHxHEIGHT")
    return sizes


def draw_frames(images: torch.Tensor, traj: Trajectory) -> torch.Tensor:
    """Each frame with its boxes, the paths (box centres), the query points and the frame index."""
    n, h, w, _ = images.shape
    t = traj.resized(w, h)
    boxes = t.boxes(n)
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    points = t.query_points()
    line = max(1, round(min(w, h) / 200))
    out = []
    for j in range(n):
        frame = Image.fromarray((images[j].clamp(0, 1).cpu().numpy()[..., :3] * 255).round().astype(np.uint8))
        d = ImageDraw.Draw(frame)
        for g in range(len(boxes)):
            colour = PALETTE[g % len(PALETTE)]
            d.line([tuple(p) for p in centres[g]], fill=colour, width=line)
            d.rectangle(tuple(boxes[g, j]), outline=colour, width=2 * line)
            if j == 0:
                r = 2 * line + 1
                for x, y in points[g]:
                    d.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        d.text((4, 2), f"frame {j}", fill=(255, 255, 255))
        out.append(torch.from_numpy(np.asarray(frame, dtype=np.float32) / 255.0))
    return torch.stack(out).to(images.device)


def contact_sheet(frames: torch.Tensor, columns: int | None = None) -> torch.Tensor:
    """All frames tiled row by row into one image [1, rows*H, cols*W, C] (empty cells black)."""
    n, h, w, c = frames.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = frames.new_zeros(rows * h, cols * w, c)
    for i in range(n):
        r, k = divmod(i, cols)
        sheet[r * h:(r + 1) * h, k * w:(k + 1) * w] = frames[i]
    return sheet[None]


class DrawTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VDrawTrajectory",
            display_name="AnyI2V Draw Trajectory",
            category=CATEGORY,
            description="Draw each frame's boxes, the paths and query points on images, to preview a trajectory or check a video.",
            inputs=[
                io.Image.Input("images", tooltip="The frames to draw on (e.g. the decoded video, or the condition image repeated)."),
                TrajectoryType.Input("trajectory", tooltip="The trajectory; it is scaled to the images' size and laid out over their count."),
            ],
            outputs=[io.Image.Output(display_name="images"), io.Image.Output(display_name="sheet")],
        )

    @classmethod
    def execute(cls, images, trajectory) -> io.NodeOutput:
        drawn = draw_frames(images, trajectory)
        return io.NodeOutput(drawn, contact_sheet(drawn))


NODES = [TrajectoryNode, TrajectoryFromCoordinates, DrawTrajectory]
