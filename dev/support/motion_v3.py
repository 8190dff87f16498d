"""The AnimateDiff v3 motion module (v3_sd15_mm) at its real size, for `make scale` (dev/scale.py).

Our own code, written after reading ComfyUI-AnimateDiff-Evolved (ADE): animatediff/motion_module_ad.py
(AnimateDiffModel, MotionModule, VanillaTemporalModule, TemporalTransformer3DModel,
TemporalTransformerBlock, VersatileAttention, PositionalEncoding), animatediff/utils_motion.py
(CrossAttentionMM) and animatediff/model_injection.py (forward_timestep_embed_patch_ade). What it
reproduces of a v3 SD1.5 motion module as ADE runs it:

- 20 temporal modules: the SD1.5 down levels (320, 640, 1280, 1280 channels) with two each, the up
  levels (1280, 1280, 640, 320) with three each; v3 has no mid-block module;
- one module: GroupNorm(32, eps 1e-6) -> Linear proj_in -> one transformer block -> Linear proj_out,
  added to its input. The block holds two temporal self-attentions, each LayerNorm -> a sinusoidal
  positional encoding (max length 32, v3's) added to the frame sequence -> q, k, v (no bias) ->
  attention over the frames of each spatial position, 8 heads -> Linear out (with bias), plus residual;
  then LayerNorm -> GEGLU feed-forward (ComfyUI's FeedForward, inner width 4x) plus residual;
- placement (``insert_into``): in input then output blocks, in order, after the last SpatialTransformer
  of a block or, without one, after its first ResBlock; run through ComfyUI's
  ``forward_timestep_embed_patch`` as ``layer(x, context, transformer_options)``; the frame count is
  that of the batch's chunks (ADE sets it per call: the video length or the context window's);
- attention through ComfyUI's attention function with the call's transformer_options (so an
  ``optimized_attention_override`` applies, as to ComfyUI's own layers).

Not reproduced (unused here): motion LoRAs, scale/effect multivals, camera control, ADE's own
view-option windows inside the module, fp8 positional-encoding handling. The weights are never
loaded: the module is built on the meta device for shapes, FLOPs and bytes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LEVEL_CHANNELS = (320, 640, 1280, 1280)
MAX_FRAMES = 32  # v3's positional encoding length
HEADS = 8


def sinusoidal_encoding(length: int, channels: int, device=None, dtype=None) -> torch.Tensor:
    """(1, length, channels): sin on even channels, cos on odd ones (the transformer encoding)."""
    if device is not None and torch.device(device).type == "meta":
        return torch.empty(1, length, channels, device=device, dtype=dtype)
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, length, channels)
    pe[0, :, 0::2] = torch.sin(pos * freq)
    pe[0, :, 1::2] = torch.cos(pos * freq)
    return pe.to(device=device, dtype=dtype)


class TemporalAttention(nn.Module):
    def __init__(self, channels: int, ops, dtype=None, device=None):
        super().__init__()
        self.heads = HEADS
        self.to_q = ops.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_k = ops.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_v = ops.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_out = nn.Sequential(ops.Linear(channels, channels, dtype=dtype, device=device), nn.Dropout(0.0))
        self.register_buffer("pe", sinusoidal_encoding(MAX_FRAMES, channels, device, dtype))

    def forward(self, x: torch.Tensor, frames: int, transformer_options: dict) -> torch.Tensor:
        """x: (batch * frames, tokens, C) -> the same, attending across frames per token."""
        from comfy.ldm.modules.attention import optimized_attention

        bf, tokens, c = x.shape
        seq = x.reshape(bf // frames, frames, tokens, c).permute(0, 2, 1, 3).reshape(-1, frames, c)
        seq = seq + self.pe[:, :frames].to(seq.dtype)
        out = optimized_attention(self.to_q(seq), self.to_k(seq), self.to_v(seq), self.heads,
                                  transformer_options=transformer_options)
        out = self.to_out(out)
        return out.reshape(bf // frames, tokens, frames, c).permute(0, 2, 1, 3).reshape(bf, tokens, c)


class TemporalModule(nn.Module):
    """One of the 20 modules (ADE's VanillaTemporalModule with its TemporalTransformer3DModel)."""

    def __init__(self, channels: int, ops, dtype=None, device=None):
        from comfy.ldm.modules.attention import FeedForward

        super().__init__()
        self.channels = channels
        self.norm = ops.GroupNorm(32, channels, eps=1e-6, affine=True, dtype=dtype, device=device)
        self.proj_in = ops.Linear(channels, channels, dtype=dtype, device=device)
        self.attentions = nn.ModuleList([TemporalAttention(channels, ops, dtype, device) for _ in range(2)])
        self.norms = nn.ModuleList([ops.LayerNorm(channels, dtype=dtype, device=device) for _ in range(2)])
        self.ff_norm = ops.LayerNorm(channels, dtype=dtype, device=device)
        self.ff = FeedForward(channels, glu=True, dtype=dtype, device=device, operations=ops)
        self.proj_out = ops.Linear(channels, channels, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, frames: int, transformer_options: dict) -> torch.Tensor:
        if frames <= 1 or x.shape[0] % frames:
            return x
        bf, c, h, w = x.shape
        hidden = self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        hidden = self.proj_in(hidden)
        for norm, attention in zip(self.norms, self.attentions, strict=True):
            hidden = attention(norm(hidden), frames, transformer_options) + hidden
        hidden = self.ff(self.ff_norm(hidden)) + hidden
        hidden = self.proj_out(hidden)
        return hidden.reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous() + x


class MotionModuleV3(nn.Module):
    """The 8 down and 12 up temporal modules of v3_sd15_mm, in ADE's injection order."""

    def __init__(self, ops, dtype=None, device=None):
        super().__init__()
        self.down = nn.ModuleList([TemporalModule(c, ops, dtype, device) for c in LEVEL_CHANNELS for _ in range(2)])
        self.up = nn.ModuleList([TemporalModule(c, ops, dtype, device) for c in reversed(LEVEL_CHANNELS) for _ in range(3)])

    def insert_into(self, unet) -> None:
        """Place the modules into the UNet's blocks the way ADE injects them."""
        _insert(unet.input_blocks, list(self.down))
        _insert(unet.output_blocks, list(self.up))


def _insert(blocks, modules):
    pending = list(modules)
    for block in blocks:
        if not pending:
            break
        names = [type(m).__name__ for m in block]
        if "SpatialTransformer" in names:
            at = len(names) - names[::-1].index("SpatialTransformer")
        elif "ResBlock" in names:
            at = names.index("ResBlock") + 1
        else:
            continue
        module = pending.pop(0)
        channels = block[names.index("ResBlock")].out_channels if "ResBlock" in names else None
        if channels is not None and channels != module.channels:
            raise ValueError(f"a motion module of {module.channels} channels does not fit a block of {channels}")
        block.insert(at, module)
    if pending:
        raise ValueError(f"{len(pending)} motion modules found no block")


def frames_of(x: torch.Tensor, transformer_options: dict) -> int:
    """The frames of each chunk of a call: the context window's, or the batch over its cond/uncond chunks."""
    sub = (transformer_options.get("ad_params") or {}).get("sub_idxs")
    if sub is not None:
        return len(sub)
    return x.shape[0] // max(1, len(transformer_options.get("cond_or_uncond") or [0]))


def run_motion(layer, x, emb, context, transformer_options, *args, **kwargs):
    """The forward_timestep_embed_patch handler (ADE calls its module with x, context, transformer_options)."""
    return layer(x, frames_of(x, transformer_options), transformer_options)


def timestep_embed_patch():
    return (TemporalModule, run_motion)
