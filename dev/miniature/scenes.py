"""Procedural videos for the miniature: textured objects moving over structured backgrounds.

A scene is a static background and one or two objects. An object has a class (a shape with its own
texture: ``ball`` a shaded disc, ``crate`` a striped square, ``kite`` a diamond with a lighter core,
``plus`` an outlined cross), a colour (one of four saturated hues) and, per frame, a centre and a size
(the side of its bounding box; every shape is centrally symmetric, so the box centre is the shape's
centroid). Objects move in straight lines (several speeds and directions), along circular arcs, or
stand still, and some grow or shrink. Backgrounds are structured (gradients, large checkers, a
horizon, soft stripes) but nearly grey: objects are saturated, backgrounds are not, which is what the
locator (dev/miniature/locator.py) relies on.

Conditions of other modalities are rendered from the same scene description: an edge map (gradient
magnitude of the rendered frame), a depth-like map (a receding floor or a horizon, objects nearer and
shaped by their class) and silhouettes. Everything is deterministic given a seed.

Images are float tensors (3, H, W) in 0..1 unless said otherwise; boxes are (x1, y1, x2, y2) pixels.

Scenes are described at SIZE (256 px). ``Scene.scaled(k)`` is the same scene at k times the resolution (every
pixel quantity multiplied by k), which the 512 px miniature trains and is evaluated on; rendering takes a
``device`` (the 512 px training renders its data on the GPU), objects are rendered for all frames at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 256
FRAMES = 8
HUES = {"red": 0.0, "yellow": 50.0, "green": 130.0, "blue": 220.0}  # degrees
CLASSES = {"ball": "disc", "crate": "square", "kite": "diamond", "plus": "cross"}
BACKGROUNDS = ("gradient", "checker", "horizon", "stripes")
OBJECT_SIZE = (80.0, 120.0)  # box side at frame 0, pixels, one object (about the share of the frame SD1.5 videos give
OBJECT_SIZE_TWO = (64.0, 88.0)  # an object the size of a few 4x4-token patches of output blocks 6-7); two objects
MAX_SATURATION_BACKGROUND = 0.12
MOTIONS = ("linear", "curved", "static")


@dataclass
class SceneObject:
    kind: str  # a key of CLASSES
    colour: str  # a key of HUES
    centres: np.ndarray  # (F, 2) x, y pixels
    sizes: np.ndarray  # (F,) box side, pixels

    def boxes(self) -> np.ndarray:
        half = self.sizes[:, None] / 2
        return np.concatenate([self.centres - half, self.centres + half], axis=1)


@dataclass
class Background:
    kind: str
    value: float  # base grey level
    hue: float  # tint hue, degrees
    saturation: float  # tint saturation (small)
    angle: float  # radians: ramp direction, stripe orientation
    period: float  # pixels: checker cell, stripe period
    contrast: float
    horizon: float  # fraction of the height


@dataclass
class Scene:
    background: Background
    objects: list[SceneObject]
    frames: int = FRAMES
    size: int = SIZE
    motions: list[str] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        return " and ".join(f"a {o.colour} {o.kind}" for o in self.objects)

    def boxes(self) -> np.ndarray:
        """(objects, frames, 4) pixel boxes."""
        return np.stack([o.boxes() for o in self.objects])

    def scaled(self, k: float) -> Scene:
        """The same scene at k times the resolution: image size, object centres and sizes, background periods."""
        if k == 1:
            return self
        objects = [replace(o, centres=o.centres * k, sizes=o.sizes * k) for o in self.objects]
        return replace(self, background=replace(self.background, period=self.background.period * k),
                       objects=objects, size=int(round(self.size * k)))


# ---------------------------------------------------------------------------------------------------- colour


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h in degrees, s and v in 0..1 (broadcastable) -> (..., 3)."""
    h = torch.as_tensor(h, dtype=torch.float32)
    s = torch.as_tensor(s, dtype=torch.float32)
    v = torch.as_tensor(v, dtype=torch.float32)
    k = lambda n: (n + h / 60.0) % 6  # noqa: E731
    f = lambda n: v - v * s * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)  # noqa: E731
    return torch.stack(torch.broadcast_tensors(f(5), f(3), f(1)), -1)


