"""The miniature's architecture and files.

- UNet: the SD1.5 layout (4 levels, 2 ResBlocks per level, SpatialTransformers at levels 1 and 2 so
  output blocks 3, 4, 6, 7 hold ResBlock + SpatialTransformer as the pack needs) at a profile's widths
  (dev/miniature/profiles.py; `cpu`: the tiny test widths, 32/64 channels; `gpu`: 64/128/128/256), with a
  64-dim context. Level 0 (the 32 x 32 or 64 x 64 latent grid) has no attention: on a CPU its self-attention
  cost more than the rest of the UNet. ComfyUI detects the layout from the weights; the tiny test model
  config (TinySD15, registered by dev/tiny_models_pack) matches the 32-channel base width, a subclass of it
  each other profile's (``register``).
- Motion: the AnimateDiff-Evolved test stand-in's temporal module (dev/standin_ade/motion.py), one per
  block that holds a ResBlock, in that module's weight format.
- VAE: TAESD format (comfy.taesd), trained to the analytic latent of dev/miniature/latent.py.
- Text encoder: the tiny test CLIP with its deterministic generated weights (never trained), its token
  embeddings scaled by TOKEN_GAIN.

`make miniature` (and `make study`) writes the trained files to ``dev/miniature/models/`` in ComfyUI's folder
layout (``checkpoints/``, ``animatediff_models/``), so a ComfyUI models folder can point at them
(ANYI2V_MINIATURE_DIR points the eval at another set). The checkpoint's metadata names its profile, from which
the eval takes the resolution. They are not committed: no miniature passes its quality gate yet (docs/eval.md).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from . import profiles as P
from .latent import NET_GAIN, SCALE

MODELS_DIR = Path(os.environ.get("ANYI2V_MINIATURE_DIR", Path(__file__).resolve().parent / "models"))
CHECKPOINT_NAME = "anyi2v_miniature_sd15.safetensors"
MOTION_NAME = "anyi2v_miniature_motion.safetensors"
CHECKPOINT = MODELS_DIR / "checkpoints" / CHECKPOINT_NAME
MOTION = MODELS_DIR / "animatediff_models" / MOTION_NAME
FORMAT = "anyi2v_miniature_v2"  # v2: v-prediction, token embeddings x TOKEN_GAIN

UNET_CONFIG = P.CPU.unet_config()  # `make miniature`'s (the cpu profile)
# The tiny test CLIP's generated token embeddings (std 0.06) are half its position embeddings' (0.13), so its
# outputs for "a red crate" and "a blue crate" have cosine 0.984 at the colour token and the UNet can hardly
# tell prompts apart; 8x larger token embeddings make that 0.75 (crate vs ball 0.70). Still never trained.
TOKEN_EMBEDDING = "text_model.embeddings.token_embedding.weight"
TOKEN_GAIN = 8.0


def register(profile: P.Profile = P.CPU):
    """Make ComfyUI's model detection recognise the profile's checkpoints (idempotent); returns the config class."""
    from dev.support.tiny_models import register_sd15_layout

    return register_sd15_layout(profile.model_channels, profile.num_heads)


def new_unet(profile: P.Profile = P.CPU):
    """ComfyUI's own UNetModel at the profile's widths, initialised (zero output convolutions), on the CPU."""
    import comfy.ops
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, UNetModel

    unet = UNetModel(**profile.unet_config(), dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
    for m in unet.modules():
        for base in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, base):
                base.reset_parameters(m)
                break
    zero = [unet.out[-1]]
    for m in unet.modules():
        if isinstance(m, ResBlock):
            zero.append(m.out_layers[-1])
        elif isinstance(m, SpatialTransformer):
            zero.append(m.proj_out)
    for m in zero:
        torch.nn.init.zeros_(m.weight)
        if m.bias is not None:
            torch.nn.init.zeros_(m.bias)
    return unet


def new_motion_modules(unet) -> dict[str, torch.nn.Module]:
    """One stand-in temporal module per ResBlock-holding block ("input.1", "output.4", ...), output
    projection zeroed (each starts as the identity)."""
    from dev.standin_ade.motion import StandinMotionModule, motion_slots

    modules = {}
    for kind, block, _, channels in motion_slots(unet):
        m = StandinMotionModule(channels, ops=torch.nn)  # initialised weights (ComfyUI's ops skip initialisation)
        torch.nn.init.zeros_(m.to_out.weight)
        torch.nn.init.zeros_(m.to_out.bias)
        torch.nn.init.normal_(m.pos, std=0.02)
        modules[f"{kind}.{block}"] = m
    return modules


def insert_motion(unet, modules: dict[str, torch.nn.Module]):
    """Place the temporal modules the way the ADE stand-in does (after a block's ResBlock/SpatialTransformer)."""
    from dev.standin_ade.motion import motion_slots

    for kind, block, pos, _ in motion_slots(unet):
        blocks = unet.input_blocks if kind == "input" else unet.output_blocks
        blocks[block].insert(pos, modules[f"{kind}.{block}"])


def motion_options(frames: int) -> dict:
    """transformer_options that run the inserted temporal modules over `frames` frames per video."""
    from dev.standin_ade.motion import StandinMotionModule

    def run(layer, x, emb, context, transformer_options, *args, **kwargs):
        return layer.temporal(x, frames)  # (in sampling, ADE's code sets the module's video_length instead)

    return {"patches": {"forward_timestep_embed_patch": [(StandinMotionModule, run)]}}


def new_taesd():
    import comfy.taesd.taesd

    vae = comfy.taesd.taesd.TAESD()
    for m in vae.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.Conv2d.reset_parameters(m)
    with torch.no_grad():
        vae.vae_scale.fill_(SCALE * NET_GAIN)
        vae.vae_shift.fill_(0.0)
    return vae


def checkpoint_state(unet, taesd) -> dict[str, torch.Tensor]:
    """UNet + TAESD + the tiny test CLIP, in an SD1.5 checkpoint's key layout, float16, marked v-prediction."""
    from dev.support.tiny_models import tiny_clip_state_dict

    sd = {}
    for k, v in unet.state_dict().items():
        sd["model.diffusion_model." + k] = v
    for k, v in taesd.state_dict().items():
        sd["first_stage_model." + k] = v
    for k, v in tiny_clip_state_dict().items():
        sd["cond_stage_model.transformer." + k] = v * TOKEN_GAIN if k == TOKEN_EMBEDDING else v
    sd["v_pred"] = torch.zeros(0)  # a v-prediction checkpoint, marked as ComfyUI's loader expects (see TinySD15)
    return {k: (v.detach().half() if v.is_floating_point() and v.ndim > 0 else v.detach()).contiguous() for k, v in sd.items()}


def motion_state(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{key}.{k}": v.detach().half().contiguous() for key, m in sorted(modules.items()) for k, v in m.state_dict().items()}


def save(path: Path, tensors: dict[str, torch.Tensor], profile: P.Profile = P.CPU):
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "profile": profile.name})
    tmp.replace(path)


def profile_of(path: Path | None = None) -> P.Profile:
    """The profile a checkpoint was trained at (its metadata; files from before profiles are `cpu`)."""
    from safetensors import safe_open

    with safe_open(str(path or CHECKPOINT), "pt") as f:
        name = (f.metadata() or {}).get("profile", "cpu")
    return P.get(name)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def available() -> bool:
    return CHECKPOINT.is_file() and MOTION.is_file()
