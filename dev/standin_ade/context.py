"""TEST DOUBLE of AnimateDiff-Evolved's context windows (animatediff/context.py, nodes_context.py).

The two schedules the pack's workflows use, with ADE's window lists (our own code, matched against ADE's
``create_windows_static_standard`` and ``create_windows_uniform_standard``), and the fuse weights of
``get_context_weights`` for "flat", "pyramid" and "overlap-linear". Options ADE has and this double does not
reproduce (chained ``prev_context``, ``start_percent`` schedules, ``view_opts``, the "relative" and the
experimental fuse methods) are refused with a message instead of silently doing something else.
"""

from __future__ import annotations

import math

import torch

STATIC = "standard_static"
UNIFORM = "standard_uniform"
FUSE_METHODS = ["pyramid", "flat", "overlap-linear"]
FUSE_METHODS_STATIC = ["pyramid", "relative", "flat", "overlap-linear"]  # ADE's list order (first = the default)


class ContextOptions:
    """One context option of ADE's ContextOptionsGroup (only one per group here)."""

    def __init__(self, schedule: str, context_length: int, context_overlap: int, context_stride: int = 1,
                 fuse_method: str = "pyramid", use_on_equal_length: bool = False):
        if fuse_method not in FUSE_METHODS:
            raise ValueError(f"fuse_method: '{fuse_method}' is not reproduced by the ADE test stand-in ({', '.join(FUSE_METHODS)})")
        self.schedule, self.context_length, self.context_overlap = schedule, context_length, context_overlap
        self.context_stride, self.fuse_method, self.use_on_equal_length = context_stride, fuse_method, use_on_equal_length

    def slides(self, full_length: int) -> bool:
        """ADE's apply_params_to_motion_models: windows only for more latents than context_length (or as many,
        with use_on_equal_length)."""
        if self.use_on_equal_length:
            return full_length >= self.context_length
        return full_length > self.context_length

    def windows(self, full_length: int, step: int) -> list[list[int]]:
        if self.schedule == STATIC:
            return static_windows(full_length, self.context_length, self.context_overlap)
        return uniform_windows(full_length, self.context_length, self.context_overlap, self.context_stride, step)

    def weights(self, window: list[int], full_length: int) -> torch.Tensor:
        n = len(window)
        if self.fuse_method == "flat":
            return torch.ones(n)
        if self.fuse_method == "pyramid":
            half = (n + 1) // 2
            ramp = list(range(1, half + 1))
            return torch.tensor(ramp + ramp[::-1][n % 2:], dtype=torch.float32)
        w = torch.ones(n)  # overlap-linear: ramps over the overlap, except at the ends of the video
        k = self.context_overlap
        if k and min(window) > 0:
            w[:k] = torch.linspace(1e-37, 1, k)
        if k and max(window) < full_length - 1:
            w[-k:] = torch.linspace(1, 1e-37, k)
        return w


def static_windows(n: int, length: int, overlap: int) -> list[list[int]]:
    """Windows every length - overlap frames; the last one moved back to end at the last frame."""
    if n <= length:
        return [list(range(n))]
    out = []
    for start in range(0, n, max(1, length - overlap)):
        if start + length >= n:
            out.append(list(range(n - length, n)))
            break
        out.append(list(range(start, start + length)))
    return out


def ordered_halving(step: int) -> float:
    """The step's 64-bit binary digits read backwards as a fraction: 0, 1/2, 1/4, 3/4, 1/8, ..."""
    return int(format(step, "064b")[::-1], 2) / 2**64


def uniform_windows(n: int, length: int, overlap: int, stride: int, step: int) -> list[list[int]]:
    """Windows that start at a phase that moves with the sampling step (so seams move); a window running past
    the last frame is moved back to end there (plus, if the next window lacks the frame it rolled over to, a
    window starting at that frame); repeated windows are dropped."""
    if n <= length:
        return [list(range(n))]
    stride = min(stride, math.ceil(math.log2(n / length)) + 1)
    phase = ordered_halving(step)
    pad = int(round(n * phase))
    windows = []
    for spacing in (1 << k for k in range(stride)):
        for j in range(int(phase * spacing) + pad, n + pad - overlap, length * spacing - overlap):
            windows.append([e % n for e in range(j, j + length * spacing, spacing)])
    out, i = [], 0
    while i < len(windows):
        window = windows[i]
        roll = next((p for p in range(1, len(window)) if window[p] < window[p - 1]), None)
        if roll is not None:
            rolled_to = window[roll]
            shifted = [(v - window[0]) % n for v in window]
            window = windows[i] = [v + n - 1 - shifted[-1] for v in shifted]
            if rolled_to not in windows[(i + 1) % len(windows)]:
                windows.insert(i + 1, list(range(rolled_to, rolled_to + length)))
        if window not in windows[:i]:
            out.append(window)
        i += 1
    return out
