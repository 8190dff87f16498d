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
from . import memory, window_grad
from .grad import checkpointed, trainable_weights, truncated_modules
from .inject import StopForward, WindowDone, token_grid

log = logging.getLogger("AnyI2V")


def optimised_steps(sigmas, end_sigma: float, iterations: int) -> list[int]:
    """The steps of a run whose latent is optimised: those at sigma >= end_sigma (the first opt_percent of the
    schedule), and always the first, however few the steps (4-8-step schedules may have none at that sigma)."""
    if iterations <= 0 or len(sigmas) < 2:
        return []
    return [i for i in range(len(sigmas) - 1) if i == 0 or float(sigmas[i]) >= end_sigma]


class QuerySink:
    """Receives the conditional queries of the optimised blocks during one gradient forward.

    The injection hands it every model call (``model_call``) and every optimised block's queries (``record``).
    Without context windows the call runs with checkpointing as ``saving`` decides, builds one graph, and
    StopForward ends it after the last optimised block. In context windows each window's call runs without a
    graph and ends there (WindowDone): the sink keeps the values of every frame's queries (a frame in several
    windows: the first window's), each window's frames and frame 0's kept K/V as the window found them: the
    first pass of the per-window gradient (nodes/window_grad.py). With ``graph_in_windows`` the windows keep their
    graphs instead, all alive until one backward (the earlier behaviour, the reference the tests measure the
    per-window gradient against)."""

    def __init__(self, blocks, saving=None, graph_in_windows=False):
        self.blocks = set(blocks)
        self.stop_after = max(blocks)
        self.saving = saving or (lambda x: contextlib.nullcontext())
        self.graph_in_windows = graph_in_windows
        self.queries: dict[int, torch.Tensor] = {}
        self._frames: dict[int, dict[int, torch.Tensor]] = {}
        self.windows: list[list[int]] = []  # the video frames of each windowed model call, in order
        self.kv_before: list[dict] = []  # frame 0's kept K/V as each windowed call found them
        self.owner: dict[int, int] = {}  # video frame -> the windowed call whose queries count for it
        self.closed = False

    @property
    def windowed(self) -> bool:
        return bool(self.windows)

    def take(self) -> dict[int, torch.Tensor]:
        """The recorded queries; the sink then records nothing more and holds no tensor. (Checkpointed layers
        keep their inputs, transformer_options and so this sink, in the autograd graph: a sink holding graph
        tensors would make a reference cycle through C++ that Python never frees, one graph per iteration.)"""
        queries, self.queries, self._frames, self.closed = self.queries, {}, {}, True
        return queries

    def model_call(self, frames, kv, run, x):
        """One model call: `frames` the video frames of its context window (None: all); `kv` frame 0's kept K/V."""
        if frames is None:
            with self.saving(x):
                return run()
        self.windows.append(list(frames))
        self.kv_before.append(kv.snapshot())
        with torch.enable_grad() if self.graph_in_windows else torch.no_grad():
            try:
                return run()
            except WindowDone:
                return torch.zeros_like(x)

    def stop(self, frames):
        """The exception that ends the forward after the last optimised block."""
        return StopForward() if frames is None else WindowDone()

    def record(self, block, q, frames=None):
        """q: (frames, tokens, C) of one call; `frames` the video frames of a context window (None: all)."""
        if self.closed:  # a checkpointed layer recomputed in backward: its queries were taken in the forward
            return
        if frames is None:
            self.queries[block] = q
            return
        call = len(self.windows) - 1
        if call < 0:
            raise RuntimeError("AnyI2V: a context window's model call did not pass the injection's wrapper")
        rows = self._frames.setdefault(block, {})
        for i, f in enumerate(frames):
            if f not in rows:  # a frame in several windows: the first window's
                rows[f] = q[i] if self.graph_in_windows else q[i].detach()
                self.owner.setdefault(f, call)

    def assemble(self, frames: int):
        """After a forward in context windows: every block's queries of all `frames` video frames in order."""
        for block, rows in self._frames.items():
            missing = [f for f in range(frames) if f not in rows]
            if missing:
                raise RuntimeError(f"AnyI2V: the context windows left frames {missing[:8]} without queries")
            self.queries[block] = torch.stack([rows[f] for f in range(frames)])