def saturation(rgb: torch.Tensor) -> torch.Tensor:
    """HSV saturation of (..., 3, H, W) images -> (..., H, W)."""
    hi = rgb.amax(-3)
    lo = rgb.amin(-3)
    return (hi - lo) / hi.clamp_min(1e-6)


def hue(rgb: torch.Tensor) -> torch.Tensor:
    """HSV hue in degrees of (..., 3, H, W) images -> (..., H, W)."""
    r, g, b = rgb.unbind(-3)
    hi, lo = rgb.amax(-3), rgb.amin(-3)
    d = (hi - lo).clamp_min(1e-6)
    h = torch.where(hi == r, ((g - b) / d) % 6, torch.where(hi == g, (b - r) / d + 2, (r - g) / d + 4))
    return h * 60.0


# ---------------------------------------------------------------------------------------------------- shapes


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small float64 array on a device; on a GPU through pinned memory without waiting for the GPU (a plain
    copy from pageable memory would wait for every kernel queued before it)."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    if device.type == "mps":  # no float64 there: _like rounds on the CPU
        return t
    return t.to(device)


def _grid(size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.arange(size, dtype=torch.float32, device=device) + 0.5
    return torch.meshgrid(c, c, indexing="xy")  # x varies along columns


def _like(value, u: torch.Tensor):
    """A size-derived constant (a float, or a float64 tensor per frame) as it meets the float32 pixel grid:
    computed in double precision, then rounded to the grid's dtype (as a Python float is)."""
    return value.to(u.dtype).to(u.device) if isinstance(value, torch.Tensor) else value


def shape_sdf(shape: str, u: torch.Tensor, v: torch.Tensor, half) -> torch.Tensor:
    """Signed distance (pixels, negative inside) of a shape centred at 0 with bounding half-side `half` (a float,
    or a float64 tensor broadcasting against u and v)."""
    if shape == "disc":
        return torch.sqrt(u * u + v * v) - _like(half, u)
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) - _like(half, u)
    if shape == "diamond":
        return (u.abs() + v.abs() - _like(half, u)) / math.sqrt(2)
    if shape == "cross":
        arm = half / 3
        a = torch.maximum(u.abs() - _like(half, u), v.abs() - _like(arm, u))
        b = torch.maximum(u.abs() - _like(arm, u), v.abs() - _like(half, u))
        return torch.minimum(a, b)
    raise ValueError(f"shape: unknown '{shape}'")


def shape_texture(kind: str, u: torch.Tensor, v: torch.Tensor, half, sdf: torch.Tensor) -> torch.Tensor:
    """0 = the class's dark shade, 1 = its light shade, in object coordinates (scales with the object)."""
    if kind == "ball":  # lit from the upper left
        d = torch.sqrt((u + _like(0.35 * half, u)) ** 2 + (v + _like(0.35 * half, u)) ** 2) / _like(1.5 * half, u)
        return (1 - d).clamp(0, 1) ** 0.8
    if kind == "crate":  # diagonal stripes and a dark rim
        stripes = 0.5 + 0.5 * torch.tanh(3 * torch.sin(2 * math.pi * (u + v) / _like(0.75 * half, u)))
        rim = ((sdf + _like(0.16 * half, u)) / 1.5).clamp(0, 1)
        return stripes * (1 - rim)
    if kind == "kite":  # a light core diamond
        core = u.abs() + v.abs() - _like(0.5 * half, u)
        return (0.5 - core / 1.5).clamp(0, 1)
    if kind == "plus":  # light with a dark outline
        return ((-sdf - _like(0.07 * half, u)) / 1.5).clamp(0, 1)
    raise ValueError(f"kind: unknown '{kind}'")


