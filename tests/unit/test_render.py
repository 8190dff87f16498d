"""core.render against analytic geometry: silhouettes, ray intersections, z-order, camera conventions."""

import math

import pytest
import torch
import trimesh

from core.render import OrbitCamera, project, rasterize, render_mesh, render_points

SIZE = (96, 96)


def mesh(m: trimesh.Trimesh):
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64)


def pixel_rays(camera, size):
    """Independent pinhole model: world-space unit ray directions through each pixel centre, and the eye."""
    h, w = size
    eye = camera.eye()
    forward = -eye / eye.norm()  # the target is the origin
    right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    t = math.tan(math.radians(camera.fov) / 2)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    u = ((xs + 0.5) / w * 2 - 1) * t * w / h
    v = (1 - (ys + 0.5) / h * 2) * t
    d = forward + u[..., None] * right + v[..., None] * up
    return eye, d / d.norm(dim=-1, keepdim=True), forward


def sphere_hits(camera, size, radius=1.0):
    """Ray-sphere intersection: (hit mask, distance along the view axis, outward normal) per pixel."""
    eye, d, forward = pixel_rays(camera, size)
    b = (d * eye).sum(-1)
    disc = b * b - (eye.dot(eye) - radius * radius)
    hit = disc > 0
    t = -b - disc.clamp_min(0).sqrt()
    point = eye + t[..., None] * d
    return hit, (t[..., None] * d * forward).sum(-1), point / radius


def test_sphere_silhouette_and_depth_match_ray_casting():
    camera = OrbitCamera(azimuth=30, elevation=20, distance=3.0, fov=40)
    image, mask = render_mesh(*mesh(trimesh.creation.icosphere(subdivisions=5)), camera, SIZE, "depth")
    hit, depth, _ = sphere_hits(camera, SIZE)
    assert (mask != hit).float().mean() < 0.01  # a tessellated sphere: only boundary pixels may differ
    near, far = 2.0, 4.0
    expected = (1 / depth - 1 / far) / (1 / near - 1 / far)
    inner = hit & mask & (depth < 2.6)
    assert (image[..., 0][inner] - expected[inner].float()).abs().max() < 0.02
    assert image[~mask].abs().max() == 0
    assert torch.equal(image[..., 0], image[..., 2])


