"""Condition images from 3D files: a mesh or a point cloud rendered from an orbit camera (core/render.py).

Files are read with trimesh (.ply, .obj, .glb/.gltf, .stl, .off; .xyz for points) from the input folder,
e.g. input/3d where core ComfyUI's Load 3D node uploads them. Loading never runs code from a file.

trimesh is the pack's one optional dependency: where it is missing or fails to import, these two nodes stay
listed (workflows that use them still load) but refuse to run with a message that says why, the server log
says so at start, and every other node of the pack works as usual.
"""

from __future__ import annotations

import logging

import comfy.model_management
import numpy as np
import torch
from comfy_api.latest import io

from ..core.render import MESH_MODES, POINT_MODES, OrbitCamera, render_mesh, render_points
from .input_files import fingerprint, input_files, input_path
from .types import CATEGORY

log = logging.getLogger(__name__)


def _import_trimesh():
    """(the trimesh module, None), or (None, why it could not be imported): missing, or broken (a failing native
    or version dependency raises more than ImportError)."""
    try:
        import trimesh

        return trimesh, None
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


trimesh, TRIMESH_ERROR = _import_trimesh()
DISABLED = (f"AnyI2V Render Mesh and AnyI2V Render Point Cloud are disabled: the Python package trimesh could not be "
            f"imported ({TRIMESH_ERROR}). Install it into ComfyUI's Python environment "
            f"(pip install -r custom_nodes/ComfyUI-AnyI2V/requirements.txt) and restart ComfyUI.") if TRIMESH_ERROR else None
if DISABLED:
    log.warning("%s The other AnyI2V nodes work without it.", DISABLED)


def _require_trimesh():
    if DISABLED:
        raise RuntimeError(DISABLED)


def _description(text: str) -> str:
    return f"{text} DISABLED: trimesh could not be imported ({TRIMESH_ERROR})." if DISABLED else text

MESH_EXTENSIONS = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")
POINT_EXTENSIONS = (".ply", ".obj", ".glb", ".gltf", ".xyz")


def _load(path: str, name: str, input_name: str):
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as e:  # trimesh raises many types for malformed files
        raise ValueError(f"{input_name}: could not read '{name}' ({type(e).__name__}: {e})") from e
    if isinstance(loaded, trimesh.Scene):
        if not loaded.geometry:
            raise ValueError(f"{input_name}: '{name}' holds no geometry")
        parts = loaded.dump()  # every geometry with its scene transform applied
        meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        points = [g for g in parts if isinstance(g, trimesh.PointCloud)]
        return meshes, points
    if isinstance(loaded, trimesh.Trimesh):
        return [loaded], []
    if isinstance(loaded, trimesh.PointCloud):
        return [], [loaded]
    raise ValueError(f"{input_name}: '{name}' holds no mesh or point cloud ({type(loaded).__name__})")


def _colors(rgba, count):
    if rgba is None or len(rgba) != count:
        return None
    rgba = np.asarray(rgba)
    return torch.from_numpy(rgba[:, :3].astype(np.float32) / 255.0)


def _ply_normals(cloud: trimesh.PointCloud):
    """Per-point normals of a PLY point cloud (nx, ny, nz), or None."""
    vertex = cloud.metadata.get("_ply_raw", {}).get("vertex", {}).get("data", {})
    try:
        n = np.concatenate([np.asarray(vertex[k]).reshape(-1, 1) for k in ("nx", "ny", "nz")], axis=1)
    except (KeyError, TypeError, ValueError):
        return None
    return torch.from_numpy(n.astype(np.float32)) if len(n) == len(cloud.vertices) else None


def _camera_inputs():
    return [
        io.Int.Input("width", default=512, min=64, max=4096, step=8, tooltip="Width of the image in pixels."),
        io.Int.Input("height", default=512, min=64, max=4096, step=8, tooltip="Height of the image in pixels."),
        io.Float.Input("azimuth", default=0.0, min=-360.0, max=360.0, step=1.0,
                       tooltip="Orbit angle around the vertical (y) axis in degrees; 0 looks from +z (the front)."),
        io.Float.Input("elevation", default=0.0, min=-90.0, max=90.0, step=1.0,
                       tooltip="Camera height angle in degrees; 90 looks straight down."),
        io.Float.Input("distance", default=3.0, min=0.05, max=1000.0, step=0.05,
                       tooltip="Camera distance from the object's centre (in object radii when fit is on)."),
        io.Float.Input("fov", default=45.0, min=5.0, max=150.0, step=1.0, tooltip="Vertical field of view in degrees."),
        io.Boolean.Input("fit", default=True,
                         tooltip="Centre the object and scale it into a sphere of radius 1 before placing the camera."),
    ]