def object_layers(obj: SceneObject, frame, size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha (H, W), colour (3, H, W)) of one object in one frame, anti-aliased; for a slice or an array of
    frame indices (alpha (F, H, W), colour (F, 3, H, W))."""
    single = isinstance(frame, (int, np.integer))
    frames = slice(frame, frame + 1) if single else frame
    x, y = _grid(size, device)
    geometry = _to_device(np.concatenate([obj.centres[frames], obj.sizes[frames, None] / 2], 1), x.device)
    centres = geometry[:, :2].float().to(x.device)
    half = geometry[:, 2, None, None]  # float64: see _like
    u, v = x - centres[:, 0, None, None], y - centres[:, 1, None, None]
    sdf = shape_sdf(CLASSES[obj.kind], u, v, half)
    alpha = (0.5 - sdf).clamp(0, 1)
    t = shape_texture(obj.kind, u, v, half, sdf)
    h = HUES[obj.colour]
    light = hsv_to_rgb(h, 0.75, 0.97).numpy()  # float32, as Python numbers: no copy to the device
    dark = hsv_to_rgb(h, 0.9, 0.55).numpy()
    colour = torch.stack([float(dark[c]) + float(light[c] - dark[c]) * t for c in range(3)], 1)
    return (alpha[0], colour[0]) if single else (alpha, colour)


# ---------------------------------------------------------------------------------------------------- backgrounds


def background_value(bg: Background, size: int, device=None) -> torch.Tensor:
    """The background's grey level (H, W), before tinting."""
    x, y = _grid(size, device)
    xn, yn = x / size - 0.5, y / size - 0.5
    ramp = xn * math.cos(bg.angle) + yn * math.sin(bg.angle)
    if bg.kind == "gradient":
        val = bg.value + bg.contrast * 2 * ramp
    elif bg.kind == "checker":
        cells = (torch.floor(x / bg.period) + torch.floor(y / bg.period)) % 2
        soft = 0.5 + 0.5 * torch.tanh(8 * (cells - 0.5))
        val = bg.value + bg.contrast * (soft - 0.5) + 0.3 * bg.contrast * ramp
    elif bg.kind == "horizon":
        h = bg.horizon * size
        ground = (y - h).clamp_min(0) / max(1.0, size - h)
        sky = bg.value + 0.12 + 0.1 * (yn + 0.5)
        floor = bg.value - 0.1 + 0.25 * bg.contrast * 4 * ground
        val = torch.where(y < h, sky, floor)
    elif bg.kind == "stripes":
        along = x * math.cos(bg.angle) + y * math.sin(bg.angle)
        val = bg.value + bg.contrast * 0.5 * torch.sin(2 * math.pi * along / bg.period) + 0.3 * bg.contrast * ramp
    else:
        raise ValueError(f"background: unknown '{bg.kind}'")
    return val.clamp(0.05, 0.95)


def render_background(bg: Background, size: int, device=None) -> torch.Tensor:
    val = background_value(bg, size, device)
    return hsv_to_rgb(torch.tensor(bg.hue), torch.tensor(bg.saturation), val).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------------------- rendering


def render_frame(scene: Scene, frame: int, background: torch.Tensor | None = None, device=None) -> torch.Tensor:
    return render_frames(scene, slice(frame, frame + 1), background, device)[0]


