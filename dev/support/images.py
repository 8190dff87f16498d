"""Condition images for host tests, written into the host's input folder for LoadImage."""

from __future__ import annotations

import numpy as np
from PIL import Image


def write_input_image(name: str, array: np.ndarray) -> str:
    """Save an HxWx3 uint8 array as <ComfyUI input>/anyi2v_test/<name>; return LoadImage's image name."""
    import folder_paths

    folder = folder_paths.get_input_directory()
    path = f"{folder}/anyi2v_test/{name}"
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return f"anyi2v_test/{name}"


def edge_image(width: int = 64, height: int = 64, box=(16, 20, 44, 44)) -> np.ndarray:
    """White outline of a rectangle on black: a tiny canny-like condition."""
    img = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1, x1:x2] = img[y2 - 1, x1:x2] = 255
    img[y1:y2, x1] = img[y1:y2, x2 - 1] = 255
    return img
