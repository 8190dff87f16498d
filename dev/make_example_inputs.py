"""Draw the condition images the example workflows use (deterministic; run once, PNGs are committed).

  canny   white edges of a simple car on black (an edge map as a canny/HED preprocessor gives)
  depth   a depth map of a ground plane and a sphere (near = bright)
  sketch  black strokes of a bird on white (a hand sketch)
  two     edges of two balls side by side (two objects)
  torus   a torus mesh (3d/anyi2v_torus.obj) for AnyI2V Render Mesh
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 512
OUT = Path(__file__).resolve().parents[1] / "example_workflows" / "input"


def _edges(draw_fn) -> Image.Image:
    img = Image.new("L", (SIZE, SIZE), 0)
    draw_fn(ImageDraw.Draw(img))
    return img.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0).convert("RGB")


def canny_car() -> Image.Image:
    def draw(d):
        d.rounded_rectangle((110, 250, 400, 330), 25, fill=200)
        d.polygon([(170, 250), (210, 195), (320, 195), (360, 250)], fill=160)
        d.ellipse((140, 300, 200, 360), fill=90)
        d.ellipse((310, 300, 370, 360), fill=90)
        d.line((0, 362, SIZE, 362), fill=60, width=6)
    return _edges(draw)


def two_balls() -> Image.Image:
    def draw(d):
        d.ellipse((70, 200, 200, 330), fill=200)
        d.ellipse((310, 180, 450, 320), fill=120)
        d.line((0, 340, SIZE, 340), fill=60, width=6)
    return _edges(draw)


def depth_scene() -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    depth = np.clip((y - 180) / (SIZE - 180), 0, 1) * 0.7  # ground plane, nearer at the bottom
    r2 = ((x - 300) ** 2 + (y - 300) ** 2) / 90.0**2
    sphere = np.where(r2 < 1, 0.75 + 0.25 * np.sqrt(np.clip(1 - r2, 0, 1)), 0)
    depth = np.maximum(depth, sphere)
    return Image.fromarray((depth * 255).astype(np.uint8)).convert("RGB")


def sketch_bird() -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), "white")
    d = ImageDraw.Draw(img)
    d.ellipse((120, 150, 260, 230), outline="black", width=5)  # body
    d.ellipse((240, 130, 290, 175), outline="black", width=5)  # head
    d.polygon([(288, 150), (318, 158), (288, 165)], outline="black", width=4)  # beak
    d.line([(150, 170), (190, 100), (230, 170)], fill="black", width=5)  # wing
    d.line([(120, 190), (80, 170), (90, 205), (120, 200)], fill="black", width=4)  # tail
    return img


IMAGES = {
    "anyi2v_canny_car.png": canny_car,
    "anyi2v_two_balls.png": two_balls,
    "anyi2v_depth_scene.png": depth_scene,
    "anyi2v_sketch_bird.png": sketch_bird,
}


def torus_obj(major=1.0, minor=0.4, rings=48, sides=24) -> str:
    """A torus around the y axis as Wavefront OBJ text (vertices, then 1-based triangle faces)."""
    u = np.linspace(0, 2 * np.pi, rings, endpoint=False)[:, None]
    v = np.linspace(0, 2 * np.pi, sides, endpoint=False)[None, :]
    r = major + minor * np.cos(v)
    xyz = np.stack([r * np.cos(u), np.broadcast_to(minor * np.sin(v), (rings, sides)), r * np.sin(u)], -1)
    lines = [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in xyz.reshape(-1, 3)]
    for i in range(rings):
        for j in range(sides):
            a, b = i * sides + j, i * sides + (j + 1) % sides
            c, d = ((i + 1) % rings) * sides + j, ((i + 1) % rings) * sides + (j + 1) % sides
            lines += [f"f {a + 1} {c + 1} {b + 1}", f"f {b + 1} {c + 1} {d + 1}"]
    return "# torus for AnyI2V Render Mesh (dev/make_example_inputs.py)\n" + "\n".join(lines) + "\n"


def main(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in IMAGES.items():
        path = out / name
        make().save(path, optimize=True)
        paths.append(path)
    mesh = out / "3d" / "anyi2v_torus.obj"
    mesh.parent.mkdir(exist_ok=True)
    mesh.write_text(torus_obj())
    paths.append(mesh)
    return paths


if __name__ == "__main__":
    for p in main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(p)
