"""The latent optimisation of one sampling run (paper Sec. 3.3-3.4): before an early denoising step the
latent is optimised ``iterations`` times: a forward with gradient (conditional text only, motion modules and
injection on, cut right after the last optimised query), PCA-reduced queries of all frames, the
box-restricted, mask-weighted alignment loss to frame 0 (Eq. 3-8), and an update of the latent.
The sampler (nodes/sampler.py) decides when; this module does one step's iterations.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import comfy.model_management
import comfy.model_patcher
import comfy.samplers
import torch

from ..core.blocks import UNetLayout
from ..core.loss import MASK_MODES, alignment_loss
from ..core.optimize import COMPRESS, UPDATE_RULES, latent_scale, make_update, query_maps
from ..core.trajectory import on_grid
from .grad import checkpointed, trainable_weights, truncated_modules
from .inject import StopForward, token_grid

log = logging.getLogger("AnyI2V")


def optimised_steps(sigmas, end_sigma: float, iterations: int) -> list[int]:
    """The steps of a run whose latent is optimised: those at sigma >= end_sigma (the first opt_percent of the
    schedule), and always the first, however few the steps (4-8-step schedules may have none at that sigma)."""
    if iterations <= 0 or len(sigmas) < 2:
        return []
    return [i for i in range(len(sigmas) - 1) if i == 0 or float(sigmas[i]) >= end_sigma]


class QuerySink:
    """Receives the conditional queries of the optimised blocks during one gradient forward."""

    def __init__(self, blocks):
        self.blocks = set(blocks)
        self.stop_after = max(blocks)
        self.queries: dict[int, torch.Tensor] = {}
        self._frames: dict[int, dict[int, torch.Tensor]] = {}
        self.closed = False

    def take(self) -> dict[int, torch.Tensor]:
        """The recorded queries; the sink then records nothing more and holds no tensor. (Checkpointed layers
        keep their inputs, transformer_options and so this sink, in the autograd graph: a sink holding graph
        tensors would make a reference cycle through C++ that Python never frees, one graph per iteration.)"""
        queries, self.queries, self._frames, self.closed = self.queries, {}, {}, True
        return queries

    def record(self, block, q, frames=None):
        """q: (frames, tokens, C) of one call; `frames` the video frames of a context window (None: all)."""
        if self.closed:  # a checkpointed layer recomputed in backward: its queries were taken in the forward
            return
        if frames is None:
            self.queries[block] = q
            return
        rows = self._frames.setdefault(block, {})
        for i, f in enumerate(frames):
            rows.setdefault(f, q[i])  # a frame in several windows: the first window's

    def assemble(self, frames: int):
        """After a forward in context windows: every block's queries of all `frames` video frames in order."""
        for block, rows in self._frames.items():
            missing = [f for f in range(frames) if f not in rows]
            if missing:
                raise RuntimeError(f"AnyI2V: the context windows left frames {missing[:8]} without queries")
            self.queries[block] = torch.stack([rows[f] for f in range(frames)])


class Settings:
    def __init__(self, opt_percent=0.24, iterations=5, lr=0.01, update_rule="adamw_fresh", pca_dim=64,
                 query_blocks="Query 1.1, Query 2.0", mask_mode="semantic", low_memory=False):
        if not 0.0 <= opt_percent <= 1.0:
            raise ValueError(f"opt_percent: must be within 0..1, got {opt_percent}")
        if update_rule not in UPDATE_RULES:
            raise ValueError(f"update_rule: expected one of {', '.join(UPDATE_RULES)}, got '{update_rule}'")
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode: expected one of {', '.join(MASK_MODES)}, got '{mask_mode}'")
        if iterations < 0 or pca_dim < 1 or not math.isfinite(lr) or lr < 0:
            raise ValueError("iterations, pca_dim and lr must be >= 0, >= 1 and a finite number >= 0")
        self.opt_percent, self.iterations, self.lr = opt_percent, int(iterations), float(lr)
        self.update_rule, self.pca_dim, self.query_blocks = update_rule, int(pca_dim), query_blocks
        self.mask_mode, self.low_memory = mask_mode, bool(low_memory)


