"""Box trajectories: groups (objects), each with a first box, an end-box size, a path and salient
query points; per-frame boxes for any frame count, in image pixels.

Rule (the reference's): box_j is the first box moved by path[j] - path[0]; its size goes linearly
from the first box's size to the end size over the frames, symmetric about the box centre.
A path with another number of points than frames is resampled with a monotone cubic (PCHIP,
Fritsch-Carlson) per axis over the point index (t_k = k / (P - 1)), as the reference demo UI does;
web/geometry.js implements the same maths for the widget.

Formats read and written: the reference JSON (``bounding_box``, ``target_box``, ``center_traj``,
``query_point``, plus our optional ``width``, ``height``, ``frames``; without a size the reference's
512 x 512 is assumed) and the KJNodes SplineEditor coordinates (a list of {"x", "y"} points, or a
list of such lists).

Limits (the same in web/geometry.js, refused with a message naming the field): the text, the JSON
nesting, the number of groups, path points and query points, the image size, the frame count, and
where coordinates may lie: at most one image size beyond each edge of the trajectory's own image.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, replace

import numpy as np

DEFAULT_SIZE = 512
MAX_TEXT_CHARS = 524_288  # 512 KiB of JSON: far beyond MAX_GROUPS full paths, far below what slows the frontend
MAX_DEPTH = 8  # JSON nesting (the formats need 4)
MAX_GROUPS = 16
MAX_PATH_POINTS = 1024
MAX_QUERY_POINTS = 64
MAX_SIDE = 16384  # image width / height, as the node's widgets
MAX_FRAMES = 1024


def pchip_slopes(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives of the monotone cubic through (t, y), with scipy's end conditions."""
    h = np.diff(t)
    delta = np.diff(y) / h
    n = len(t)
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    for k in range(1, n - 1):
        a, b = delta[k - 1], delta[k]
        if a == 0 or b == 0 or np.sign(a) != np.sign(b):
            d[k] = 0.0
        else:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / a + w2 / b)
    d[0] = _edge_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _edge_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _edge_slope(h0, h1, m0, m1) -> float:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return float(d)


def pchip(t: np.ndarray, y: np.ndarray, tq: np.ndarray) -> np.ndarray:
    """Evaluate the monotone cubic interpolant through (t, y) at tq (t strictly increasing)."""
    t, y, tq = (np.asarray(a, dtype=np.float64) for a in (t, y, tq))
    d = pchip_slopes(t, y)
    k = np.clip(np.searchsorted(t, tq, side="right") - 1, 0, len(t) - 2)
    h = t[k + 1] - t[k]
    s = (tq - t[k]) / h
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def resample_path(path: np.ndarray, num_frames: int) -> np.ndarray:
    """A (P, 2) polyline -> (num_frames, 2) points, PCHIP per axis over the point index."""
    path = np.asarray(path, dtype=np.float64)
    if len(path) == num_frames:
        return path.copy()
    if num_frames == 1:
        return path[:1].copy()
    t = np.linspace(0.0, 1.0, len(path))
    tq = np.linspace(0.0, 1.0, num_frames)
    return np.stack([pchip(t, path[:, 0], tq), pchip(t, path[:, 1], tq)], axis=1)


@dataclass
class Group:
    box: tuple[float, float, float, float]  # first-frame box (x1, y1, x2, y2)
    end_size: tuple[float, float]  # (width, height) of the last frame's box
    path: np.ndarray  # (P >= 2, 2) points; only displacements from path[0] matter
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) salient query points

    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    def query_points(self) -> np.ndarray:
        """The salient points; one outside the first box becomes the box centre; none -> the centre."""
        x1, y1, x2, y2 = self.box
        if len(self.points) == 0:
            return np.array([self.centre()])
        pts = np.array(self.points, dtype=np.float64)
        outside = (pts[:, 0] < x1) | (pts[:, 0] > x2) | (pts[:, 1] < y1) | (pts[:, 1] > y2)
        pts[outside] = self.centre()
        return pts

    def boxes(self, num_frames: int) -> np.ndarray:
        path = resample_path(self.path, num_frames)
        cx, cy = self.centre()
        w0, h0 = self.box[2] - self.box[0], self.box[3] - self.box[1]
        f = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
        w = w0 + (self.end_size[0] - w0) * f
        h = h0 + (self.end_size[1] - h0) * f
        cxs = cx + path[:, 0] - path[0, 0]
        cys = cy + path[:, 1] - path[0, 1]
        return np.stack([cxs - w / 2, cys - h / 2, cxs + w / 2, cys + h / 2], axis=1)


