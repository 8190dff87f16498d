"""TEST DOUBLE for AnimateDiff-Evolved's motion modules (ADE is on no package registry).

A small temporal self-attention across frames, placed the way ADE's ``AnimateDiffModel._inject`` places its
modules: after the (last) SpatialTransformer of every input and output block, or after the first ResBlock
where there is none (so output_blocks[n][0] and [1] keep their indices); run through ComfyUI's
``forward_timestep_embed_patch`` as ADE's ``forward_timestep_embed_patch_ade`` does
(``layer(x, context, transformer_options=...)``) and inserted/removed by a ``PatcherInjection``.

As in ADE (motion_module_ad.py), a module does not read the frame count from the batch: the sampling code
sets ``video_length`` (the context length, or the whole video) and, per window, the window's length. Its
``effect`` (ADE's effect_multival) blends the temporal output with the input: a float, or a per-frame mask
whose rows for the frames of this call are set before each model call (see sampling.py). It is
deterministic and differentiable, so frame coupling is real in tests. Its attention has ADE's 8 heads of
in_channels // 8 (motion_module_ad.py, TemporalTransformer3DModel): one head can only blend the frames
(a convex combination), several can also take a frame's own features away, which a model needs to make
the frames agree. It is computed by the ComfyUI attention function ADE picks (utils_motion.py,
``optimized_attention_mm``): ``attention_pytorch`` where ComfyUI enables PyTorch attention, else
``attention_split`` or ``attention_sub_quad`` (on a CPU: sub-quadratic), so gradients and memory go through
the same kernels as with ADE. Not reproduced: ADE's module is a transformer (GroupNorm, proj_in, two
temporal attentions with a sinusoidal position encoding and a feed-forward, proj_out), the stand-in's one
temporal attention with a LayerNorm and learned positions; ADE's q/k/v projections have no bias.

Weights and ops as ADE's Gen2 loader (load_motion_module_gen2, AnimateDiffModel.__init__): the weights are
stored in ``comfy.model_management.unet_dtype()`` whatever the UNet's own dtype, with ComfyUI's manual-cast ops
when ``unet_manual_cast`` says that dtype cannot be computed in on the device (e.g. fp16 on a CPU), else
``disable_weight_init`` ops.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

MAX_FRAMES = 64
HEADS = 8  # ADE's TemporalTransformer3DModel: num_attention_heads=8, attention_head_dim=in_channels // 8


@functools.cache
def ade_attention():
    """The attention function ADE's CrossAttentionMM uses (utils_motion.optimized_attention_mm; ADE leaves
    xformers out), chosen once as ADE does at import."""
    import comfy.ldm.modules.attention as attention
    import comfy.model_management
    from comfy.cli_args import args

    if comfy.model_management.pytorch_attention_enabled():
        return attention.attention_pytorch
    return attention.attention_split if args.use_split_cross_attention else attention.attention_sub_quad


def ade_dtype_and_ops():
    """The weight dtype and ComfyUI ops ADE picks for a motion module (see the module docstring)."""
    import comfy.model_management
    import comfy.ops

    dtype = comfy.model_management.unet_dtype()
    cast = comfy.model_management.unet_manual_cast(dtype, comfy.model_management.get_torch_device())
    return dtype, (comfy.ops.disable_weight_init if cast is None else comfy.ops.manual_cast)


class StandinMotionModule(nn.Module):
    def __init__(self, channels: int, ops=None):
        if ops is None:
            import comfy.ops

            ops = comfy.ops.disable_weight_init
        super().__init__()
        self.channels = channels
        self.norm = ops.LayerNorm(channels)
        self.to_q = ops.Linear(channels, channels)
        self.to_k = ops.Linear(channels, channels)
        self.to_v = ops.Linear(channels, channels)
        self.to_out = ops.Linear(channels, channels)
        self.pos = nn.Parameter(torch.zeros(MAX_FRAMES, channels))
        self.video_length = 16  # set by the sampling code, as ADE's set_video_length
        self.effect: float | torch.Tensor | None = None  # None, a float or a (frames, H, W) mask
        self.effect_rows: torch.Tensor | None = None  # the mask rows of the current call's frames

    def forward(self, x: torch.Tensor, context=None, transformer_options=None) -> torch.Tensor:
        bf, c, h, w = x.shape
        frames = self.video_length
        if bf % frames:
            raise RuntimeError(f"stand-in motion module: batch {bf} is not a multiple of video_length {frames}")
        if self.effect is None:
            return self.temporal(x, frames)
        if not isinstance(self.effect, torch.Tensor):
            return x * (1.0 - self.effect) + self.temporal(x, frames) * self.effect
        rows = torch.nn.functional.interpolate(self.effect_rows[:, None].to(x), size=(h, w), mode="bilinear")
        effect = rows.repeat(bf // frames, 1, 1, 1)
        return x * (1.0 - effect) + self.temporal(x, frames) * effect

    def temporal(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bf, c, h, w = x.shape
        if frames <= 1:
            return x
        b = bf // frames
        t = x.reshape(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
        n = self.norm(t) + self.pos[torch.arange(frames, device=x.device) % MAX_FRAMES].to(t.dtype)
        out = self.to_out(ade_attention()(self.to_q(n), self.to_k(n), self.to_v(n), HEADS))
        out = out.reshape(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return x + out


def run_motion_module(layer, x, emb, context, transformer_options, *args, **kwargs):
    """The forward_timestep_embed_patch handler."""
    return layer(x, context, transformer_options=transformer_options)


def motion_slots(unet: nn.Module) -> list[tuple[str, int, int, int]]:
    """(kind, block index, insert position, channels) for every block holding a ResBlock, as ADE does."""
    slots = []
    for kind, blocks in (("input", unet.input_blocks), ("output", unet.output_blocks)):
        for i, block in enumerate(blocks):
            names = [type(m).__name__ for m in block]
            if "ResBlock" not in names:
                continue
            pos = len(names) - names[::-1].index("SpatialTransformer") if "SpatialTransformer" in names else names.index("ResBlock") + 1
            slots.append((kind, i, pos, block[names.index("ResBlock")].out_channels))
    return slots


def build_modules(state_dict: dict[str, torch.Tensor], dtype=torch.float32, ops=None) -> dict[str, StandinMotionModule]:
    """The modules of a state dict, their weights stored in `dtype` (after loading, as ADE), run with `ops`."""
    modules = {}
    for key in sorted({k.rsplit(".", 2)[0] if k.endswith((".weight", ".bias")) else k.rsplit(".", 1)[0] for k in state_dict}):
        channels = state_dict[f"{key}.to_q.weight"].shape[0]
        module = StandinMotionModule(channels, ops)
        module.load_state_dict({k[len(key) + 1:]: v.float() for k, v in state_dict.items() if k.startswith(key + ".")})
        modules[key] = module.to(dtype)
    return modules