class Optimizer:
    """Everything the optimisation of one sampling run needs, prepared once."""

    def __init__(self, guider, settings: Settings, trajectory, state, latent_shape, seed=None):
        self.guider = guider
        self.seed = seed
        self.settings = settings
        self.state = state
        unet = guider.model_patcher.model.diffusion_model
        self.unet = unet
        layout = UNetLayout.from_unet(unet)
        self.blocks = layout.resolve(settings.query_blocks, "attn")
        missing = [b for b in self.blocks if b not in set(state.query_blocks) | set(state.opt_blocks)]
        if missing:
            raise ValueError(f"query_blocks: output blocks {missing} are not patched by the injection "
                             f"(it patches {sorted(set(state.query_blocks) | set(state.opt_blocks))})")
        frames, _, lh, lw = latent_shape
        if frames < 2:
            raise ValueError("latent: AnyI2V animates at least 2 frames; this latent has 1 (set the batch size to the frame count)")
        self.image_hw = (lh * 8, lw * 8)
        self.grid_hw = (lh * 8 // COMPRESS, lw * 8 // COMPRESS)
        if trajectory.num_frames is not None and trajectory.num_frames != frames:
            log.info("AnyI2V: the trajectory has %d frames, the latent %d: resampling the trajectory", trajectory.num_frames, frames)
        grid_wh = (self.grid_hw[1], self.grid_hw[0])
        boxes, points = on_grid(trajectory, frames, (self.image_hw[1], self.image_hw[0]), grid_wh)
        self.boxes = torch.from_numpy(boxes)
        self.points = [torch.from_numpy(p) for p in points]  # a first box outside the image: on_grid's validation says so
        self.end_sigma = float(guider.model_patcher.get_model_object("model_sampling").percent_to_sigma(settings.opt_percent))
        self.losses: list[tuple[int, int, float]] = []
        self.backward_seconds = 0.0  # for the benchmark's overhead split
        self.last_maps: list[torch.Tensor] | None = None
        self.compute_dtype = compute_dtype(guider.model_patcher.model)
        self.loss_scale = 2.0**16 if self.compute_dtype == torch.float16 else 1.0  # fp16's range is narrow; bf16's is fp32's

    def steps(self, sigmas) -> list[int]:
        return optimised_steps(sigmas, self.end_sigma, self.settings.iterations)

    def queries(self, x, sigma, model_options) -> dict[int, torch.Tensor]:
        sink = QuerySink(self.blocks)
        options = comfy.model_patcher.create_model_options_clone(model_options)
        to = options.setdefault("transformer_options", {})
        to["anyi2v_force"] = True
        to["anyi2v_sink"] = sink
        timestep = sigma.reshape(1).expand(x.shape[0]) if sigma.ndim == 0 else sigma
        try:
            # the sampler's own per-step entry point, looked up now (AnimateDiff-Evolved replaces it while it
            # samples and sets up ad_params, keyframes and its model features there), without CFG: no
            # unconditional branch, scale 1
            comfy.samplers.sampling_function(self.guider.inner_model, x, timestep, None, self.guider.conds["positive"],
                                             1.0, options, self.seed)
        except StopForward:
            pass
        sink.assemble(x.shape[0])
        queries = sink.take()
        missing = [b for b in self.blocks if b not in queries]
        if missing:
            raise RuntimeError(f"AnyI2V: no queries were recorded for output blocks {missing}")
        return queries

    def grids(self, queries, latent_hw):
        return {b: token_grid({"original_shape": [1, 4, *latent_hw]}, q.shape[1], self.state.features, b)
                for b, q in queries.items()}

    def loss(self, x, sigma, model_options):
        queries = self.queries(x, sigma, model_options)
        maps = query_maps(queries, self.grids(queries, x.shape[-2:]), self.grid_hw, self.settings.pca_dim)
        self.last_maps = [m.detach() for m in maps]  # for the feature view: each block's maps of the latest iteration
        return alignment_loss(maps, self.boxes, self.points, self.settings.mask_mode)

    @contextlib.contextmanager
    def gradient_mode(self):
        """Where the gradient forwards run: autograd on, the weights of the truncated UNet aliased as normal
        tensors, and with low_memory every layer before the stop block checkpointed (its activations
        recomputed in backward). dev/scale.py measures the optimisation inside this context too."""
        modules = truncated_modules(self.unet, max(self.blocks))
        saving = checkpointed(modules[:-1]) if self.settings.low_memory else contextlib.nullcontext()
        with torch.inference_mode(False), torch.enable_grad(), trainable_weights(modules), saving:
            yield

    def optimize(self, x, sigma, step, model_options, progress):
        """Run the iterations of one denoising step; returns the optimised latent (same dtype/device).

        The update acts on z_t = x / sqrt(1 + sigma^2) (what the UNet sees; the paper's latent), so that lr is the
        paper's step per element; the latent is unchanged (bit for bit) when no update is taken. An iteration whose
        loss or gradient is not finite takes no step (see gradient())."""
        update = make_update(self.settings.update_rule, self.settings.lr)
        scale = latent_scale(sigma)
        moved = False
        with self.gradient_mode():
            z = x.detach().clone() / scale
            for it in range(self.settings.iterations):
                comfy.model_management.throw_exception_if_processing_interrupted()
                value, grad = self.gradient(z, scale, sigma, model_options, step, it)
                self.losses.append((step, it, value))
                log.info("AnyI2V: step %d iteration %d alignment loss %.6f", step, it, value)
                if self.settings.lr > 0 and grad is not None and bool(grad.any()):  # no mask weight: no step (as the reference)
                    z, moved = update(z.detach(), grad), True
                progress()
        if not moved:
            return x
        with torch.inference_mode():
            return (z.detach() * scale).to(x.dtype)

    def gradient(self, z, scale, sigma, model_options, step, iteration):
        """(loss value, d loss / d z or None) at the latent z (z_t units). The loss is fp32 whatever the UNet computes
        in; where that is fp16, the backward runs on the loss times a loss scale (in fp32, as the reference's
        GradScaler: 2^16 to start) so that small gradients do not underflow in the UNet's fp16 backward, and the
        gradient is divided by it again in fp32. A gradient that overflows is computed again at half the scale; a
        loss or gradient that stays non-finite gives None: that iteration takes no step, and the log says so."""
        while True:
            z = z.detach().requires_grad_(True)
            loss = self.loss(z * scale, sigma, model_options)
            value = float(loss.detach())
            if not math.isfinite(value):
                log.warning("AnyI2V: step %d iteration %d skipped: the alignment loss is %s (the UNet computes in %s)",
                            step, iteration, value, _dtype_name(self.compute_dtype))
                return value, None
            started = time.perf_counter()
            (grad,) = torch.autograd.grad(loss * self.loss_scale if self.loss_scale != 1.0 else loss, z, allow_unused=True)
            self.backward_seconds += time.perf_counter() - started
            if grad is None:
                return value, None
            grad = grad.detach().float()
            if bool(torch.isfinite(grad).all()):
                return value, (grad / self.loss_scale if self.loss_scale != 1.0 else grad)
            if self.loss_scale > 1.0:
                self.loss_scale /= 2.0
                log.info("AnyI2V: step %d iteration %d: the gradient overflowed %s; loss scale now %g",
                         step, iteration, _dtype_name(self.compute_dtype), self.loss_scale)
                continue
            log.warning("AnyI2V: step %d iteration %d skipped: the gradient is not finite (the UNet computes in %s)",
                        step, iteration, _dtype_name(self.compute_dtype))
            return value, None


def _dtype_name(dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, str(dtype).removeprefix("torch."))


def compute_dtype(base_model) -> torch.dtype:
    """The dtype a ComfyUI BaseModel computes in: its manual-cast dtype where weights are cast, else its weights'."""
    return getattr(base_model, "manual_cast_dtype", None) or base_model.get_dtype()
