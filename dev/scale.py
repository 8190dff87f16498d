"""`make scale`: what AnyI2V needs at the paper's scale, without the GPU: FLOPs and memory of the real
SD1.5 UNet with an AnimateDiff v3 motion module, 512x512, 16 frames, fp16 weights, built on the meta
device (shapes only: no weights, no compute).

The model is ComfyUI's own: the SD1.5 config that ComfyUI's model detection matches to its SD15
class, its BaseModel and UNetModel and ops, made under torch.inference_mode as ComfyUI's loaders make
their weights, wrapped in a ModelPatcher; the motion module is dev/support/motion_v3.py (v3_sd15_mm at
full size, inserted and run the way AnimateDiff-Evolved does). Every pass goes through ComfyUI's and
the pack's real code:
- a CFG step: comfy.samplers.sampling_function (calc_cond_batch, apply_model, the UNet), cond and
  uncond batched as ComfyUI batches them when the GPU has room; the injected steps with the pack's
  injection (apply_injection: attn1 replacement, residual hooks, K/V sharing);
- an optimisation iteration: Optimizer.loss_and_gradient() in Optimizer.gradient_mode() (weight aliases; the
  cond-only forward that StopForward cuts after the last optimised query, its layers checkpointed as
  low_memory says; the loss: PCA, masks, Eq. 8; the backward to the latent), with each recorded query
  swapped for CPU values of its shape through an autograd bridge whose gradient flows back into the meta
  graph (2-means and the PCA need values), and the update;
- a long video: 64 frames in AnimateDiff-Evolved's static context windows (16 frames, overlap 4) through
  the ADE stand-in's sampling function and sliding CALC_COND_BATCH wrapper: an injected CFG step and an
  optimisation iteration (a pass without gradient, then one forward and backward per window);
- the automatic low_memory choice: the pack's MemoryPlan with 8, 12 and 24 GiB free, and its estimate
  (nodes/memory.py) against the measured peaks (default, low_memory, per window), within 15 % or the
  script fails;
- an inversion call: apply_model with nodes.invert.image_only_options (motion modules passed through).
Attention is what ComfyUI uses on an NVIDIA GPU (attention_pytorch: SDPA, here the flash kernel,
whose meta implementation has FLOP formulas and saves what the CUDA kernel saves), selected through
ComfyUI's own ``optimized_attention_override``.

Where meta tensors need a hand (nothing else is changed): schedule look-ups that read values
(percent_to_sigma) are answered by a CPU copy of the same schedule; ComfyUI's free-memory query
answers the GPU budget minus the weights for the meta device; the finite-value check of patch_adain
(which reads values) checks shapes only; the injected CFG steps set the sampler's ``anyi2v_force``
(the state's sigma test reads a value). The MODEL's wrappers are merged into each pass's options as
ComfyUI's prepare_model_patcher merges them for a sampling run.

FLOPs: torch.utils.flop_counter (matmuls, convolutions, attention; forward and backward). Memory:
dev/support/tensor_meter.py (live tensor bytes and their peak, bytes saved for backward), over the
weights, fp16. The peak of a run is the weights plus the largest pass peak; a GPU adds its CUDA
context (~0.3-0.5 GB) and the caching allocator's slack on top.

A cross-check runs the same estimate on the `make bench` model (width 64, 16x16 latent, fp32, the test
stand-in motion module, the CPU's attention) and compares it with what dev/bench.py measures on
this CPU over its memory runs' steps (the first two sampling steps: 10 optimisation iterations and two
CFG steps): the live tensor peak ("tensors" runs) must agree within 20 % (the script fails otherwise);
the peak RSS growth ("memory" runs, also shown) carries the CPU heap's slack on top. SCALE_CROSSCHECK=0
skips it. The last printed line is one JSON object.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FRAMES, SIZE, STEPS, CFG = 16, 512, 25, 8.0
GIB = 2**30
GPU_BUDGETS_GB = (12, 24)  # a "12 GB" card has 12 GiB
CROSSCHECK_TOLERANCE = 0.20

SD15_UNET_CONFIG = {  # as comfy.model_detection.detect_unet_config reads an SD1.5 checkpoint
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
    "context_dim": 768, "num_heads": 8, "num_head_channels": -1, "use_temporal_resblock": False,
    "use_temporal_attention": False,
}
SD15_UNET_PARAMS = 859_520_964  # runwayml/stable-diffusion-v1-5's UNet
V3_MM_PARAMS = 417_137_600  # v3_sd15_mm: 560 tensors, 836.5 MB in fp16 with its positional encodings
META = "meta"


def flash_attention(func, q, k, v, heads, *args, skip_reshape=False, skip_output_reshape=False, **kwargs):
    """An optimized_attention_override: ComfyUI's attention_pytorch as a GPU runs it (SDPA's flash
    kernel; on the meta device SDPA would pick its math form, which a GPU does not use)."""
    import torch

    if kwargs.get("mask") is not None or (args and args[0] is not None):
        raise ValueError("scale: masked attention is not expected here")
    if skip_reshape:
        b, _, _, d = q.shape
    else:
        b, _, d = q.shape
        d //= heads
        q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[0]
    return out if skip_output_reshape else out.transpose(1, 2).reshape(b, -1, heads * d)


@dataclass
class Setup:
    """One model with everything a pass needs."""

    name: str
    patcher: object  # the video MODEL (motion module in)
    injected: object  # its clone with the pack's injection
    state: object
    guider: object
    trajectory: object
    dtype: object
    weight_bytes: int
    weights: list = field(default_factory=list)
    attention_override: object = None
    gpu_bytes: int = 0
    features: object = None
    sampling: object = None  # the schedule, on the CPU
    latent_hw: tuple = (0, 0)

    def options(self, model, **extra):
        import comfy.model_patcher
        import comfy.patcher_extension

        options = comfy.model_patcher.create_model_options_clone(model.model_options)
        to = options.setdefault("transformer_options", {})
        # the MODEL's wrappers, as ComfyUI's prepare_model_patcher merges them for a sampling run
        comfy.patcher_extension.merge_nested_dicts(to.setdefault("wrappers", {}), model.wrappers, copy_dict1=False)
        if self.attention_override is not None:
            to["optimized_attention_override"] = self.attention_override
        to.update(extra)
        return options


def _meta_sampling(base, schedule="sqrt_linear"):
    """The model's sampling object on the meta device (for apply_model), answering schedule look-ups
    that need values from a CPU copy; with AnimateDiff's sqrt_linear schedule, as ADE autoselects."""
    sampling = base.model_sampling
    sampling._register_schedule(beta_schedule=schedule, linear_start=0.00085, linear_end=0.012)
    cpu = copy.deepcopy(sampling)
    meta = copy.deepcopy(sampling).to(META)
    meta.percent_to_sigma = cpu.percent_to_sigma
    base.model_sampling = meta
    return cpu


