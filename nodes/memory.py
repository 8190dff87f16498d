"""The latent optimisation's memory: an estimate, the ``low_memory`` choice, and what ComfyUI is told.

The estimate (``optimisation_bytes``) is the peak of one optimisation iteration's gradient forward and backward,
in bytes over the loaded weights, for a gradient forward over ``frames`` frames (the latent's, or a context
window's). It walks the layers the truncated forward runs (nodes/grad.py ``truncated_modules``) with the shapes
they see and counts what autograd keeps for backward, in elements per element of the layer's input (the
weights are frozen, so only what the input gradients need is kept); constants read off `make scale`'s meta-device
run of SD1.5 + AnimateDiff v3 (dev/scale.py), which checks this estimate against its measurement every run:

- ResBlock: 3 per input and 3 per output channel (GroupNorm, SiLU and convolution inputs of both halves);
- SpatialTransformer: 24.1 per channel and token, plus 2 per channel and context token (the cross-attention's
  keys and values), with an attention kernel that keeps no attention matrix (SDPA, xformers, flash, sage: what
  ComfyUI uses on NVIDIA and most other GPUs); ComfyUI's other kernels (sub-quadratic, split, basic) keep the
  attention probabilities too: heads x tokens x (tokens + context tokens) per frame;
- a module the pack does not know (a motion module): 1.5 per channel for each Linear, convolution and
  normalisation layer inside it (AnimateDiff's temporal transformer has 16: 24 per channel);
- Downsample 1, Upsample 4 (its convolution's input is 4x larger), the input convolution 1;
- the optimised block the forward stops in: its ResBlock, and 3 per channel of its transformer up to the query.

With checkpointing (``low_memory``) each checkpointed layer keeps its input only; the peak adds the largest
layer's recomputed activations in backward. Both add the loss: the query maps of every frame and their
gradients, and the PCA's input of the largest optimised block and its centred copy, all in fp32 (the loss is fp32
whatever the UNet computes in).

``MemoryPlan`` holds a run's choice: ``low_memory`` "on" and "off" as set; "auto" checkpoints a gradient forward
whose estimate does not fit the device's free memory at that moment (``comfy.model_management.get_free_memory``),
decided per frame count (the latent's, or a context window's). Before sampling, a PREPARE_SAMPLING wrapper (put in
place by the injection's OUTER_SAMPLE wrapper when the sampler is AnyI2V's) has ComfyUI free the memory the chosen
variant needs by unloading other models (``free_memory`` with the sampled models kept loaded), after
ComfyUI loaded them for plain sampling.
"""

from __future__ import annotations

import logging
import math

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import torch

from .grad import blocks_of, truncated_modules

log = logging.getLogger("AnyI2V")

MODES = ("auto", "on", "off")
LEGACY = {True: "on", False: "auto"}  # workflows saved when low_memory was a boolean (off was the default)
PLAN_KEY = "anyi2v_memory"
WRAPPER_KEY = "anyi2v_memory"

RES_PER_CHANNEL = 3.0
TRANSFORMER_PER_TOKEN = 24.1
TRANSFORMER_PER_CONTEXT = 2.0
PER_UNKNOWN_LAYER = 1.5  # per channel, for each Linear, convolution and normalisation layer inside
STOP_TRANSFORMER = 3.0
UPSAMPLE = 4.0
LINEAR_KERNELS = ("attention_pytorch", "attention_xformers", "attention_flash", "attention_sage")
SAFETY = 1.1  # the estimate is within a few % of make scale's measurement; a margin for allocator slack
GIB = 2**30


def memory_mode(value) -> str:
    """low_memory as a mode: "auto", "on" or "off"; the booleans of older workflows as LEGACY says."""
    if isinstance(value, bool):
        return LEGACY[value]
    if isinstance(value, str) and value in MODES:
        return value
    raise ValueError(f"low_memory: expected one of {', '.join(MODES)} (or true/false from older workflows), got {value!r}")