def test_sphere_normals_match_ray_casting():
    camera = OrbitCamera(azimuth=-50, elevation=10, distance=3.5, fov=35)
    image, mask = render_mesh(*mesh(trimesh.creation.icosphere(subdivisions=5)), camera, SIZE, "normal")
    hit, _, normal_world = sphere_hits(camera, SIZE)
    normal_cam = normal_world.float() @ camera.rotation().float().T
    both = hit & mask
    error = (image[both] - (normal_cam[both] * 0.5 + 0.5)).abs().amax(-1)
    assert error.mean() < 0.01 and error.max() < 0.08
    centre = image[SIZE[0] // 2, SIZE[1] // 2]
    assert centre[2] > 0.95  # the middle of the sphere faces the camera: blue


def test_perspective_correct_depth_on_a_tilted_plane():
    """A large quad tilted away from the camera: each pixel's depth equals the ray-plane intersection."""
    verts = torch.tensor([[-4.0, -4.0, 1.0], [4.0, -4.0, 1.0], [4.0, 4.0, -3.0], [-4.0, 4.0, -3.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    camera = OrbitCamera(distance=5.0, fov=50)
    xy, depth = project(camera.to_camera(verts), camera, SIZE)
    zbuf, face, _ = rasterize(xy, depth, faces, SIZE)
    eye, d, forward = pixel_rays(camera, SIZE)
    p0, p1, p2 = verts[:3].double()
    normal = torch.linalg.cross(p1 - p0, p2 - p0)
    t = ((p0 - eye) @ normal) / (d @ normal)
    expected = (t[..., None] * d * forward).sum(-1)
    seen = face >= 0
    assert seen.float().mean() > 0.5
    assert torch.allclose(zbuf[seen].double(), expected[seen], rtol=1e-4)


def test_nearer_object_wins_and_a_torus_shows_its_hole():
    box = trimesh.creation.box((0.5, 0.5, 0.5))
    box.apply_translation((0, 0, 1.0))  # between the camera (+z) and the sphere
    scene = trimesh.util.concatenate([trimesh.creation.icosphere(subdivisions=3), box])
    camera = OrbitCamera(distance=4.0, fov=40)
    image, mask = render_mesh(*mesh(scene), camera, SIZE, "depth", fit=False)
    c = SIZE[0] // 2
    _, zbuf_face, _ = rasterize(*project(camera.to_camera(torch.tensor(scene.vertices, dtype=torch.float32)), camera, SIZE),
                                torch.tensor(scene.faces), SIZE)
    sphere_faces = len(trimesh.creation.icosphere(subdivisions=3).faces)
    assert zbuf_face[c, c] >= sphere_faces  # the box's face is drawn in the middle
    assert image[c, c, 0] > image[c, c - 25, 0]  # the box (z = 1.25, depth 2.75) is nearer than the sphere's rim
    behind = OrbitCamera(azimuth=180, distance=4.0, fov=40)
    _, behind_face, _ = rasterize(*project(behind.to_camera(torch.tensor(scene.vertices, dtype=torch.float32)), behind, SIZE),
                                  torch.tensor(scene.faces), SIZE)
    assert 0 <= behind_face[c, c] < sphere_faces  # from behind, the sphere hides the box
    torus = mesh(trimesh.creation.torus(1.0, 0.3))  # around the z axis
    _, torus_mask = render_mesh(*torus, OrbitCamera(distance=4.0), SIZE, "depth")
    assert not torus_mask[c, c] and torus_mask[c, c + 25] and torus_mask[c + 25, c]  # the hole, seen along its axis
    _, side_mask = render_mesh(*torus, OrbitCamera(elevation=90, distance=4.0), SIZE, "depth")
    rows = side_mask.any(1).nonzero()
    assert (rows.max() - rows.min()) < 0.5 * (side_mask.any(0).nonzero().max() - side_mask.any(0).nonzero().min())


def test_camera_conventions():
    assert torch.allclose(OrbitCamera(azimuth=90, distance=2).eye(), torch.tensor([2.0, 0, 0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(OrbitCamera(elevation=90, distance=2).eye(), torch.tensor([0, 2.0, 0], dtype=torch.float64), atol=1e-12)
    for cam in (OrbitCamera(elevation=90), OrbitCamera(elevation=-90, azimuth=40), OrbitCamera(azimuth=123, elevation=-30)):
        r = cam.rotation()
        assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12) and abs(torch.linalg.det(r) - 1) < 1e-12
    # +x of the world appears on the right of the front view, +y at the top
    xy, _ = project(OrbitCamera().to_camera(torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])), OrbitCamera(), SIZE)
    assert xy[0, 0] > SIZE[1] / 2 and xy[1, 1] < SIZE[0] / 2


def test_point_splats_radius_order_and_colours():
    camera = OrbitCamera(distance=3.0, fov=45)
    points = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, -0.5], [0.6, 0.0, 0.0]])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    image, mask = render_points(points, camera, SIZE, "splat", radius=2.0, colors=colors, fit=False)
    c = SIZE[0] // 2
    assert torch.equal(image[c, c], torch.tensor([1.0, 0.0, 0.0]))  # the nearer point hides the farther one
    assert mask.sum() == 2 * 13  # two discs of radius 2: 13 pixels each
    depth, _ = render_points(points, camera, SIZE, "depth", radius=0.0, fit=False)
    assert depth[c, c, 0] > 0 and mask[c, c]
    with pytest.raises(ValueError, match="normal"):
        render_points(points, camera, SIZE, "normal")
    with pytest.raises(ValueError, match="mode"):
        render_mesh(points, torch.tensor([[0, 1, 2]]), camera, SIZE, "wireframe")


def test_deterministic_and_chunk_independent(monkeypatch):
    import core.render as render

    args = (*mesh(trimesh.creation.torus(1.0, 0.4)), OrbitCamera(azimuth=20, elevation=35), SIZE, "normal")
    a = render_mesh(*args)
    monkeypatch.setattr(render, "CHUNK", 997)
    b = render_mesh(*args)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
