"""AnyI2V Render Mesh / Render Point Cloud through the real executor, on shapes written here to input/3d."""

import os

import numpy as np
import pytest
import torch
import trimesh

from dev.support.comfy_run import PromptError

pytestmark = pytest.mark.host

CAMERA = {"width": 96, "height": 64, "azimuth": 0.0, "elevation": 0.0, "distance": 3.0, "fov": 45.0, "fit": True}


@pytest.fixture(scope="module")
def shapes(host):
    import folder_paths

    folder = os.path.join(folder_paths.get_input_directory(), "3d", "anyi2v_test")
    os.makedirs(folder, exist_ok=True)
    sphere = trimesh.creation.icosphere(subdivisions=4)
    cube = trimesh.creation.box((1.0, 1.0, 1.0))
    torus = trimesh.creation.torus(1.0, 0.3)
    scene = trimesh.Scene()  # a .glb with two nodes: the cube in front of the sphere
    scene.add_geometry(sphere, node_name="sphere")
    scene.add_geometry(trimesh.creation.box((0.6, 0.6, 0.6)), node_name="cube",
                       transform=trimesh.transformations.translation_matrix((0.0, 0.0, 1.2)))
    cloud = trimesh.PointCloud(sphere.vertices, colors=np.tile([255, 0, 0, 255], (len(sphere.vertices), 1)))
    files = {"sphere.ply": sphere, "cube.obj": cube, "torus.stl": torus, "scene.glb": scene, "cloud.ply": cloud}
    for name, obj in files.items():
        obj.export(os.path.join(folder, name))
    with open(os.path.join(folder, "normals.ply"), "w") as f:  # a point cloud with normals (nx ny nz)
        f.write("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                "property float nx\nproperty float ny\nproperty float nz\nend_header\n0 0 0 0 0 1\n-0.5 0 0 1 0 0\n")
    with open(os.path.join(folder, "broken.obj"), "w") as f:
        f.write("this is not an obj file\n")
    return "3d/anyi2v_test/"


def render(host, node, file_key, name, **inputs):
    p = {"r": {"class_type": node, "inputs": dict(CAMERA, **{file_key: name}, **inputs)}}
    image, mask = host.node_output(p, "r")
    return image, mask


def mesh(host, name, **inputs):
    return render(host, "AnyI2VRenderMesh", "mesh_file", name, **dict({"mode": "depth"}, **inputs))


def points(host, name, **inputs):
    return render(host, "AnyI2VRenderPointCloud", "points_file", name, **dict({"mode": "depth", "point_radius": 1.5}, **inputs))


def test_sphere_silhouette_and_depth_ordering(host, shapes):
    image, mask = mesh(host, shapes + "sphere.ply")
    assert image.shape == (1, 64, 96, 3) and mask.shape == (1, 64, 96)
    radius_px = (64 / 2) / np.tan(np.radians(22.5)) * np.tan(np.arcsin(1 / 3))
    assert abs(float(mask.sum()) - np.pi * radius_px ** 2) < 0.03 * np.pi * radius_px ** 2
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    assert abs(float(xs.float().mean()) - 47.5) < 0.5 and abs(float(ys.float().mean()) - 31.5) < 0.5
    centre, rim = image[0, 32, 48, 0], image[0, 32, int(48 + 0.9 * radius_px), 0]
    assert centre > rim > 0  # near is bright
    assert float(image[0][~mask[0].bool()].abs().max()) == 0


def test_cube_faces_and_normals(host, shapes):
    front, mask = mesh(host, shapes + "cube.obj", mode="normal")
    centre = front[0, 32, 48]
    assert torch.allclose(centre, torch.tensor([0.5, 0.5, 1.0]), atol=1e-4)  # the front face looks at the camera
    turned, _ = mesh(host, shapes + "cube.obj", mode="normal", azimuth=45.0)
    left, right = turned[0, 32, 48 - 8], turned[0, 32, 48 + 8]
    assert left[0] < 0.5 < right[0]  # two faces at +-45 degrees around the vertical edge in the middle
    assert abs(float(left[1]) - 0.5) < 1e-4 and abs(float(right[1]) - 0.5) < 1e-4


def test_glb_scene_keeps_its_transforms_and_depth_order(host, shapes):
    front, _ = mesh(host, shapes + "scene.glb", mode="normal")
    back, _ = mesh(host, shapes + "scene.glb", mode="normal", azimuth=180.0)
    # in front the cube (moved by its node's transform) hides the sphere: a flat face; from the back, the sphere
    flat = torch.tensor([0.5, 0.5, 1.0])
    assert all(torch.allclose(front[0, 32, 48 + dx], flat, atol=1e-4) for dx in (-6, 0, 6))
    assert not torch.allclose(back[0, 32, 48 + 6], flat, atol=0.02)


def test_torus_hole_and_silhouette(host, shapes):
    _, axis = mesh(host, shapes + "torus.stl")
    assert axis[0, 32, 48] == 0 and axis[0, 32, 48 + 20] == 1
    _, edge_on = mesh(host, shapes + "torus.stl", elevation=90.0)
    rows = torch.nonzero(edge_on[0].any(1)).squeeze(1)
    assert rows.max() - rows.min() < 20 and edge_on[0, 32, 48] == 1


def test_point_cloud_splats_colours_depth_and_normals(host, shapes):
    red, mask = points(host, shapes + "cloud.ply", mode="splat")
    assert mask.sum() > 100
    assert torch.equal(red[0][mask[0].bool()], torch.tensor([1.0, 0.0, 0.0]).expand(int(mask.sum()), 3))
    depth, _ = points(host, shapes + "cloud.ply", point_radius=0.0)
    assert depth[0, :, :, 0].max() > 0.9
    normals, nmask = points(host, shapes + "normals.ply", mode="normal", fit=False, point_radius=0.0)
    lit = normals[0][nmask[0].bool()]
    assert len(lit) == 2 and any(torch.allclose(v, torch.tensor([0.5, 0.5, 1.0])) for v in lit)
    assert any(torch.allclose(v, torch.tensor([1.0, 0.5, 0.5])) for v in lit)
    mesh_points, _ = points(host, shapes + "sphere.ply", mode="normal")  # a mesh's vertices carry its normals
    assert mesh_points.abs().sum() > 0


@pytest.mark.parametrize("node, key, name, message", [
    ("mesh", "mesh_file", "broken.obj", "mesh_file"),
    ("mesh", "mesh_file", "cloud.ply", "no triangles"),
    ("points", "points_file", "cloud.ply", "normals"),
])
def test_bad_files_fail_clearly(host, shapes, node, key, name, message):
    call = mesh if node == "mesh" else points
    extra = {"mode": "normal"} if message == "normals" else {}
    with pytest.raises(PromptError, match=message):
        call(host, shapes + name, **extra)


def test_a_file_outside_the_list_is_refused(host, shapes):
    with pytest.raises(PromptError, match="mesh_file"):
        mesh(host, "../../etc/passwd")