def _kind(module) -> str:
    name = type(module).__name__
    if name in ("ResBlock", "SpatialTransformer", "Downsample", "Upsample"):
        return name
    if isinstance(module, torch.nn.Conv2d) or name == "Conv2d":
        return "Conv2d"
    return "other"


def _inner_layers(module) -> int:
    """The Linear, convolution and normalisation layers inside a module."""
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.LayerNorm, torch.nn.GroupNorm)
    return sum(1 for m in module.modules() if isinstance(m, kinds))


def _linear_attention(transformer_options=None) -> bool:
    """Whether ComfyUI's attention keeps no attention matrix for backward (an override is assumed to be such)."""
    if (transformer_options or {}).get("optimized_attention_override") is not None:
        return True
    from comfy.ldm.modules.attention import optimized_attention

    return getattr(optimized_attention, "__name__", "") in LINEAR_KERNELS


def layer_sizes(unet, stop_block: int, latent_hw):
    """(kind, module, input channels, output channels, tokens, heads) of each layer a forward that stops at the
    query of output block `stop_block` runs, in order; the last is the stop block's transformer."""
    h, w = latent_hw
    channels = None
    sizes, out = [], []
    layers = blocks_of(truncated_modules(unet, stop_block))
    stop_layers = set(map(id, blocks_of([unet.output_blocks[stop_block]])))
    for m in layers:
        kind = _kind(m)
        if kind == "other" and channels is None:
            continue  # the time embedding
        if kind == "Conv2d":
            c_in, c_out = m.in_channels, m.out_channels
        elif kind == "ResBlock":
            c_in, c_out = m.channels, m.out_channels
        elif kind == "SpatialTransformer":
            c_in = c_out = m.in_channels
        elif kind in ("Downsample", "Upsample"):
            c_in, c_out = m.channels, m.out_channels
        else:
            c_in = c_out = channels
        heads = getattr(getattr(getattr(m, "transformer_blocks", [None])[0], "attn1", None), "heads", 8)
        out.append((kind, m, c_in, c_out, h * w, heads))
        if kind == "Downsample":
            sizes.append((h, w))
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        elif kind == "Upsample":
            h, w = sizes.pop() if sizes else (h * 2, w * 2)
        channels = c_out
        if kind == "SpatialTransformer" and id(m) in stop_layers:
            break
    return out


def _saved(kind, c_in, c_out, tokens, heads, frames, context, linear, stop, unknown_layers=0) -> float:
    """Elements autograd keeps for one layer's backward over `frames` frames (see the module docstring)."""
    if kind == "ResBlock":
        per = RES_PER_CHANNEL * (c_in + c_out) * tokens
    elif kind == "SpatialTransformer":
        if stop:
            return STOP_TRANSFORMER * c_in * tokens * frames
        per = TRANSFORMER_PER_TOKEN * c_in * tokens + TRANSFORMER_PER_CONTEXT * c_in * context
        if not linear:
            per += heads * tokens * (tokens + context)
    elif kind == "Upsample":
        per = UPSAMPLE * c_in * tokens
    elif kind in ("Downsample", "Conv2d"):
        per = c_in * tokens
    else:
        per = PER_UNKNOWN_LAYER * unknown_layers * c_in * tokens
        if not linear:
            per += heads * tokens * frames
    return per * frames