def render_frames(scene: Scene, frames, background: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """(F, 3, H, W) in 0..1: the frames of a slice or an array of frame indices."""
    img = render_background(scene.background, scene.size, device) if background is None else background
    img = img[None]
    for obj in scene.objects:
        alpha, colour = object_layers(obj, frames, scene.size, img.device)
        img = img * (1 - alpha[:, None]) + colour * alpha[:, None]
    return img


def render_video(scene: Scene, device=None) -> torch.Tensor:
    """(F, 3, H, W) in 0..1."""
    return render_frames(scene, slice(0, scene.frames), device=device)


def object_masks(scene: Scene, frame: int = 0) -> torch.Tensor:
    """(objects, H, W) coverage of each object (later objects occlude earlier ones)."""
    alphas = [object_layers(o, frame, scene.size)[0] for o in scene.objects]
    out = []
    for i, a in enumerate(alphas):
        for later in alphas[i + 1:]:
            a = a * (1 - later)
        out.append(a)
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------------- conditions

CONDITIONS = ("edges", "depth", "silhouette", "mixed")


def edge_map(image: torch.Tensor) -> torch.Tensor:
    """White edges on black: the gradient magnitude of the RGB image (Sobel, summed over channels)."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 4
    k = torch.stack([kx, kx.T])[:, None]
    g = F.conv2d(F.pad(image[:, None], (1, 1, 1, 1), mode="replicate"), k)  # (3, 2, H, W)
    mag = g.pow(2).sum(1).sqrt().sum(0)
    e = ((mag - 0.04) / 0.12).clamp(0, 1)
    return e[None].expand(3, -1, -1).contiguous()


def depth_map(scene: Scene, frame: int = 0) -> torch.Tensor:
    """A depth-like map (near = bright): a receding floor (or sky and ground), objects nearer, shaped by class."""
    size = scene.size
    x, y = _grid(size)
    bg = scene.background
    if bg.kind == "horizon":
        h = bg.horizon * size
        depth = torch.where(y < h, torch.full_like(y, 0.08), 0.2 + 0.5 * (y - h).clamp_min(0) / max(1.0, size - h))
    else:
        depth = 0.15 + 0.45 * y / size
    for obj in scene.objects:
        cx, cy = (float(c) for c in obj.centres[frame])
        half = float(obj.sizes[frame]) / 2
        u, v = x - cx, y - cy
        sdf = shape_sdf(CLASSES[obj.kind], u, v, half)
        alpha = (0.5 - sdf).clamp(0, 1)
        base = 0.15 + 0.45 * min(size, cy + half) / size + 0.15
        if obj.kind == "ball":
            shape = 0.2 * torch.sqrt((1 - (u * u + v * v) / half**2).clamp_min(0))
        elif obj.kind == "kite":
            shape = 0.2 * (1 - (u.abs() + v.abs()) / half).clamp_min(0)
        else:
            shape = torch.full_like(u, 0.08)
        depth = depth * (1 - alpha) + (base + shape).clamp(0, 1) * alpha
    return depth[None].expand(3, -1, -1).contiguous()


def silhouette(scene: Scene, frame: int = 0) -> torch.Tensor:
    a = object_masks(scene, frame).sum(0).clamp(0, 1)
    return a[None].expand(3, -1, -1).contiguous()


def condition_image(scene: Scene, modality: str, frame: int = 0) -> torch.Tensor:
    """One condition of a scene's frame. ``mixed`` is the depth map with the edge map inside the objects'
    boxes (the eval builds it with the pack's AnyI2V Mix Conditions node instead; this is its reference)."""
    if modality == "edges":
        return edge_map(render_frame(scene, frame))
    if modality == "depth":
        return depth_map(scene, frame)
    if modality == "silhouette":
        return silhouette(scene, frame)
    if modality == "mixed":
        base, overlay = depth_map(scene, frame), edge_map(render_frame(scene, frame))
        region = torch.zeros(scene.size, scene.size)
        for box in scene.boxes()[:, frame]:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            region[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = 1.0
        return base * (1 - region) + overlay * region
    raise ValueError(f"modality: expected one of {', '.join(CONDITIONS)}, got '{modality}'")


# ---------------------------------------------------------------------------------------------------- sampling


def sample_background(rng: np.random.Generator) -> Background:
    return Background(
        kind=str(rng.choice(BACKGROUNDS)),
        value=float(rng.uniform(0.35, 0.7)),
        hue=float(rng.uniform(0, 360)),
        saturation=float(rng.uniform(0.0, MAX_SATURATION_BACKGROUND)),
        angle=float(rng.uniform(0, 2 * math.pi)),
        period=float(rng.uniform(48, 96)),
        contrast=float(rng.uniform(0.08, 0.16)),
        horizon=float(rng.uniform(0.3, 0.6)),
    )


def _inside(centres, sizes, size, margin=2.0) -> bool:
    half = sizes[:, None] / 2
    return bool(((centres - half) >= margin).all() and ((centres + half) <= size - margin).all())


def _apart(a: SceneObject, b: SceneObject, gap=4.0) -> bool:
    ba, bb = a.boxes(), b.boxes()
    overlap_x = (np.minimum(ba[:, 2], bb[:, 2]) + gap) > np.maximum(ba[:, 0], bb[:, 0])
    overlap_y = (np.minimum(ba[:, 3], bb[:, 3]) + gap) > np.maximum(ba[:, 1], bb[:, 1])
    return not bool((overlap_x & overlap_y).any())


def sample_path(rng: np.random.Generator, frames: int, size: int, start_size: float) -> tuple[np.ndarray, np.ndarray, str]:
    """(centres (F, 2), sizes (F,), motion kind) that keep the object inside the frame."""
    t = np.arange(frames, dtype=np.float64)
    for _ in range(200):
        motion = str(rng.choice(MOTIONS, p=[0.55, 0.3, 0.15]))
        end_scale = float(rng.uniform(0.7, 1.4)) if rng.random() < 0.3 else 1.0
        sizes = start_size * (1 + (end_scale - 1) * t / max(1, frames - 1))
        start = rng.uniform(start_size / 2, size - start_size / 2, 2)
        if motion == "static":
            centres = np.repeat(start[None], frames, 0)
        elif motion == "linear":
            speed, angle = rng.uniform(2.0, 12.0), rng.uniform(0, 2 * math.pi)
            centres = start[None] + speed * t[:, None] * np.array([math.cos(angle), math.sin(angle)])[None]
        else:  # an arc of a circle through `start`
            radius = rng.uniform(50, 160)
            speed = rng.uniform(3.0, 12.0) * (1 if rng.random() < 0.5 else -1)
            phase = rng.uniform(0, 2 * math.pi)
            pivot = start - radius * np.array([math.cos(phase), math.sin(phase)])
            ang = phase + speed * t / radius
            centres = pivot[None] + radius * np.stack([np.cos(ang), np.sin(ang)], 1)
        if _inside(centres, sizes, size):
            return centres, sizes, motion
    return np.repeat(np.array([[size / 2, size / 2]]), frames, 0), np.full(frames, start_size), "static"


def sample_scene(rng: np.random.Generator, n_objects: int | None = None, frames: int = FRAMES, size: int = SIZE) -> Scene:
    """A random scene with one object (60 %) or two (40 %) unless `n_objects` is given."""
    if n_objects is None:
        n_objects = 1 if rng.random() < 0.6 else 2
    background = sample_background(rng)
    for _ in range(100):
        objects, motions = [], []
        colours = rng.permutation(list(HUES))
        for i in range(n_objects):
            side = float(rng.uniform(*(OBJECT_SIZE if n_objects == 1 else OBJECT_SIZE_TWO)))
            centres, sizes, motion = sample_path(rng, frames, size, side)
            objects.append(SceneObject(str(rng.choice(list(CLASSES))), str(colours[i]), centres, sizes))
            motions.append(motion)
        if all(_apart(a, b) for i, a in enumerate(objects) for b in objects[i + 1:]):
            return Scene(background, objects, frames, size, motions)
    return Scene(background, objects[:1], frames, size, motions[:1])


def scene_for_boxes(rng: np.random.Generator, boxes: np.ndarray, size: int = SIZE) -> Scene:
    """A scene whose objects fill the given (objects, F, 4) square-ish boxes; class, colour and background random."""
    boxes = np.asarray(boxes, dtype=np.float64)
    background = sample_background(rng)
    colours = rng.permutation(list(HUES))
    objects = []
    for i, b in enumerate(boxes):
        centres = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
        sizes = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        objects.append(SceneObject(str(rng.choice(list(CLASSES))), str(colours[i % len(colours)]), centres, sizes))
    return Scene(background, objects, boxes.shape[1], size, ["given"] * len(objects))