def _conds(base, guider, noise, context_dim):
    import comfy.samplers
    import torch

    pos = [[torch.zeros(1, 77, context_dim), {}]]
    neg = [[torch.zeros(1, 77, context_dim), {}]]
    guider.set_conds(pos, neg)
    guider.set_cfg(CFG)
    guider.inner_model = base
    conds = {k: [c.copy() for c in v] for k, v in guider.original_conds.items()}
    guider.conds = comfy.samplers.process_conds(base, noise, conds, torch.device(META), None, None, 0)


def build(name, model_config, motion, dtype, latent_hw, attention_override=None, gpu_bytes=0):
    """A meta-device MODEL of `model_config` with `motion(unet, patcher)` inserting the motion module,
    features of the shapes the inversion captures, the pack's injection on a clone, a CFG guider with
    processed conds, and a one-box trajectory."""
    import comfy.model_patcher
    import comfy.samplers
    import torch

    from dev.support.host import pack_module

    inject = pack_module("nodes.inject")
    traj_mod = pack_module("core.trajectory")
    model_config.set_inference_dtype(dtype, None)
    meta = torch.device(META)
    with torch.inference_mode():  # as ComfyUI's loaders run: the weights are inference tensors
        base = model_config.get_model({}, device=meta)
        patcher = comfy.model_patcher.ModelPatcher(base, load_device=meta, offload_device=meta)
        motion(base.diffusion_model, patcher)
    sampling = _meta_sampling(base)
    base.current_patcher = patcher
    unet = base.diffusion_model
    weights = list({id(t): t for t in list(unet.parameters()) + list(unet.buffers())}.values())
    weight_bytes = sum(t.untyped_storage().nbytes() for t in weights)
    setup = Setup(name, patcher, None, None, None, None, dtype, weight_bytes, weights, attention_override, gpu_bytes)
    setup.sampling, setup.latent_hw = sampling, latent_hw
    lh, lw = latent_hw
    setup.features = inversion_features(setup, lh, lw, model_config.unet_config["context_dim"])
    setup.injected = patcher.clone()
    setup.state = inject.apply_injection(setup.injected, setup.features)
    setup.guider = comfy.samplers.CFGGuider(setup.injected)
    noise = torch.zeros(FRAMES, 4, lh, lw, device=meta)
    _conds(base, setup.guider, noise, model_config.unet_config["context_dim"])
    w, h = lw * 8, lh * 8
    setup.trajectory = traj_mod.Trajectory.from_reference_json({
        "bounding_box": [[w * 0.2, h * 0.3, w * 0.5, h * 0.7]],
        "center_traj": [[[w * 0.35, h * 0.5], [w * 0.65, h * 0.5]]], "width": w, "height": h})
    return setup


