"""Render a mesh or a point cloud from an orbit camera into condition images: depth, normals, point splats.

Plain torch, no OpenGL: triangles are rasterised by testing, for every face, the pixel centres inside
its screen bounding box (vectorised in chunks), with a z-buffer; points are splatted as discs of a
given pixel radius. Runs on whatever device the tensors are on.

Conventions. World: y up (glTF/OBJ). Camera (OpenGL): looks down -z, y up; azimuth 0 / elevation 0 puts
the eye on +z, azimuth turns it towards +x, elevation 90 looks straight down. Images: row 0 at the top,
pixel centres at (i + 0.5). Depth images hold inverse depth normalised over the scene's bounding sphere
(nearest possible point 1, farthest 0; background 0), as depth estimators and depth ControlNets do
(near is bright). Normal images hold camera-space normals turned to face the camera, as n * 0.5 + 0.5
(x right -> red, y up -> green, towards the viewer -> blue); background black.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CHUNK = 1 << 21  # candidate (face, pixel) pairs per rasterisation chunk
NEAR = 1e-4
EMPTY = torch.iinfo(torch.int64).max  # no candidate yet at this pixel


@dataclass(frozen=True)
class OrbitCamera:
    azimuth: float = 0.0  # degrees
    elevation: float = 0.0  # degrees, -90..90
    distance: float = 3.0  # from the target
    fov: float = 45.0  # vertical field of view, degrees
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def eye(self) -> torch.Tensor:
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        offset = torch.tensor([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)], dtype=torch.float64)
        return torch.tensor(self.target, dtype=torch.float64) + self.distance * offset

    def rotation(self) -> torch.Tensor:
        """World -> camera rotation (rows: the camera's right, up and backward axes in world coordinates)."""
        back = self.eye() - torch.tensor(self.target, dtype=torch.float64)
        back = back / back.norm()
        up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        if torch.linalg.cross(up, back).norm() < 1e-9:  # looking straight down or up: azimuth picks "up"
            az = math.radians(self.azimuth)
            up = torch.tensor([-math.sin(az), 0.0, -math.cos(az)], dtype=torch.float64) * math.copysign(1.0, back[1].item())
        right = torch.linalg.cross(up, back)
        right = right / right.norm()
        return torch.stack([right, torch.linalg.cross(back, right), back])

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        r = self.rotation().to(points)
        return (points - self.eye().to(points)) @ r.T

    def focal(self, height: int) -> float:
        return (height / 2) / math.tan(math.radians(self.fov) / 2)


def bounding_sphere(points: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(centre, radius) of `points` (N, 3): the bounding-box centre and the farthest point's distance to it."""
    centre = (points.amin(0) + points.amax(0)) / 2
    return centre, float((points - centre).norm(dim=-1).max())


def fit_unit_sphere(points: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Centre (bounding-box centre) and scale to fit `points` (N, 3) in the unit sphere; returns (points, scale)."""
    centre, radius = bounding_sphere(points)
    scale = 1.0 / radius if radius > 0 else 1.0
    return (points - centre) * scale, scale


def project(cam_points: torch.Tensor, camera: OrbitCamera, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-space points -> (pixel xy (N, 2), depth (N,)); depth is the distance along the view axis."""
    h, w = size
    depth = -cam_points[:, 2]
    f = camera.focal(h)
    safe = depth.clamp_min(NEAR)
    xy = torch.stack([w / 2 + f * cam_points[:, 0] / safe, h / 2 - f * cam_points[:, 1] / safe], dim=-1)
    return xy, depth


def _take_nearest(best_depth, best_index, pix, depth, index):
    """Z-buffer merge: at each pixel keep the nearest candidate (ties: the smallest index, so results are
    deterministic on every device); updates best_depth/best_index in place."""
    n = best_depth.numel()
    chunk_min = torch.full((n,), math.inf, dtype=depth.dtype, device=depth.device).scatter_reduce(0, pix, depth, "amin")
    at_min = depth == chunk_min[pix]
    chunk_idx = torch.full((n,), EMPTY, dtype=torch.int64, device=depth.device).scatter_reduce(
        0, pix[at_min], index[at_min], "amin")
    hit = chunk_idx != EMPTY
    better = hit & ((chunk_min < best_depth) | ((chunk_min == best_depth) & (chunk_idx < best_index)))
    best_depth[better] = chunk_min[better]
    best_index[better] = chunk_idx[better]


def rasterize(xy: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, size: tuple[int, int]):
    """Triangles (faces (F, 3) into projected vertices xy (V, 2), depth (V,)) -> per pixel
    (depth (H, W), inf where empty; face index (H, W), -1 where empty; perspective-correct barycentrics
    (H, W, 3)). Faces with a vertex at or behind the near plane are not drawn."""
    h, w = size
    dev = xy.device
    faces = faces.long()
    kept = (depth[faces] > NEAR).all(dim=1).nonzero().squeeze(1)
    tri_xy, tri_depth = xy[faces[kept]], depth[faces[kept]]  # (F', 3, 2), (F', 3)
    best_depth = torch.full((h * w,), math.inf, dtype=depth.dtype, device=dev)
    best = torch.full((h * w,), EMPTY, dtype=torch.int64, device=dev)
    x0 = (tri_xy[..., 0].amin(1) - 0.5).ceil().clamp(0, w).long()
    x1 = (tri_xy[..., 0].amax(1) - 0.5).floor().clamp(-1, w - 1).long()
    y0 = (tri_xy[..., 1].amin(1) - 0.5).ceil().clamp(0, h).long()
    y1 = (tri_xy[..., 1].amax(1) - 0.5).floor().clamp(-1, h - 1).long()
    bw = (x1 - x0 + 1).clamp_min(0)
    counts = bw * (y1 - y0 + 1).clamp_min(0)
    ends = counts.cumsum(0)
    start = 0
    while start < len(kept):  # chunks of about CHUNK candidate (face, pixel) pairs
        stop = max(int(torch.searchsorted(ends, ends[start] - counts[start] + CHUNK, right=True)), start + 1)
        f = torch.arange(start, stop, device=dev).repeat_interleave(counts[start:stop])
        first = ends[start] - counts[start]  # the chunk's first candidate, counted over all faces
        offset = torch.arange(len(f), device=dev) + first - (ends[f] - counts[f])
        px, py = x0[f] + offset % bw[f], y0[f] + offset // bw[f]
        inside, _, d = _barycentric(tri_xy[f], tri_depth[f], px, py)
        pix = (py * w + px)[inside]
        # candidate id face * H * W + pixel: ties in depth go to the first face
        _take_nearest(best_depth, best, pix, d[inside], f[inside] * (h * w) + pix)
        start = stop
    pix = (best != EMPTY).nonzero().squeeze(1)
    f = best[pix] // (h * w)
    face = torch.full((h * w,), -1, dtype=torch.long, device=dev)
    face[pix] = kept[f]
    bary = torch.zeros(h * w, 3, dtype=xy.dtype, device=dev)
    bary[pix] = _barycentric(tri_xy[f], tri_depth[f], pix % w, pix // w)[1]
    return best_depth.view(h, w), face.view(h, w), bary.view(h, w, 3)


def _barycentric(tri_xy, tri_depth, px, py):
    """Pixel centres (px + 0.5, py + 0.5) against triangles tri_xy (N, 3, 2) with vertex depths (N, 3):
    (inside (N,), perspective-correct barycentrics (N, 3), depth (N,)). Either winding counts as inside."""
    cx, cy = px.to(tri_xy.dtype) + 0.5, py.to(tri_xy.dtype) + 0.5
    a, b, c = tri_xy[:, 0], tri_xy[:, 1], tri_xy[:, 2]

    def edge(p, q):  # twice the signed area of (p, q, pixel centre)
        return (q[:, 0] - p[:, 0]) * (cy - p[:, 1]) - (q[:, 1] - p[:, 1]) * (cx - p[:, 0])

    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    screen = torch.stack([edge(b, c), edge(c, a), edge(a, b)], dim=-1) / torch.where(area == 0, 1.0, area)[:, None]
    inside = (area != 0) & (screen >= 0).all(dim=-1)
    inv = screen / tri_depth  # perspective correction: 1 / depth is linear on screen
    inv_depth = inv.sum(-1).clamp_min(1e-12)
    return inside, inv / inv_depth[:, None], 1.0 / inv_depth


def splat(xy: torch.Tensor, depth: torch.Tensor, radius: float, size: tuple[int, int]):
    """Points as discs of `radius` pixels -> (depth (H, W), inf where empty; point index (H, W), -1 where empty).
    Points at or behind the near plane are not drawn."""
    h, w = size
    dev = xy.device
    best_depth = torch.full((h * w,), math.inf, dtype=depth.dtype, device=dev)
    best = torch.full((h * w,), EMPTY, dtype=torch.int64, device=dev)
    front = depth > NEAR
    index = torch.arange(len(depth), device=dev)[front]
    cx, cy, d = (xy[front, 0] - 0.5).round().long(), (xy[front, 1] - 0.5).round().long(), depth[front]
    r = max(0, math.floor(radius))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy > radius * radius + 1e-9 and (dx or dy):
                continue
            px, py = cx + dx, cy + dy
            ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            pix = py[ok] * w + px[ok]
            _take_nearest(best_depth, best, pix, d[ok], index[ok])
    found = best != EMPTY
    point = torch.where(found, best, torch.full_like(best, -1))
    return best_depth.view(h, w), point.view(h, w)


def depth_image(depth: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """(H, W) depth, inf where empty -> (H, W) in [0, 1]: inverse depth normalised between `far` (0) and `near` (1)."""
    inv = (1.0 / depth - 1.0 / far) / (1.0 / near - 1.0 / far)
    return torch.where(torch.isfinite(depth), inv.clamp(0, 1), torch.zeros_like(depth))


def scene_depth_rgb(depth: torch.Tensor, points: torch.Tensor, camera: OrbitCamera) -> torch.Tensor:
    """(H, W) depth -> (H, W, 3) grey depth image, normalised over the scene's bounding sphere seen from the eye."""
    centre, radius = bounding_sphere(points)
    dist = float((camera.eye().to(points) - centre).norm())
    near, far = max(dist - radius, NEAR), max(dist + radius, 2 * NEAR)
    return depth_image(depth, near, far)[..., None].expand(*depth.shape, 3).contiguous()


def normal_image(normals_cam: torch.Tensor, view_dirs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel camera-space normals (H, W, 3) and view directions (camera -> surface, (H, W, 3)) ->
    (H, W, 3) RGB: each normal unit length and turned towards the camera, as n * 0.5 + 0.5; black where not `mask`."""
    n = torch.nn.functional.normalize(normals_cam, dim=-1)
    n = torch.where(((n * view_dirs).sum(-1, keepdim=True) > 0), -n, n)
    return torch.where(mask[..., None], n * 0.5 + 0.5, torch.zeros_like(n))


def view_directions(camera: OrbitCamera, size: tuple[int, int], dtype=torch.float32, device=None) -> torch.Tensor:
    """(H, W, 3) unit camera-space directions from the eye through each pixel centre."""
    h, w = size
    f = camera.focal(h)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device), indexing="ij")
    dirs = torch.stack([(xs + 0.5 - w / 2) / f, -(ys + 0.5 - h / 2) / f, -torch.ones_like(xs)], dim=-1)
    return torch.nn.functional.normalize(dirs, dim=-1)


def _face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F, 3) face normals, unnormalised: their length is twice the face's area."""
    tri = vertices[faces.long()]
    return torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (V, 3) of a triangle mesh."""
    face_n = _face_normals(vertices, faces)
    out = torch.zeros_like(vertices).index_add_(0, faces.long().reshape(-1), face_n.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(out, dim=-1)


CREASE_DEGREES = 30.0


def corner_normals(vertices: torch.Tensor, faces: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """(F, 3, 3) normal of each face corner: the vertex normal where it is within CREASE_DEGREES of the face's
    own normal (smooth surfaces), the face normal where it is not (edges of a cube stay sharp)."""
    face_n = torch.nn.functional.normalize(_face_normals(vertices, faces), dim=-1)
    vn = torch.nn.functional.normalize(normals[faces.long()].to(vertices), dim=-1)
    smooth = (vn * face_n[:, None]).sum(-1, keepdim=True).abs() >= math.cos(math.radians(CREASE_DEGREES))
    return torch.where(smooth, vn, face_n[:, None].expand_as(vn))


MESH_MODES = ("depth", "normal")
POINT_MODES = ("depth", "splat", "normal")


def render_mesh(vertices, faces, camera: OrbitCamera, size, mode="depth", normals=None, fit=True):
    """A triangle mesh -> (image (H, W, 3) in [0, 1], mask (H, W) bool). `fit` centres and scales it into
    the unit sphere first (the camera distance is then in units of the object's radius)."""
    if mode not in MESH_MODES:
        raise ValueError(f"mode: expected one of {', '.join(MESH_MODES)}, got '{mode}'")
    vertices = vertices.float()
    if fit:
        vertices, _ = fit_unit_sphere(vertices)
    if normals is None:
        normals = vertex_normals(vertices, faces)
    cam = camera.to_camera(vertices)
    xy, depth = project(cam, camera, size)
    zbuf, face, bary = rasterize(xy, depth, faces, size)
    mask = face >= 0
    if mode == "depth":
        return scene_depth_rgb(zbuf, vertices, camera), mask
    corners = corner_normals(vertices, faces, normals) @ camera.rotation().to(vertices).T  # (F, 3, 3)
    per_pixel = (corners[face.clamp_min(0)] * bary[..., None]).sum(-2)
    return normal_image(per_pixel, view_directions(camera, size, vertices.dtype, vertices.device), mask), mask


def render_points(points, camera: OrbitCamera, size, mode="depth", radius=1.5, colors=None, normals=None, fit=True):
    """A point cloud -> (image (H, W, 3) in [0, 1], mask (H, W) bool): splats of `radius` pixels showing
    inverse depth, the points' colours (white where it has none) or their normals."""
    if mode not in POINT_MODES:
        raise ValueError(f"mode: expected one of {', '.join(POINT_MODES)}, got '{mode}'")
    if mode == "normal" and normals is None:
        raise ValueError("mode: 'normal' needs a point cloud with normals; this one has none")
    points = points.float()
    if fit:
        points, _ = fit_unit_sphere(points)
    xy, depth = project(camera.to_camera(points), camera, size)
    zbuf, point = splat(xy, depth, radius, size)
    mask = point >= 0
    if mode == "depth":
        return scene_depth_rgb(zbuf, points, camera), mask
    if mode == "splat":
        rgb = colors.float() if colors is not None else torch.ones_like(points)
        return torch.where(mask[..., None], rgb[point.clamp_min(0)], torch.zeros(3, device=points.device)), mask
    n_cam = normals.float() @ camera.rotation().to(points).T
    return normal_image(n_cam[point.clamp_min(0)], view_directions(camera, size, points.dtype, points.device), mask), mask