@dataclass
class Trajectory:
    groups: list[Group]
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    num_frames: int | None = None  # the frame count the user chose (None: decided by the latent)

    def __post_init__(self):
        validate(self)

    # per-frame boxes ---------------------------------------------------------------------------
    def boxes(self, num_frames: int | None = None) -> np.ndarray:
        """[groups, frames, 4] float array of (x1, y1, x2, y2) in image pixels."""
        n = num_frames if num_frames is not None else self.num_frames
        if n is None or int(n) != n or n < 1:
            raise ValueError(f"frames: a frame count >= 1 is needed, got {n}")
        return np.stack([g.boxes(int(n)) for g in self.groups])

    def query_points(self) -> list[np.ndarray]:
        return [g.query_points() for g in self.groups]

    # geometry ----------------------------------------------------------------------------------
    def scaled(self, sx: float, sy: float) -> Trajectory:
        groups = [
            Group(
                box=(g.box[0] * sx, g.box[1] * sy, g.box[2] * sx, g.box[3] * sy),
                end_size=(g.end_size[0] * sx, g.end_size[1] * sy),
                path=np.asarray(g.path, dtype=np.float64) * [sx, sy],
                points=np.asarray(g.points, dtype=np.float64).reshape(-1, 2) * [sx, sy],
            )
            for g in self.groups
        ]
        return Trajectory(groups, round(self.width * sx), round(self.height * sy), self.num_frames)

    def resized(self, width: int, height: int) -> Trajectory:
        """The same trajectory for an image of another size (coordinates scaled per axis)."""
        out = self.scaled(width / self.width, height / self.height)
        return replace(out, width=int(width), height=int(height))

    def with_frames(self, num_frames: int | None) -> Trajectory:
        return replace(self, num_frames=num_frames)

    # formats -----------------------------------------------------------------------------------
    @classmethod
    def from_reference_json(cls, obj_or_str) -> Trajectory:
        obj = _load_json(obj_or_str, "trajectory")
        if not isinstance(obj, dict):
            raise ValueError("trajectory: expected a JSON object with bounding_box, target_box, center_traj, query_point")
        for key in ("bounding_box", "center_traj"):
            if key not in obj:
                raise ValueError(f"{key}: missing from the trajectory JSON")
        boxes = _list(obj["bounding_box"], "bounding_box")
        n = len(boxes)
        if n == 0:
            raise ValueError("bounding_box: no groups (draw at least one box)")
        if n > MAX_GROUPS:
            raise ValueError(f"bounding_box: {n} groups, at most {MAX_GROUPS} are allowed")
        targets = _list(obj.get("target_box", boxes), "target_box")
        paths = _list(obj["center_traj"], "center_traj")
        points = _list(obj.get("query_point", [[] for _ in range(n)]), "query_point")
        for key, value in (("target_box", targets), ("center_traj", paths), ("query_point", points)):
            if len(value) != n:
                raise ValueError(f"{key}: {len(value)} entries for {n} groups (one per bounding_box)")
        groups = []
        for i in range(n):
            box = _numbers(boxes[i], f"bounding_box[{i}]", (4,))
            target = _numbers(targets[i], f"target_box[{i}]", (4,))
            path = _numbers(paths[i], f"center_traj[{i}]", (-1, 2))
            pts = _numbers(points[i], f"query_point[{i}]", (-1, 2)) if len(points[i]) else np.zeros((0, 2))
            groups.append(Group(tuple(box), (target[2] - target[0], target[3] - target[1]), path, pts))
        frames = obj.get("frames")
        return cls(groups, _size(obj.get("width", DEFAULT_SIZE), "width", MAX_SIDE),
                   _size(obj.get("height", DEFAULT_SIZE), "height", MAX_SIDE),
                   None if frames is None else _size(frames, "frames", MAX_FRAMES))

    def to_reference_json(self) -> dict:
        def r(v):
            return [round(float(x), 3) for x in v]

        out = {
            "bounding_box": [r(g.box) for g in self.groups],
            "target_box": [r((g.box[0], g.box[1], g.box[0] + g.end_size[0], g.box[1] + g.end_size[1])) for g in self.groups],
            "center_traj": [[r(p) for p in g.path] for g in self.groups],
            "query_point": [[r(p) for p in np.asarray(g.points).reshape(-1, 2)] for g in self.groups],
            "width": self.width,
            "height": self.height,
        }
        if self.num_frames is not None:
            out["frames"] = self.num_frames
        return out

    @classmethod
    def from_coordinates(cls, text, box_sizes, width: int, height: int, num_frames: int | None = None) -> Trajectory:
        """KJNodes coordinates: one path ([{x, y}, ...]) or several; a box of the given size (one
        (w, h) for all paths, or one per path) is centred on each path's first point."""
        obj = _load_json(text, "coordinates")
        if isinstance(obj, list) and obj and all(isinstance(p, dict) for p in obj):
            obj = [obj]
        if not isinstance(obj, list) or not obj or not all(isinstance(p, list) for p in obj):
            raise ValueError('coordinates: expected [{"x": .., "y": ..}, ...] or a list of such lists')
        if len(obj) > MAX_GROUPS:
            raise ValueError(f"coordinates: {len(obj)} paths, at most {MAX_GROUPS} are allowed")
        sizes = np.asarray(box_sizes, dtype=np.float64).reshape(-1, 2)
        if len(sizes) not in (1, len(obj)):
            raise ValueError(f"box sizes: {len(sizes)} given for {len(obj)} paths (give one, or one per path)")
        groups = []
        for i, raw in enumerate(obj):
            try:
                path = np.array([[p["x"], p["y"]] for p in raw], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f'coordinates[{i}]: every point needs numeric "x" and "y"') from e
            _finite(path, f"coordinates[{i}]")
            w, h = sizes[i if len(sizes) > 1 else 0]
            x, y = path[0]
            groups.append(Group((x - w / 2, y - h / 2, x + w / 2, y + h / 2), (w, h), path))
        return cls(groups, _size(width, "width", MAX_SIDE), _size(height, "height", MAX_SIDE), num_frames)

    def to_coordinates(self) -> str:
        return json.dumps([[{"x": round(float(x), 3), "y": round(float(y), 3)} for x, y in g.path] for g in self.groups])