def inversion_call(setup, lh, lw, context_dim, store=None):
    """One call of the inversion (nodes.invert.invert's UNet call: one frame, no CFG, motion modules
    passed through); with `store`, capturing the features as its last call does."""
    import torch

    from dev.support.host import pack_module

    invert = pack_module("nodes.invert")
    base = setup.patcher.model
    options = invert.image_only_options(setup.patcher)
    if setup.attention_override is not None:
        options["optimized_attention_override"] = setup.attention_override
    x = torch.zeros(1, 4, lh, lw, device=META)
    sigma = torch.ones(1, device=META)
    context = torch.zeros(1, 77, context_dim)
    blocks = pack_module("core.blocks")
    capture = contextlib.nullcontext() if store is None else invert.capture(
        base.diffusion_model, blocks.DEFAULT_QUERY_BLOCKS, blocks.DEFAULT_RES_BLOCKS, store)
    with torch.inference_mode(), capture:
        base.apply_model(x, sigma, c_crossattn=context, transformer_options=dict(options, sigmas=sigma))


def inversion_features(setup, lh, lw, context_dim):
    """ConditionFeatures of the shapes the inversion captures (zeros on the CPU, where ComfyUI keeps them)."""
    import torch

    from dev.support.host import pack_module

    features_mod = pack_module("core.features")
    blocks = pack_module("core.blocks")
    store: dict = {}
    with gpu_free_memory(setup):
        inversion_call(setup, lh, lw, context_dim, store)
    with torch.inference_mode():
        queries = {b: torch.zeros(q.shape, dtype=q.dtype) for b, q in store["q"].items()}
        residuals = {b: torch.zeros(r.shape, dtype=r.dtype) for b, r in store["r"].items()}
    layout = blocks.UNetLayout.from_unet(setup.patcher.model.diffusion_model)
    return features_mod.ConditionFeatures(queries, residuals, {b: tuple(hw) for b, hw in store["hw"].items()},
                                          (lh, lw), (lh * 8, lw * 8), layout.signature(), 201)