def _finish(image: torch.Tensor, mask: torch.Tensor, name: str) -> io.NodeOutput:
    if not bool(mask.any()):
        log.warning("AnyI2V: '%s' is not in view from this camera; the image is empty", name)
    device = comfy.model_management.intermediate_device()
    return io.NodeOutput(image[None].float().to(device), mask[None].float().to(device))


class RenderMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VRenderMesh",
            display_name="AnyI2V Render Mesh",
            category=CATEGORY,
            description=_description("Render a 3D mesh file as a depth or normal condition image from an orbit camera."),
            inputs=[
                io.Combo.Input("mesh_file", options=input_files(MESH_EXTENSIONS),
                               tooltip="A mesh file in the input folder (e.g. input/3d): .ply .obj .glb .gltf .stl .off."),
                io.Combo.Input("mode", options=list(MESH_MODES), default="depth",
                               tooltip="depth: near is bright; normal: camera-space normals as RGB."),
                *_camera_inputs(),
            ],
            outputs=[io.Image.Output(display_name="image"), io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def execute(cls, mesh_file, mode, width, height, azimuth, elevation, distance, fov, fit) -> io.NodeOutput:
        _require_trimesh()
        meshes, _ = _load(input_path(mesh_file, MESH_EXTENSIONS, "mesh_file"), mesh_file, "mesh_file")
        if not meshes:
            raise ValueError(f"mesh_file: '{mesh_file}' has no triangles (a point cloud? use AnyI2V Render Point Cloud)")
        mesh = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
        device = comfy.model_management.get_torch_device()
        camera = OrbitCamera(azimuth, elevation, distance, fov)
        image, mask = render_mesh(torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32)).to(device),
                                  torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64)).to(device),
                                  camera, (height, width), mode, fit=fit)
        return _finish(image, mask, mesh_file)

    @classmethod
    def fingerprint_inputs(cls, mesh_file, **_):
        return fingerprint(mesh_file)


class RenderPointCloud(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VRenderPointCloud",
            display_name="AnyI2V Render Point Cloud",
            category=CATEGORY,
            description=_description("Render a point cloud (or a mesh's vertices) as splats from an orbit camera: depth, colours or normals."),
            inputs=[
                io.Combo.Input("points_file", options=input_files(POINT_EXTENSIONS),
                               tooltip="A point cloud in the input folder (e.g. input/3d): .ply .xyz, or a mesh file's vertices."),
                io.Combo.Input("mode", options=list(POINT_MODES), default="depth",
                               tooltip="depth: near is bright; splat: the points' colours (white if none); "
                                       "normal: the points' normals (PLY nx ny nz) as RGB."),
                io.Float.Input("point_radius", default=1.5, min=0.0, max=16.0, step=0.5,
                               tooltip="Radius of each point's disc in pixels (0: one pixel)."),
                *_camera_inputs(),
            ],
            outputs=[io.Image.Output(display_name="image"), io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def execute(cls, points_file, mode, point_radius, width, height, azimuth, elevation, distance, fov, fit) -> io.NodeOutput:
        _require_trimesh()
        meshes, clouds = _load(input_path(points_file, POINT_EXTENSIONS, "points_file"), points_file, "points_file")
        parts = []
        for g in clouds:
            colors = _colors(getattr(g, "colors", None), len(g.vertices))
            parts.append((g.vertices, colors, _ply_normals(g)))
        for g in meshes:
            colors = _colors(g.visual.vertex_colors, len(g.vertices)) if g.visual.kind == "vertex" else None
            parts.append((g.vertices, colors, torch.from_numpy(np.asarray(g.vertex_normals, dtype=np.float32))))
        points = torch.from_numpy(np.concatenate([np.asarray(p, dtype=np.float32) for p, _, _ in parts]))
        if len(points) == 0:
            raise ValueError(f"points_file: '{points_file}' has no points")
        colors = None
        if any(c is not None for _, c, _ in parts):
            colors = torch.cat([c if c is not None else torch.ones(len(p), 3) for p, c, _ in parts])
        normals = None
        if all(n is not None for _, _, n in parts):
            normals = torch.cat([n for _, _, n in parts])
        elif mode == "normal":
            raise ValueError(f"mode: 'normal' needs normals, and '{points_file}' has none (PLY nx ny nz)")
        device = comfy.model_management.get_torch_device()
        camera = OrbitCamera(azimuth, elevation, distance, fov)
        image, mask = render_points(points.to(device), camera, (height, width), mode, point_radius,
                                    None if colors is None else colors.to(device),
                                    None if normals is None else normals.to(device), fit=fit)
        return _finish(image, mask, points_file)

    @classmethod
    def fingerprint_inputs(cls, points_file, **_):
        return fingerprint(points_file)


NODES = [RenderMesh, RenderPointCloud]