def boxes_on_grid(boxes: np.ndarray, image_size: tuple[int, int], grid_size: tuple[int, int]) -> np.ndarray:
    """Scale (…, 4) pixel boxes from an image of (width, height) to a grid of (width, height) cells."""
    sx, sy = grid_size[0] / image_size[0], grid_size[1] / image_size[1]
    return np.asarray(boxes, dtype=np.float64) * np.array([sx, sy, sx, sy])


def points_on_grid(points: np.ndarray, image_size: tuple[int, int], grid_size: tuple[int, int]) -> np.ndarray:
    sx, sy = grid_size[0] / image_size[0], grid_size[1] / image_size[1]
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) * np.array([sx, sy])


def on_grid(traj: Trajectory, num_frames: int, image_size: tuple[int, int], grid_size: tuple[int, int]):
    """The trajectory laid out for an image of (width, height) and scaled to a (width, height) grid:
    boxes [groups, frames, 4] and each group's query points [K, 2], in grid cells."""
    t = traj.resized(*image_size)
    boxes = boxes_on_grid(t.boxes(num_frames), image_size, grid_size)
    return boxes, [points_on_grid(p, image_size, grid_size) for p in t.query_points()]


# validation ------------------------------------------------------------------------------------
def validate(t: Trajectory) -> None:
    if not t.groups:
        raise ValueError("bounding_box: no groups (draw at least one box)")
    if len(t.groups) > MAX_GROUPS:
        raise ValueError(f"bounding_box: {len(t.groups)} groups, at most {MAX_GROUPS} are allowed")
    _size(t.width, "width", MAX_SIDE)
    _size(t.height, "height", MAX_SIDE)
    if t.num_frames is not None:
        _size(t.num_frames, "frames", MAX_FRAMES)
    area = _Area(t.width, t.height)
    for i, g in enumerate(t.groups):
        box = np.asarray(g.box, dtype=np.float64)
        _finite(box, f"bounding_box[{i}]")
        _finite(np.asarray(g.end_size, dtype=np.float64), f"target_box[{i}]")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"bounding_box[{i}]: zero or negative size {_fmt(box)} (need x2 > x1 and y2 > y1)")
        if g.end_size[0] <= 0 or g.end_size[1] <= 0:
            raise ValueError(f"target_box[{i}]: zero or negative end size {_fmt(g.end_size)}")
        area.check(box.reshape(2, 2), f"bounding_box[{i}]")
        if box[2] <= 0 or box[3] <= 0 or box[0] >= t.width or box[1] >= t.height:
            raise ValueError(f"bounding_box[{i}]: the first box {_fmt(box)} lies entirely outside the {t.width}x{t.height} image")
        if g.end_size[0] > 3 * t.width or g.end_size[1] > 3 * t.height:
            raise ValueError(f"target_box[{i}]: end size {g.end_size[0]:g} x {g.end_size[1]:g} is more than three times "
                             f"the {t.width}x{t.height} image")
        path = np.asarray(g.path, dtype=np.float64)
        if path.ndim != 2 or path.shape[1] != 2 or len(path) < 2:
            raise ValueError(f"center_traj[{i}]: a path needs at least 2 points, got {len(path)}")
        if len(path) > MAX_PATH_POINTS:
            raise ValueError(f"center_traj[{i}]: {len(path)} points, at most {MAX_PATH_POINTS} are allowed")
        _finite(path, f"center_traj[{i}]")
        area.check(path, f"center_traj[{i}]")
        points = np.asarray(g.points, dtype=np.float64).reshape(-1, 2)
        if len(points) > MAX_QUERY_POINTS:
            raise ValueError(f"query_point[{i}]: {len(points)} points, at most {MAX_QUERY_POINTS} are allowed")
        _finite(points, f"query_point[{i}]")
        area.check(points, f"query_point[{i}]")