def full_size(dtype_name="float16", attention_override=flash_attention, gpu_gb=24):
    """SD1.5 (ComfyUI's SD15 config) + the v3 motion module, 512x512, 16 frames."""
    import comfy.model_detection
    import comfy.ops
    import torch

    from dev.support.motion_v3 import MotionModuleV3, timestep_embed_patch

    dtype = getattr(torch, dtype_name)

    def motion(unet, patcher):
        MotionModuleV3(comfy.ops.disable_weight_init, dtype=dtype, device=META).insert_into(unet)
        patcher.set_model_forward_timestep_embed_patch(timestep_embed_patch())

    config = comfy.model_detection.model_config_from_unet_config(dict(SD15_UNET_CONFIG))
    if type(config).__name__ != "SD15":
        raise RuntimeError(f"ComfyUI matched the SD1.5 config to {type(config).__name__}")
    return build("SD1.5 + v3 motion module", config, motion, dtype, (SIZE // 8, SIZE // 8), attention_override,
                 gpu_gb * GIB)


def bench_size():
    """The `make bench` model (dev/bench.py): SD1.5 layout at its width, the test stand-in motion
    module placed as ADE places modules, fp32, its latent size, the CPU's own attention."""
    import torch

    from dev import bench
    from dev.standin_ade.motion import StandinMotionModule, motion_slots, run_motion_module
    from dev.support.tiny_models import TINY_UNET_CONFIG, tiny_classes

    config = dict(TINY_UNET_CONFIG, model_channels=bench.CHANNELS, channel_mult=[1, 2, 4, 4], num_heads=8)
    cls = tiny_classes()
    cls.unet_config = dict(cls.unet_config, model_channels=bench.CHANNELS)

    def motion(unet, patcher):
        for kind, block, pos, channels in motion_slots(unet):
            with torch.device(META):
                module = StandinMotionModule(channels)
            module.video_length = bench.FRAMES  # what ADE's sampling sets without context windows
            (unet.input_blocks if kind == "input" else unet.output_blocks)[block].insert(pos, module)
        patcher.set_model_forward_timestep_embed_patch((StandinMotionModule, run_motion_module))

    import psutil

    return build("make bench model", cls(config), motion, torch.float32, (bench.LATENT, bench.LATENT), None,
                 psutil.virtual_memory().available)


@contextlib.contextmanager
def gpu_free_memory(setup):
    """ComfyUI asks the device how much memory it has and how much is free (to batch cond and uncond, to size
    attention chunks, the pack's memory plan); for the meta device, answer the GPU budget, minus the weights for
    what is free."""
    import comfy.model_management as mm

    original_free, original_total = mm.get_free_memory, mm.get_total_memory

    def free(dev=None, torch_free_too=False):
        if getattr(dev, "type", None) != META:
            return original_free(dev, torch_free_too)
        value = max(0, setup.gpu_bytes - setup.weight_bytes)
        return (value, value) if torch_free_too else value

    def total(dev=None, torch_total_too=False):
        if getattr(dev, "type", None) != META:
            return original_total(dev, torch_total_too)
        return (setup.gpu_bytes, setup.gpu_bytes) if torch_total_too else setup.gpu_bytes

    mm.get_free_memory, mm.get_total_memory = free, total
    try:
        yield
    finally:
        mm.get_free_memory, mm.get_total_memory = original_free, original_total


@contextlib.contextmanager
def shape_checked_adain():
    """patch_adain checks its inputs are finite (a value): on meta tensors, check the shape only."""
    from dev.support.host import pack_module

    debias = pack_module("core.debias")
    original = debias._check

    def check(name, t):
        if t.ndim != 4:
            raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got shape {tuple(t.shape)}")

    debias._check = check
    try:
        yield
    finally:
        debias._check = original


@dataclass
class Pass:
    flops: int = 0
    peak: int = 0  # bytes of live tensors over the weights, at the pass's peak
    saved: int = 0  # bytes autograd saved for backward in the UNet forward (weights left out)
    held: int = 0  # bytes alive when the gradient forward has returned (what its graph holds)
    checkpointed: bool = False  # the optimisation's gradient forwards checkpointed their layers


def measure(setup, run, flops=True) -> Pass:
    """Run a pass twice: once counting FLOPs, once metering bytes (FlopCounterMode's module tracker
    keeps autograd nodes in reference cycles until Python's gc runs, which would inflate the bytes)."""
    from torch.utils.flop_counter import FlopCounterMode

    from dev.support.tensor_meter import LiveBytes

    result = Pass()
    with gpu_free_memory(setup), shape_checked_adain():
        if flops:
            with FlopCounterMode(display=False) as counter:
                run(None, Pass())
            result.flops = counter.get_total_flops()
        meter = LiveBytes(known=setup.weights)
        with meter:
            run(meter, result)
        result.peak = meter.peak
    return result


def cfg_step(setup, injected: bool, frames: int = FRAMES, windows=None, flops=True) -> Pass:
    """One CFG denoising step (cond + uncond), as the sampler calls the model (in `windows`: ADE's way)."""
    import comfy.samplers
    import torch

    lh, lw = setup.latent_hw

    def run(meter, result):
        with windowed_sampling(setup, frames, windows, injected) as options, torch.inference_mode():
            if injected:
                options["transformer_options"]["anyi2v_force"] = True
            x = torch.zeros(frames, 4, lh, lw, device=META)
            sigma = torch.ones(frames, device=META)
            conds = setup.guider.conds
            comfy.samplers.sampling_function(setup.patcher.model, x, sigma, conds["negative"], conds["positive"], CFG, options)

    return measure(setup, run, flops)


def _values():
    """An autograd bridge from a meta tensor to CPU values of its shape (seeded), whose gradient flows back into
    the meta graph: the loss reads values (2-means, the PCA's eigenvectors), meta tensors have none."""
    import torch

    class Values(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, seed):
            ctx.like = (q.dtype, q.device)
            return torch.randn(q.shape, generator=torch.Generator().manual_seed(seed)).to(q.dtype)

        @staticmethod
        def backward(ctx, grad):
            dtype, device = ctx.like
            return grad.to(device=device, dtype=dtype), None

    return Values


@contextlib.contextmanager
def query_values():
    """Every query the optimisation's sinks record (nodes/optimizer.py QuerySink, nodes/window_grad.py WindowSink)
    becomes CPU values through the bridge; the rest of the pack's code runs as it is."""
    from dev.support.host import pack_module

    values = _values()
    sinks = [pack_module("nodes.optimizer").QuerySink, pack_module("nodes.window_grad").WindowSink]
    originals = [sink.record for sink in sinks]

    def bridged(original):
        def record(self, block, q, frames=None):
            return original(self, block, values.apply(q, block) if q.device.type == META else q, frames)

        return record

    try:
        for sink, original in zip(sinks, originals, strict=True):
            sink.record = bridged(original)
        yield
    finally:
        for sink, original in zip(sinks, originals, strict=True):
            sink.record = original


def optimisation_iteration(setup, low_memory: str, frames: int = FRAMES, windows=None, flops=True) -> Pass:
    """One iteration of Optimizer.optimize: Optimizer.gradient (the gradient forward through Optimizer.queries in
    Optimizer.gradient_mode, the loss on CPU values of the queries' shapes, the backward to the latent; in context
    windows `windows` (a ContextOptions of the ADE stand-in) the pass without gradient and one forward and
    backward per window) and the update."""
    import torch

    from dev.support.host import pack_module
    from dev.support.tensor_meter import SavedBytes

    optimizer = pack_module("nodes.optimizer")
    make_update = pack_module("core.optimize").make_update
    lh, lw = setup.latent_hw
    settings = optimizer.Settings(low_memory=low_memory)
    opt = optimizer.Optimizer(setup.guider, settings, setup.trajectory, setup.state, (frames, 4, lh, lw))
    update = make_update(settings.update_rule, settings.lr)
    with torch.inference_mode():
        x = torch.zeros(frames, 4, lh, lw, device=META)
        sigma = torch.ones((), device=META)

    def run(meter, result):
        queries = opt.queries

        def metered(*args, **kwargs):  # bytes saved for backward by each gradient forward, and held after it
            saved = SavedBytes(known=setup.weights)
            with saved:
                out = queries(*args, **kwargs)
            if torch.is_grad_enabled() and saved.bytes:
                result.saved = max(result.saved, saved.bytes)
                result.held = max(result.held, meter.now if meter is not None else 0)
            return out

        opt.queries = metered
        try:
            with windowed_sampling(setup, frames, windows) as options, opt.gradient_mode(), query_values():
                z = x.detach().clone().requires_grad_(True)
                loss, grad = opt.loss_and_gradient(z, 1.0, sigma, options)
                del loss
                update(z.detach(), grad.detach())
        finally:
            del opt.queries

    result = measure(setup, run, flops)
    result.checkpointed = opt.forward_size[2]
    return result


@contextlib.contextmanager
def windowed_sampling(setup, frames, windows, injected=True):
    """The model options of a sampling step; with `windows`, inside AnimateDiff-Evolved's sampling contract as the
    ADE stand-in reproduces it (its sampling function in place of ComfyUI's, its sliding CALC_COND_BATCH wrapper,
    ad_params with each window's sub_idxs, which the motion module reads)."""
    import comfy.patcher_extension
    import comfy.samplers

    model = setup.injected if injected else setup.patcher
    if windows is None:
        yield setup.options(model)
        return
    from dev.standin_ade import sampling

    state = sampling.GlobalState([], windows, frames)
    options = setup.options(model, ADGS=state)
    comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "ADE",
                                                 sampling.sliding_calc_cond_batch, options, is_model_options=True)
    original = comfy.samplers.sampling_function
    comfy.samplers.sampling_function = sampling.evolved_sampling_function
    try:
        yield options
    finally:
        comfy.samplers.sampling_function = original


