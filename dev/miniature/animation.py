"""An animated WEBP of evaluated cases: what `make study` shows of the videos behind its numbers.

One row per case; columns: the condition image, then each variant's decoded video at the size the locator
measures (256 px), with the case's box in every frame (green) and the locator's tracked centre of each object
(a white dot; where it is missing in a frame, the dot keeps the last position, as ObjMC does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import locator as LOC
from . import scenes as S
from . import testset as TS

LABEL_H = 18


def _tile(frame) -> np.ndarray:
    return (frame.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def write_webp(rows: list[tuple[TS.Case, dict]], path: Path, labels: list[str], duration_ms: int = 250) -> Path:
    """rows: (case, {label: frames (F, 3, 256, 256)}) in the order of `labels`; frames already measured-size."""
    from PIL import Image, ImageDraw, features

    if not features.check("webp"):
        raise RuntimeError("Pillow was built without WEBP support: cannot write the animation")
    size, n_frames = TS.SIZE, TS.FRAMES
    cols = 1 + len(labels)
    tracks = {}
    for r, (case, videos) in enumerate(rows):
        for label in labels:
            tracks[r, label] = LOC.track(videos[label], LOC.box_centres(case.boxes)[:, 0])
    images = []
    for f in range(n_frames):
        img = Image.new("RGB", (cols * size, LABEL_H + len(rows) * size), (255, 255, 255))
        d = ImageDraw.Draw(img)
        for c, label in enumerate(["condition", *labels]):
            d.text((c * size + 4, 3), label, fill=(0, 0, 0))
        for r, (case, videos) in enumerate(rows):
            top = LABEL_H + r * size
            condition = S.condition_image(case.scene, case.modality)
            img.paste(Image.fromarray(_tile(condition)), (0, top))
            d.text((4, top + 4), f"{case.key} ({case.modality})", fill=(255, 80, 80))
            for c, label in enumerate(labels, start=1):
                img.paste(Image.fromarray(_tile(videos[label][f])), (c * size, top))
                for b in case.boxes[:, f]:
                    x1, y1, x2, y2 = (float(v) for v in b)
                    d.rectangle([c * size + x1, top + y1, c * size + x2, top + y2], outline=(0, 255, 0), width=2)
                for t in tracks[r, label]:
                    x, y = t.centres[f]
                    d.ellipse([c * size + x - 3, top + y - 3, c * size + x + 3, top + y + 3], fill=(255, 255, 255),
                              outline=(0, 0, 0))
        images.append(img)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=duration_ms, loop=0, quality=80)
    return path
