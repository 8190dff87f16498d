"""The optimisation's gradient in context windows, one window at a time: its peak does not grow with the number
of windows (they exist so that memory does not grow with the video's length).

The alignment loss couples frames only through quantities without gradient: each optimised block's PCA basis
(fit over all frames) and frame 0's maps (the target crops, the salient points' vectors and the first-frame
masks, all stop-gradient); each frame's semantic masks come from its own maps, and the normaliser (the total mask
count) has no gradient. So the loss over all frames is the sum of per-window sums over the frames each window
owns, divided by the total count, and its gradient the sum of the windows' gradients:

1. the first pass (nodes/optimizer.py QuerySink) runs every window as the model call would, without a graph, and
   records each frame's queries (a frame in several windows: the first window's, as before), each window's
   frames and frame 0's kept K/V as the window found it;
2. from those values: each block's PCA and frame 0's maps (every group's target);
3. for each window that owns frames: its forward again with a graph (the windows before it return zeros without
   running; frame 0's kept K/V set back to what the window found in the first pass, so the forward is the first
   pass's), the loss terms of the frames it owns, their backward, and the gradient accumulated on the latent.

A frame's gradient comes from the loss terms of the frames its window owns (the motion modules couple the frames
of a window), as it did when all windows' graphs were kept for one backward; frames a window holds but does not
own contribute nothing through it. Frame 0's K/V reach other windows detached, as before. The result equals one
backward over all windows' graphs up to the order of floating-point sums (tests/host/test_context_windows.py
measures it). Compute: one forward without gradient per window more than before, none of the UNet after the
last optimised block.
"""

from __future__ import annotations

import time

import comfy.model_management
import torch

from ..core.loss import frame_sums, group_target
from ..core.optimize import fit_pcas, query_maps
from .inject import StopForward


class WindowSink:
    """The second pass's sink: runs the model call of window ``target`` (the calls before it return zeros
    without running) with frame 0's K/V as it found them in the first pass, and ends the forward after its last
    optimised block."""

    def __init__(self, blocks, target: int, frames: list[int], kv_before: dict, saving):
        self.blocks = set(blocks)
        self.stop_after = max(blocks)
        self.target, self.frames, self.kv_before, self.saving = target, list(frames), kv_before, saving
        self.calls = 0
        self.queries: dict[int, torch.Tensor] = {}
        self.closed = False

    def model_call(self, frames, kv, run, x):
        call, self.calls = self.calls, self.calls + 1
        if frames is None:
            raise RuntimeError("AnyI2V: the optimisation's forward left its context windows between two passes")
        if call != self.target:
            return torch.zeros_like(x)
        if list(frames) != self.frames:
            raise RuntimeError(f"AnyI2V: context window {call} changed between the optimisation's passes "
                               f"({self.frames[:4]}... then {list(frames)[:4]}...)")
        kv.restore(self.kv_before)
        with self.saving(x):
            return run()

    def stop(self, frames):
        return StopForward()

    def record(self, block, q, frames=None):
        if not self.closed:
            self.queries[block] = q

    def assemble(self, frames: int):
        pass

    def take(self) -> dict[int, torch.Tensor]:
        queries, self.queries, self.closed = self.queries, {}, True
        return queries


def gradient(opt, first, values, z, scale: float, sigma, model_options, loss_scale: float = 1.0):
    """(loss, gradient on z) of the optimisation `opt` (nodes/optimizer.py Optimizer) in context windows, after
    the first pass `first` (its QuerySink) recorded `values`, every frame's queries without gradient. Each
    window's backward runs on its part of the fp32 loss times `loss_scale`, divided out again in fp32."""
    settings, hw = opt.settings, z.shape[-2:]
    grids = opt.grids(values, hw)
    pcas = fit_pcas(values, settings.pca_dim)
    frame0 = [m[0] for m in query_maps({b: v[:1] for b, v in values.items()}, grids, opt.grid_hw, settings.pca_dim, pcas)]
    boxes = opt.boxes.double()
    targets = [group_target(frame0, boxes, opt.points[g], settings.mask_mode, g) for g in range(boxes.shape[0])]
    del values
    store = opt.state.frame_zero_kv
    after_first = store.snapshot()
    view_device = comfy.model_management.intermediate_device()
    view = [torch.zeros(z.shape[0], *m.shape, dtype=m.dtype, device=view_device) for m in frame0]
    for v, m in zip(view, frame0, strict=True):
        v[0] = m.to(view_device)
    total = count = grad = None
    try:
        for call, frames in enumerate(first.windows):
            rows = [i for i, f in enumerate(frames) if first.owner.get(f) == call]
            if not rows:
                continue
            comfy.model_management.throw_exception_if_processing_interrupted()
            sink = WindowSink(opt.blocks, call, frames, first.kv_before[call], opt.saving)
            queries = opt.queries(z * scale, sigma, model_options, sink)
            owned = {b: q.index_select(0, torch.tensor(rows, device=q.device)) for b, q in queries.items()}
            del queries
            maps = query_maps(owned, grids, opt.grid_hw, settings.pca_dim, pcas)
            owned_frames = [frames[i] for i in rows]
            for v, m in zip(view, maps, strict=True):
                v[owned_frames] = m.detach().to(view_device)
            part, weight = frame_sums(maps, owned_frames, targets, boxes, settings.mask_mode)
            del maps, owned
            if part.requires_grad:
                started = time.perf_counter()
                (g,) = torch.autograd.grad(part * loss_scale if loss_scale != 1.0 else part, z, allow_unused=True)
                opt.backward_seconds += time.perf_counter() - started
                if g is not None:
                    grad = g if grad is None else grad + g
            part, weight = part.detach(), weight.detach()
            total = part if total is None else total + part
            count = weight if count is None else count + weight
    finally:
        store.restore(after_first)
    opt.last_maps = view
    if total is None:
        raise RuntimeError("AnyI2V: no context window held a frame of the video")
    count = count.clamp_min(1e-8)
    if grad is not None and loss_scale != 1.0:
        grad = grad / loss_scale
    return total / count, (None if grad is None else grad / count.to(grad))