def inversion_pass(setup) -> Pass:
    lh, lw = setup.latent_hw
    context_dim = setup.patcher.model.model_config.unet_config["context_dim"]
    return measure(setup, lambda meter, result: inversion_call(setup, lh, lw, context_dim))


def schedule_counts(setup):
    """(injected steps, optimised steps, iterations per step, inversion calls) with the pack's defaults on the
    MODEL's schedule (25 ddim_uniform steps), read from the pack's own objects."""
    import comfy.samplers

    from dev.support.host import pack_module

    optimizer = pack_module("nodes.optimizer")
    schedule = pack_module("core.schedule")
    lh, lw = setup.latent_hw
    settings = optimizer.Settings()
    opt = optimizer.Optimizer(setup.guider, settings, setup.trajectory, setup.state, (FRAMES, 4, lh, lw))
    sigmas = comfy.samplers.calculate_sigmas(setup.sampling, "ddim_uniform", STEPS)
    injected = sum(1 for s in sigmas[:-1] if float(s) >= setup.state.end_sigma)
    optimised = len(opt.steps(sigmas))
    return injected, optimised, settings.iterations, len(schedule.inversion_timesteps(201, 1))


def measure_model(setup, log=print) -> dict:
    """Every pass of `setup`; FLOP totals of the three workloads and the peaks of a run."""
    injected, optimised, iterations, inversion_calls = schedule_counts(setup)
    passes = {}
    for name, run in (("cfg", lambda: cfg_step(setup, False)), ("cfg_injected", lambda: cfg_step(setup, True)),
                      ("optimise", lambda: optimisation_iteration(setup, "off")),
                      ("optimise_lowmem", lambda: optimisation_iteration(setup, "on")),
                      ("inversion", lambda: inversion_pass(setup))):
        passes[name] = run()
        p = passes[name]
        log(f"  {name:16s} {p.flops / 1e12:9.3f} TFLOP  peak {p.peak / GIB:7.3f} GiB  saved for backward "
            f"{p.saved / GIB:6.3f} GiB  held after the forward {p.held / GIB:6.3f} GiB")
    plain = STEPS * passes["cfg"].flops
    cfg = injected * passes["cfg_injected"].flops + (STEPS - injected) * passes["cfg"].flops
    opt_passes = optimised * iterations
    peaks = {
        "plain": passes["cfg"].peak,
        "default": max(passes["cfg_injected"].peak, passes["optimise"].peak),
        "lowmem": max(passes["cfg_injected"].peak, passes["optimise_lowmem"].peak),
    }
    return {
        "passes": passes, "injected_steps": injected, "optimised_steps": optimised, "iterations": iterations,
        "inversion_calls": inversion_calls,
        "flops": {"plain": plain, "anyi2v": cfg + opt_passes * passes["optimise"].flops,
                  "anyi2v_lowmem": cfg + opt_passes * passes["optimise_lowmem"].flops,
                  "inversion": inversion_calls * passes["inversion"].flops},
        "peaks": peaks,
    }


