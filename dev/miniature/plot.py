"""Small line and bar charts drawn with PIL (the host ships no plotting library)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194)]


def _frame(width, height, title):
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((10, 6), title, fill=(0, 0, 0))
    return img, d


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
               path, width=760, height=420, log_y=False):
    """series: name -> [(x, y)]; written to `path` as PNG."""
    img, d = _frame(width, height, title)
    left, right, top, bottom = 70, width - 20, 30, height - 50
    pts = [p for s in series.values() for p in s]
    tf = (lambda v: math.log10(max(v, 1e-12))) if log_y else (lambda v: v)
    xs, ys = [p[0] for p in pts], [tf(p[1]) for p in pts]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y1 = y0 + 1
    sx = lambda x: left + (x - x0) / ((x1 - x0) or 1) * (right - left)  # noqa: E731
    sy = lambda y: bottom - (tf(y) - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
    d.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        yy = bottom - (bottom - top) * i / 4
        d.line([left - 4, yy, left, yy], fill=(0, 0, 0))
        d.text((4, yy - 6), f"{10 ** yv:.3g}" if log_y else f"{yv:.3g}", fill=(0, 0, 0))
        xv = x0 + (x1 - x0) * i / 4
        xx = left + (right - left) * i / 4
        d.line([xx, bottom, xx, bottom + 4], fill=(0, 0, 0))
        d.text((xx - 10, bottom + 6), f"{xv:.4g}", fill=(0, 0, 0))
    d.text(((left + right) // 2 - 30, height - 20), xlabel, fill=(0, 0, 0))
    d.text((4, top - 16 + 2), ylabel, fill=(0, 0, 0))
    for i, (name, s) in enumerate(series.items()):
        c = COLOURS[i % len(COLOURS)]
        if len(s) > 1:
            d.line([(sx(x), sy(y)) for x, y in s], fill=c, width=2)
        d.text((right - 230, top + 6 + 14 * i), name, fill=c)
    img.save(path)


def bar_chart(values: dict[str, tuple[float, float]], title: str, ylabel: str, path, width=760, height=420):
    """values: name -> (mean, half-width of an error bar); written to `path` as PNG."""
    img, d = _frame(width, height, title)
    left, right, top, bottom = 70, width - 20, 30, height - 90
    hi = max(m + e for m, e in values.values()) * 1.1 or 1.0
    d.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    for i in range(5):
        yv = hi * i / 4
        yy = bottom - (bottom - top) * i / 4
        d.line([left - 4, yy, left, yy], fill=(0, 0, 0))
        d.text((8, yy - 6), f"{yv:.3g}", fill=(0, 0, 0))
    n = len(values)
    slot = (right - left) / max(1, n)
    for i, (name, (m, e)) in enumerate(values.items()):
        c = COLOURS[i % len(COLOURS)]
        x0, x1 = left + slot * i + slot * 0.2, left + slot * (i + 0.8)
        y = bottom - m / hi * (bottom - top)
        d.rectangle([x0, y, x1, bottom], fill=c)
        xc = (x0 + x1) / 2
        d.line([xc, bottom - (m - e) / hi * (bottom - top), xc, bottom - (m + e) / hi * (bottom - top)], fill=(0, 0, 0), width=2)
        d.text((x0, y - 14), f"{m:.1f}", fill=(0, 0, 0))
        d.text((x0 - 4, bottom + 6 + 12 * (i % 2)), name, fill=(0, 0, 0))
    d.text((4, top - 16 + 2), ylabel, fill=(0, 0, 0))
    img.save(path)