class _Area:
    """Where coordinates may lie: the image and one image size beyond each edge (objects may leave
    the frame; anything further is a typing or unit mistake)."""

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.tolerance = 1e-6 * max(width, height)  # resizing rounds the image size

    def check(self, xy: np.ndarray, name: str) -> None:
        w, h, tol = self.width, self.height, self.tolerance
        bad = (xy[:, 0] < -w - tol) | (xy[:, 0] > 2 * w + tol) | (xy[:, 1] < -h - tol) | (xy[:, 1] > 2 * h + tol)
        if bad.any():
            x, y = xy[np.argmax(bad)]
            raise ValueError(f"{name}: ({x:g}, {y:g}) lies outside the allowed area x {-w}..{2 * w}, y {-h}..{2 * h} "
                             f"(at most one image size beyond the {w}x{h} image)")


def _load_json(obj_or_str, name):
    if isinstance(obj_or_str, (bytes, str)):
        if len(obj_or_str) > MAX_TEXT_CHARS:
            raise ValueError(f"{name}: {len(obj_or_str):,} characters, at most {MAX_TEXT_CHARS:,} are allowed")
        if not str(obj_or_str).strip():
            raise ValueError(f"{name}: empty JSON")
        try:
            obj_or_str = json.loads(obj_or_str)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
        except RecursionError:
            raise ValueError(f"{name}: nested deeper than {MAX_DEPTH} levels") from None
    if _depth(obj_or_str) > MAX_DEPTH:
        raise ValueError(f"{name}: nested deeper than {MAX_DEPTH} levels")
    return obj_or_str


def _depth(obj) -> int:
    """Nesting depth of lists/dicts (a scalar is 0), walked without recursion; stops past MAX_DEPTH."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (list, tuple, dict)):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                break
            stack.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _list(value, name):
    if not isinstance(value, list):
        raise ValueError(f"{name}: expected a list, got {type(value).__name__}")
    return value


def _numbers(value, name, shape):
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected numbers, got {value!r:.80}") from e
    if shape == (4,):
        arr = arr.reshape(-1)
        if arr.shape != (4,):
            raise ValueError(f"{name}: expected [x1, y1, x2, y2], got {value!r:.80}")
    elif arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected a list of [x, y] points, got {value!r:.80}")
    _finite(arr, name)
    return arr


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def _finite(arr, name):
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf")


def _size(value, name, maximum) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or int(value) != value \
            or not 1 <= value <= maximum:
        raise ValueError(f"{name}: expected a whole number from 1 to {maximum}, got {value!r:.40}")
    return int(value)