def crosscheck(log=print) -> list[dict]:
    """The estimate at the bench model's size against what `make bench` measures on this CPU: the peak RSS
    growth (its memory runs) and the peak of live tensor bytes (the same runs, metered)."""
    from dev import bench

    setup = bench_size()
    log(f"{setup.name}: width {bench.CHANNELS}, {bench.LATENT}x{bench.LATENT} latent, {FRAMES} frames, fp32")
    estimate = measure_model(setup, log)["peaks"]
    rows = []
    for variant, key in (("plain", "plain"), ("anyi2v", "default"), ("lowmem", "lowmem")):
        rss = bench.child(variant, "memory")["peak_mb"]
        tensors = bench.child(variant, "tensors")["tensor_peak_mb"]
        mb = estimate[key] / 2**20
        rows.append({"variant": variant, "estimate_mb": round(mb, 1), "bench_rss_mb": round(rss, 1),
                     "bench_tensors_mb": round(tensors, 1), "vs_rss": round(mb / rss - 1, 3),
                     "vs_tensors": round(mb / tensors - 1, 3)})
    return rows


WINDOW_FRAMES, WINDOW_LENGTH, WINDOW_OVERLAP = 64, 16, 4
AUTO_FREE_GB = (8, 12, 24)  # free device memory for the automatic choice
ESTIMATE_TOLERANCE = 0.15


