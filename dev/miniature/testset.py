"""The evaluation's fixed test set: five trajectories on 256 x 256 x 8-frame videos, and per seed a scene.

Trajectories (boxes in the pack's reference JSON; per-frame boxes by the pack's own rule,
core/trajectory.py): ``right`` and ``diagonal`` (straight, about 80 px, boxes of 96 and 88 px), ``arc``
(a curved path), ``grow`` (a box that moves and grows from 80 to 112 px) and ``two`` (two 72-px objects
crossing the frame in opposite directions). Sizes and displacements stay within what the miniature was
trained on.

A case is (trajectory, seed): the seed picks the scene's object classes, colours and background
(dev/miniature/scenes.py), the condition modality (cycling edges, depth, silhouette, mixed over the seeds)
and the sampling noise. The scene's objects sit in the trajectory's first boxes; the condition image
is rendered from that scene's first frame. This set has not changed since run 4 of docs/eval.md (run 2
was measured on an earlier one).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from . import scenes as S

SIZE, FRAMES = S.SIZE, S.FRAMES


def _group(centre, side, path, end_side=None):
    cx, cy = centre
    h = side / 2
    box = [cx - h, cy - h, cx + h, cy + h]
    e = (end_side or side)
    return {"box": box, "target": [0, 0, e, e], "path": [list(map(float, p)) for p in path]}


def _arc(pivot, radius, a0, a1, n=FRAMES):
    return [(pivot[0] + radius * math.cos(math.radians(a)), pivot[1] + radius * math.sin(math.radians(a)))
            for a in np.linspace(a0, a1, n)]


TRAJECTORIES = {
    "right": [_group((72, 128), 96, [(72, 128), (152, 128)])],
    "diagonal": [_group((170, 170), 88, [(170, 170), (112, 112)])],
    "arc": [_group(_arc((150, 176), 80, 200, 255)[0], 88, _arc((150, 176), 80, 200, 255))],
    "grow": [_group((100, 104), 80, [(100, 104), (150, 150)], end_side=112)],
    "two": [_group((76, 72), 72, [(76, 72), (150, 72)]), _group((180, 184), 72, [(180, 184), (106, 184)])],
}
MODALITIES = S.CONDITIONS  # edges, depth, silhouette, mixed


def trajectory_json(name: str) -> str:
    groups = TRAJECTORIES[name]
    return json.dumps({
        "bounding_box": [g["box"] for g in groups],
        "target_box": [g["target"] for g in groups],
        "center_traj": [g["path"] for g in groups],
        "query_point": [[] for _ in groups],
        "width": SIZE, "height": SIZE, "frames": FRAMES,
    })


def trajectory_boxes(name: str) -> np.ndarray:
    """(objects, FRAMES, 4) pixel boxes by the pack's rule."""
    from core.trajectory import Trajectory

    return Trajectory.from_reference_json(trajectory_json(name)).boxes(FRAMES)


@dataclass
class Case:
    trajectory: str
    seed: int
    modality: str
    scene: S.Scene  # objects on the trajectory's boxes in every frame (the ground truth a perfect model would draw)
    boxes: np.ndarray  # (objects, F, 4)

    @property
    def key(self) -> str:
        return f"{self.trajectory}-{self.seed}"

    @property
    def prompt(self) -> str:
        return self.scene.prompt

    def condition_parts(self, scale: float = 1) -> dict:
        """The condition's images (H, W, 3 float arrays 0..1): 'image' for a single modality; for 'mixed',
        'depth' and 'edges' to be composited by the pack's Mix Conditions node inside each object's first box.
        scale: drawn at that many times the test set's resolution (for a 512 px miniature, 2)."""
        scene = self.scene.scaled(scale)
        if self.modality == "mixed":
            return {"depth": _hwc(S.condition_image(scene, "depth")),
                    "edges": _hwc(S.condition_image(scene, "edges"))}
        return {"image": _hwc(S.condition_image(scene, self.modality))}

    def condition_mask(self):
        """(H, W) coverage of the condition's objects (frame 0)."""
        return S.object_masks(self.scene, 0).sum(0).clamp(0, 1)


def _hwc(img):
    return img.permute(1, 2, 0).numpy()


def case(trajectory: str, seed: int) -> Case:
    k = list(TRAJECTORIES).index(trajectory)
    rng = np.random.default_rng([k, seed])
    boxes = trajectory_boxes(trajectory)
    return Case(trajectory, seed, MODALITIES[(seed + k) % len(MODALITIES)], S.scene_for_boxes(rng, boxes), boxes)


def cases(seeds: int, trajectories=None) -> list[Case]:
    return [case(t, s) for s in range(seeds) for t in (trajectories or TRAJECTORIES)]