class Settings:
    def __init__(self, opt_percent=0.24, iterations=5, lr=0.01, update_rule="adamw_fresh", pca_dim=64,
                 query_blocks="Query 1.1, Query 2.0", mask_mode="semantic", low_memory="auto"):
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
        self.mask_mode, self.low_memory = mask_mode, memory.memory_mode(low_memory)


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
        self.modules = truncated_modules(unet, max(self.blocks))
        plan = guider.model_options.get("transformer_options", {}).get(memory.PLAN_KEY)  # the run's, from its wrapper
        if plan is None or plan.mode != settings.low_memory or plan.blocks != sorted(self.blocks):
            plan = memory.MemoryPlan(settings.low_memory, guider.model_patcher, self.blocks, settings.pca_dim)
        self.memory = plan
        self.transformer_options: dict = {}
        self.forward_size: tuple | None = None  # (frames, latent hw, checkpointed) of the latest gradient forward

    def steps(self, sigmas) -> list[int]:
        return optimised_steps(sigmas, self.end_sigma, self.settings.iterations)

    def queries(self, x, sigma, model_options, sink=None) -> dict[int, torch.Tensor]:
        """One forward of the conditional branch through the sampler's entry point, cut after the last optimised
        query; the optimised blocks' queries of all frames (``sink``: a QuerySink by default)."""
        sink = sink if sink is not None else QuerySink(self.blocks, self.saving)
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
        return self.loss_of(self.queries(x, sigma, model_options), x.shape[-2:])

    def loss_of(self, queries, latent_hw):
        maps = query_maps(queries, self.grids(queries, latent_hw), self.grid_hw, self.settings.pca_dim)
        self.last_maps = [m.detach() for m in maps]  # for the feature view: each block's maps of the latest iteration
        return alignment_loss(maps, self.boxes, self.points, self.settings.mask_mode)

    def saving(self, x):
        """Checkpointing of the truncated UNet's layers for a gradient forward of x (a model call's input), as
        low_memory says (auto: when the estimate does not fit the free memory); nothing without gradient."""
        if not torch.is_grad_enabled():
            return contextlib.nullcontext()
        frames, hw = x.shape[0], tuple(x.shape[-2:])
        checkpoint = self.memory.checkpoint(frames, hw, self.transformer_options)
        self.forward_size = (frames, hw, checkpoint)
        return checkpointed(self.modules[:-1]) if checkpoint else contextlib.nullcontext()

    @contextlib.contextmanager
    def gradient_mode(self):
        """Where the gradient forwards run: autograd on and the weights of the truncated UNet aliased as normal
        tensors (each forward checkpoints its layers or not: ``saving``). dev/scale.py measures the
        optimisation inside this context too."""
        with torch.inference_mode(False), torch.enable_grad(), trainable_weights(self.modules):
            yield

    def loss_and_gradient(self, z, scale: float, sigma, model_options, loss_scale: float = 1.0, graph_in_windows=False):
        """(alignment loss, its gradient on z) at z, the latent in z_t units (requires grad; inside gradient_mode).
        The backward runs on the loss times ``loss_scale``, divided out again in fp32.

        One gradient forward and backward; in context windows a pass without gradient over all windows, then one
        forward and backward per window (nodes/window_grad.py), so the peak does not grow with the number of
        windows. ``graph_in_windows``: all windows' graphs at once and one backward (the earlier way, for tests)."""
        self.transformer_options = model_options.get("transformer_options", {})
        sink = QuerySink(self.blocks, self.saving, graph_in_windows)
        try:
            queries = self.queries(z * scale, sigma, model_options, sink)
            if sink.windowed and not graph_in_windows:
                return window_grad.gradient(self, sink, queries, z, scale, sigma, model_options, loss_scale)
            loss = self.loss_of(queries, z.shape[-2:])
            del queries
            started = time.perf_counter()
            (grad,) = torch.autograd.grad(loss * loss_scale if loss_scale != 1.0 else loss, z, allow_unused=True)
            self.backward_seconds += time.perf_counter() - started
            if grad is not None and loss_scale != 1.0:
                grad = grad.float() / loss_scale
            return loss, grad
        except memory.OOM as error:
            if self.forward_size is None:  # before any layer ran: as the forward over the latent would have
                frames, hw = z.shape[0], tuple(z.shape[-2:])
                self.forward_size = (frames, hw, self.memory.checkpoint(frames, hw, self.transformer_options))
            frames, hw, checkpointed_now = self.forward_size
            raise self.memory.out_of_memory(error, frames, hw, checkpointed_now) from error

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
            loss, grad = self.loss_and_gradient(z, scale, sigma, model_options, self.loss_scale)
            value = float(loss.detach())
            if not math.isfinite(value):
                log.warning("AnyI2V: step %d iteration %d skipped: the alignment loss is %s (the UNet computes in %s)",
                            step, iteration, value, _dtype_name(self.compute_dtype))
                return value, None
            if grad is None:
                return value, None
            grad = grad.detach().float()
            if bool(torch.isfinite(grad).all()):
                return value, grad
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