def memory_plan(setup, mode="auto"):
    """The pack's MemoryPlan for the setup's injected MODEL with the default query blocks."""
    from dev.support.host import pack_module

    memory, blocks = pack_module("nodes.memory"), pack_module("core.blocks")
    settings = pack_module("nodes.optimizer").Settings()
    unet = setup.injected.model.diffusion_model
    return memory.MemoryPlan(mode, setup.injected, blocks.UNetLayout.from_unet(unet).resolve(settings.query_blocks, "attn"),
                             settings.pca_dim)


def auto_choices(setup, peaks, log=print) -> dict:
    """low_memory auto, decided by the pack's MemoryPlan with `gb` GiB free: {gb: (checkpointing, peak bytes)}."""
    options = {"optimized_attention_override": setup.attention_override}
    out = {}
    for gb in AUTO_FREE_GB:
        plan = memory_plan(setup)
        plan.free = lambda gb=gb: gb * GIB
        checkpoint = plan.checkpoint(FRAMES, setup.latent_hw, options)
        out[gb] = (checkpoint, peaks["lowmem" if checkpoint else "default"])
        log(f"  low_memory auto with {gb} GiB free: checkpointing {'on' if checkpoint else 'off'}, peak "
            f"{(setup.weight_bytes + out[gb][1]) / GIB:.2f} GiB with the weights")
    return out


def long_video(setup, log=print) -> dict:
    """64 frames in ADE's static windows of 16 with overlap 4 (the stand-in's sampling contract), default settings
    with low_memory off: an injected CFG step and an optimisation iteration (per window)."""
    from dev.standin_ade.context import STATIC, ContextOptions, static_windows

    windows = ContextOptions(STATIC, WINDOW_LENGTH, WINDOW_OVERLAP)
    count = len(static_windows(WINDOW_FRAMES, WINDOW_LENGTH, WINDOW_OVERLAP))
    cfg = cfg_step(setup, True, WINDOW_FRAMES, windows, flops=False)
    opt = optimisation_iteration(setup, "off", WINDOW_FRAMES, windows, flops=False)
    for name, p in (("cfg_injected", cfg), ("optimise", opt)):
        log(f"  {WINDOW_FRAMES} frames in {count} windows: {name:13s} peak {p.peak / GIB:7.3f} GiB  saved for backward "
            f"{p.saved / GIB:6.3f} GiB (per window)")
    return {"windows": count, "cfg": cfg, "optimise": opt, "peak": max(cfg.peak, opt.peak)}


def estimate_check(setup, full, long, log=print) -> list[dict]:
    """nodes/memory.py's estimate of an optimisation iteration against what this script measured."""
    options = {"optimized_attention_override": setup.attention_override}
    plan = memory_plan(setup)
    rows = []
    for name, checkpoint, measured in (("default", False, full["passes"]["optimise"].peak),
                                       ("low_memory", True, full["passes"]["optimise_lowmem"].peak),
                                       (f"windows{WINDOW_FRAMES}", False, long["optimise"].peak)):
        estimate = plan.need(WINDOW_LENGTH if name.startswith("windows") else FRAMES, setup.latent_hw, checkpoint, options)
        rows.append({"variant": name, "estimate_gb": estimate / GIB, "measured_gb": measured / GIB,
                     "dev": round(estimate / measured - 1, 3)})
        log(f"  estimate {name:10s} {estimate / GIB:6.2f} GiB, measured {measured / GIB:6.2f} GiB ({estimate / measured - 1:+.1%})")
    return rows