def optimisation_bytes(unet, frames: int, latent_hw, stop_block: int, blocks, pca_dim: int, element_size: int,
                       checkpoint: bool, context: int = 77, transformer_options=None) -> int:
    """The estimated peak of one optimisation iteration over `frames` frames, in bytes over the weights."""
    linear = _linear_attention(transformer_options)
    layers = layer_sizes(unet, stop_block, latent_hw)
    last = set(map(id, blocks_of([unet.output_blocks[stop_block]])))
    saved = [_saved(kind, c_in, c_out, t, heads, frames, context, linear, i == len(layers) - 1, _inner_layers(m))
             for i, (kind, m, c_in, c_out, t, heads) in enumerate(layers)]
    if checkpoint:  # checkpointed layers keep their input; the stop block's layers run as usual
        kept = sum(s if id(m) in last else c_in * t * frames
                   for s, (kind, m, c_in, c_out, t, heads) in zip(saved, layers, strict=True))
        recompute = max(s for s, (_, m, *_rest) in zip(saved, layers, strict=True) if id(m) not in last)
    else:
        kept, recompute = sum(saved), 0
    lh, lw = latent_hw
    grid = (lh * 2) * (lw * 2)  # the (H/4, W/4) grid of the loss
    by_block = {id(m): (c, t) for kind, m, c, _, t, _ in layers if kind == "SpatialTransformer"}
    queries = [next((by_block[id(m)] for m in unet.output_blocks[b] if id(m) in by_block), (0, 0)) for b in blocks]
    maps = sum(min(pca_dim, c) for c, _ in queries) * grid * frames * 2 * 4  # the fp32 maps and their gradients, bytes
    pca = 2 * max((c * t for c, t in queries), default=0) * frames * 4  # the PCA's fp32 input and its centred copy
    # the loss runs while everything kept is held; with checkpointing, each layer's recomputation in backward
    # comes after it (the largest of the two is the peak)
    return int(kept * element_size + max(recompute * element_size, maps + pca))


def compute_element_size(base_model) -> int:
    """Bytes per activation element: the dtype the UNet computes in (ComfyUI's manual cast dtype, else its weights')."""
    dtype = getattr(base_model, "manual_cast_dtype", None) or base_model.get_dtype()
    return comfy.model_management.dtype_size(dtype)


def context_tokens(conds) -> int:
    """The text conditioning's token count (the cross-attention's keys and values), 77 when none is found."""
    found = [c["cross_attn"].shape[1] for cs in (conds or {}).values() for c in cs
             if isinstance(c, dict) and isinstance(c.get("cross_attn"), torch.Tensor) and c["cross_attn"].ndim == 3]
    return max(found, default=77)


OOM = () if comfy.model_management.OOM_EXCEPTION is Exception else comfy.model_management.OOM_EXCEPTION