def main():
    import torch

    from dev.support.host import load_pack

    load_pack()
    torch.manual_seed(0)
    setup = full_size()
    unet = setup.patcher.model.diffusion_model
    from dev.support.motion_v3 import TemporalModule

    mm_params = sum(p.numel() for m in unet.modules() if isinstance(m, TemporalModule) for p in m.parameters())
    unet_params = sum(p.numel() for p in unet.parameters()) - mm_params
    if (unet_params, mm_params) != (SD15_UNET_PARAMS, V3_MM_PARAMS):
        raise SystemExit(f"scale: built {unet_params} UNet / {mm_params} motion-module parameters, expected "
                         f"{SD15_UNET_PARAMS} / {V3_MM_PARAMS}")
    weights_gib = setup.weight_bytes / GIB
    print(f"{setup.name}: UNet {unet_params / 1e6:.1f} M + motion module {mm_params / 1e6:.1f} M parameters, "
          f"{weights_gib:.2f} GiB in fp16; {SIZE}x{SIZE}, {FRAMES} frames, {STEPS} steps, CFG {CFG:g}", flush=True)
    full = measure_model(setup, lambda line: print(line, flush=True))
    flops, peaks = full["flops"], full["peaks"]
    print(f"schedule: {full['injected_steps']} injected steps, {full['optimised_steps']} optimised steps x "
          f"{full['iterations']} iterations, inversion {full['inversion_calls']} one-frame calls")
    for name, value in flops.items():
        print(f"  {name:14s} {value / 1e15:8.3f} PFLOP  ({value / flops['plain']:.3f} x plain sampling)")
    for name, value in peaks.items():
        total = weights_gib + value / GIB
        fits = ", ".join(f"{'fits' if total <= gb else 'exceeds'} {gb} GB" for gb in GPU_BUDGETS_GB)
        print(f"  peak {name:8s} {total:6.2f} GiB with the weights ({value / GIB:.2f} GiB of activations): {fits}")
    summary = {
        "flop_ratio": round(flops["anyi2v"] / flops["plain"], 3),
        "lowmem_flop_ratio": round(flops["anyi2v_lowmem"] / flops["plain"], 3),
        "inversion_flop_ratio": round(flops["inversion"] / flops["plain"], 3),
        "plain_pflop": round(flops["plain"] / 1e15, 3),
        "weights_gb": round(weights_gib, 2),
        "plain_peak_gb": round(weights_gib + peaks["plain"] / GIB, 2),
        "default_peak_gb": round(weights_gib + peaks["default"] / GIB, 2),
        "lowmem_peak_gb": round(weights_gib + peaks["lowmem"] / GIB, 2),
        "default_saved_gb": round(full["passes"]["optimise"].saved / GIB, 2),
        "lowmem_saved_gb": round(full["passes"]["optimise_lowmem"].saved / GIB, 2),
    }
    print("the automatic low_memory choice:", flush=True)
    choices = auto_choices(setup, peaks, lambda line: print(line, flush=True))
    long = long_video(setup, lambda line: print(line, flush=True))
    print("nodes/memory.py's estimate of an optimisation iteration (over the weights):", flush=True)
    estimates = estimate_check(setup, full, long, lambda line: print(line, flush=True))
    summary.update({
        "auto_peak_gb_8gb": round(weights_gib + choices[8][1] / GIB, 2),
        "auto_peak_gb_24gb": round(weights_gib + choices[24][1] / GIB, 2),
        "windows64_peak_gb": round(weights_gib + long["peak"] / GIB, 2),
        "windows64_saved_gb": round(long["optimise"].saved / GIB, 2),
        "estimate_max_dev": max(abs(r["dev"]) for r in estimates),
    })
    if os.environ.get("SCALE_CROSSCHECK", "1") != "0":
        rows = crosscheck(lambda line: print(line, flush=True))
        for row in rows:
            print(f"  cross-check {row['variant']:7s} estimate {row['estimate_mb']:7.1f} MB, bench RSS "
                  f"{row['bench_rss_mb']:7.1f} MB ({row['vs_rss']:+.0%}), bench tensors {row['bench_tensors_mb']:7.1f} MB "
                  f"({row['vs_tensors']:+.0%})")
        summary["crosscheck_max_dev"] = max(abs(r["vs_tensors"]) for r in rows)
        summary["crosscheck_max_dev_rss"] = max(abs(r["vs_rss"]) for r in rows)
    print(json.dumps(summary), flush=True)
    if summary["estimate_max_dev"] > ESTIMATE_TOLERANCE:
        raise SystemExit(f"scale: nodes/memory.py's estimate is {summary['estimate_max_dev']:.0%} off the measured peak "
                         f"(tolerance {ESTIMATE_TOLERANCE:.0%})")
    if summary.get("crosscheck_max_dev", 0) > CROSSCHECK_TOLERANCE:
        raise SystemExit(f"scale: the estimate is {summary['crosscheck_max_dev']:.0%} off the bench's measured tensor "
                         f"peak (tolerance {CROSSCHECK_TOLERANCE:.0%})")


if __name__ == "__main__":
    main()