class MemoryPlan:
    """A sampling run's low_memory choice and its memory request (see the module docstring)."""

    def __init__(self, mode, patcher, blocks, pca_dim: int, context: int = 77):
        self.mode = memory_mode(mode)
        self.patcher = patcher
        self.unet = patcher.model.diffusion_model
        self.blocks = sorted(blocks)
        self.pca_dim = int(pca_dim)
        self.context = context
        self.element_size = compute_element_size(patcher.model)
        self.decided: dict[tuple, bool] = {}

    @property
    def device(self):
        return self.patcher.load_device

    def need(self, frames: int, latent_hw, checkpoint: bool, transformer_options=None) -> int:
        """The estimated peak of one gradient forward and backward over `frames` frames, bytes over the weights."""
        return optimisation_bytes(self.unet, frames, tuple(latent_hw), max(self.blocks), self.blocks, self.pca_dim,
                                  self.element_size, checkpoint, self.context, transformer_options)

    def free(self) -> int:
        """What the device has free now (its free memory and what torch's cache holds unused)."""
        return comfy.model_management.get_free_memory(self.device)

    def fits(self, need: int, free: int) -> bool:
        return need * SAFETY + comfy.model_management.extra_reserved_memory() <= free

    def checkpoint(self, frames: int, latent_hw, transformer_options=None) -> bool:
        """Whether a gradient forward over `frames` frames checkpoints its layers (decided once per run and size)."""
        key = (frames, tuple(latent_hw))
        if key not in self.decided:
            if self.mode != "auto":
                self.decided[key] = self.mode == "on"
            else:
                need = self.need(frames, latent_hw, False, transformer_options)
                free = self.free()
                self.decided[key] = not self.fits(need, free)
                log.info("AnyI2V: low_memory auto: a gradient forward over %d frames needs about %.2f GB, %.2f GB free: "
                         "checkpointing %s", frames, need / 1e9, free / 1e9, "on" if self.decided[key] else "off")
        return self.decided[key]

    def make_room(self, model, models, noise_shape):
        """After ComfyUI loaded the models for plain sampling: unload other models until what the optimisation
        will need is free (the chosen variant's estimate for the latent as this wrapper sees it)."""
        mm = comfy.model_management
        device = model.load_device
        frames, hw = int(noise_shape[0]), tuple(noise_shape[-2:])
        if self.mode == "auto":
            weights = sum(m.model_size() for m in [model, *models] if hasattr(m, "model_size"))
            budget = mm.get_total_memory(device) - weights
            default = self.need(frames, hw, False)
            want = default if self.fits(default, budget) else self.need(frames, hw, True)
        else:
            want = self.need(frames, hw, self.mode == "on")
        want = int(want * SAFETY) + mm.extra_reserved_memory()
        free = self.free()
        log.info("AnyI2V: the optimisation needs about %.2f GB over the weights for %d frames (low_memory %s); %.2f GB free",
                 want / 1e9, frames, self.mode, free / 1e9)
        if want > free and not mm.is_device_cpu(device):
            ours = [model, *models]
            keep = [lm for lm in mm.current_loaded_models if any(lm.model is m for m in ours)]
            mm.free_memory(want, device, keep_loaded=keep)

    def prepare_sampling_wrapper(self, executor, model, noise_shape, conds, *args, **kwargs):
        """PREPARE_SAMPLING: ComfyUI's own preparation (plain sampling's estimate), then room for the optimisation."""
        out = executor(model, noise_shape, conds, *args, **kwargs)
        self.context = context_tokens(conds)
        self.make_room(model, out[2], noise_shape)
        return out

    def out_of_memory(self, error, frames: int, latent_hw, checkpointed: bool) -> Exception:
        """The same exception type (ComfyUI treats it as out of memory) with what would help."""
        low = self.need(frames, latent_hw, True) / 1e9
        full = self.need(frames, latent_hw, False) / 1e9
        if not checkpointed:
            advice = (f"set low_memory to auto or on: checkpointing needs about {low:.1f} GB over the weights instead of "
                      f"{full:.1f} GB, for about a third more time")
        else:
            advice = (f"low_memory is already checkpointing (about {low:.1f} GB over the weights): give it fewer frames per "
                      f"forward (AnimateDiff-Evolved context options, e.g. 16 frames) or a smaller size")
        message = f"AnyI2V: out of memory in the latent optimisation over {frames} frames; {advice}. ({error})"
        try:
            return type(error)(message)
        except Exception:
            return RuntimeError(message)


def outer_sample_wrapper(executor, *args, **kwargs):
    """OUTER_SAMPLE (installed with the injection): when the run's sampler is AnyI2V's, a MemoryPlan for the run in
    ``transformer_options[PLAN_KEY]`` and its PREPARE_SAMPLING wrapper, on a copy of the guider's model_options."""
    guider = executor.class_obj
    sampler = args[2] if len(args) > 2 else kwargs.get("sampler")
    settings = getattr(sampler, "anyi2v_settings", None)
    if settings is None or settings.iterations <= 0:
        return executor(*args, **kwargs)
    from ..core.blocks import UNetLayout

    unet = guider.model_patcher.model.diffusion_model
    blocks = UNetLayout.from_unet(unet).resolve(settings.query_blocks, "attn")
    plan = MemoryPlan(settings.low_memory, guider.model_patcher, blocks, settings.pca_dim)
    original = guider.model_options
    guider.model_options = comfy.model_patcher.create_model_options_clone(original)
    guider.model_options.setdefault("transformer_options", {})[PLAN_KEY] = plan
    comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, WRAPPER_KEY,
                                                 plan.prepare_sampling_wrapper, guider.model_options, is_model_options=True)
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = original


def install(model):
    """The memory wrapper on an injected MODEL clone (keyed, replaced when installed again)."""
    wrappers = comfy.patcher_extension.WrappersMP
    model.remove_wrappers_with_key(wrappers.OUTER_SAMPLE, WRAPPER_KEY)
    model.add_wrapper_with_key(wrappers.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
