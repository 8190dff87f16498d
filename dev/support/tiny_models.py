"""Tiny, deterministic model files for tests and the demo (generated at run time, never committed).

The UNet has the SD1.5 *layout* (4 levels, 2 ResBlocks per level, attention at the first three
levels, so output_blocks 3, 4, 6, 7 hold ResBlock + SpatialTransformer) at narrow widths. ComfyUI's
model detection only knows SD1.5 at 320 channels, so ``register_tiny_sd15()`` adds one model config
(``TinySD15``, an SD15 subclass with these widths and a 2-layer CLIP text model) to
``comfy.supported_models.models``. Everything after that is ComfyUI's own code: the real
CheckpointLoaderSimple / UNETLoader / CLIPTextEncode / VAELoader load and run the generated files.

The checkpoint carries a TAESD-shaped VAE under ``first_stage_model.``, which ComfyUI detects as such.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import torch

FORMAT_VERSION = 1
CONTEXT_DIM = 64
MODEL_CHANNELS = 32
CHECKPOINT_NAME = "anyi2v_tiny_sd15.safetensors"
OTHER_CHECKPOINT_NAME = "anyi2v_tiny_sd15_other_widths.safetensors"  # same detection, other block widths
MOTION_MODEL_NAME = "anyi2v_tiny_motion.safetensors"
LORA_NAME = "anyi2v_tiny_lora.safetensors"

# ComfyUI's detected-config format (as comfy.model_detection.detect_unet_config returns it).
TINY_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "model_channels": MODEL_CHANNELS,
    "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "channel_mult": [1, 2, 2, 2],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": CONTEXT_DIM,
    "num_heads": 4,
    "num_head_channels": -1,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}

TINY_CLIP_CONFIG = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "hidden_size": CONTEXT_DIM,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": CONTEXT_DIM,
    "torch_dtype": "float32",
    "vocab_size": 49408,
}


def tiny_classes():
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.supported_models_base

    class TinyClipL(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (ComfyUI's signature)
            super().__init__(
                device=device,
                dtype=dtype,
                model_options=model_options,
                textmodel_json_config=dict(TINY_CLIP_CONFIG),
                return_projected_pooled=False,
            )

    class TinyClipModel(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):  # noqa: B006
            super().__init__(device=device, dtype=dtype, model_options=model_options, clip_model=TinyClipL, **kwargs)

    class TinySD15(comfy.supported_models.SD15):
        """TEST MODEL CONFIG: the SD1.5 layout at narrow widths (see module docstring)."""

        unet_config = {
            "context_dim": CONTEXT_DIM,
            "model_channels": MODEL_CHANNELS,
            "use_linear_in_transformer": False,
            "adm_in_channels": None,
            "use_temporal_attention": False,
        }
        unet_extra_config = {"num_heads": 4, "num_head_channels": -1}
        memory_usage_factor = 0.1

        def model_type(self, state_dict, prefix=""):
            """Epsilon prediction, as SD1.5, unless the checkpoint holds a `v_pred` key (the trained miniature),
            the mark ComfyUI's SDXL class reads for v-prediction checkpoints."""
            import comfy.model_base

            return comfy.model_base.ModelType.V_PREDICTION if "v_pred" in state_dict else comfy.model_base.ModelType.EPS

        def clip_target(self, state_dict={}):  # noqa: B006
            return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinyClipModel)

    return TinySD15


def register_tiny_sd15():
    """Make ComfyUI's model detection recognise the tiny SD1.5-layout checkpoints. Idempotent."""
    import comfy.supported_models

    for cls in comfy.supported_models.models:
        if cls.__name__ == "TinySD15":
            return cls
    cls = tiny_classes()
    comfy.supported_models.models.insert(0, cls)
    return cls


def register_sd15_layout(model_channels: int, num_heads: int = 4):
    """The model config for SD1.5-layout checkpoints of another base width (the 512 px miniature's): TinySD15
    (which matches a 32-channel base width) with ``model_channels`` and ``num_heads``, registered as
    ``TinySD15x<width>``; TinySD15 itself for 32 channels and 4 heads. Idempotent."""
    import comfy.supported_models

    base = register_tiny_sd15()
    if model_channels == MODEL_CHANNELS:
        if num_heads != base.unet_extra_config["num_heads"]:
            raise ValueError(f"num_heads: TinySD15 (32 channels) has {base.unet_extra_config['num_heads']} heads, got {num_heads}")
        return base
    name = f"TinySD15x{int(model_channels)}"
    for cls in comfy.supported_models.models:
        if cls.__name__ == name:
            if cls.unet_extra_config["num_heads"] != num_heads:
                raise ValueError(f"num_heads: {name} is registered with {cls.unet_extra_config['num_heads']} heads, got {num_heads}")
            return cls
    cls = type(name, (base,), {
        "__doc__": f"TEST MODEL CONFIG: the SD1.5 layout at base width {model_channels} (see TinySD15).",
        "unet_config": dict(base.unet_config, model_channels=int(model_channels)),
        "unet_extra_config": {"num_heads": int(num_heads), "num_head_channels": -1},
    })
    comfy.supported_models.models.insert(0, cls)
    return cls


def fill_deterministic(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Fill every tensor from a seeded generator, in sorted key order (independent of init code)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(state):
        ref = state[name]
        if not ref.is_floating_point():
            out[name] = ref.clone()
            continue
        noise = torch.randn(ref.shape, generator=gen, dtype=torch.float32)
        if ref.ndim >= 2:
            fan_in = max(1, math.prod(ref.shape[1:]))
            value = noise / math.sqrt(fan_in)
        elif name.endswith("weight") and ("norm" in name or "ln" in name or "in_layers.0" in name or "out_layers.0" in name):
            value = 1.0 + 0.05 * noise
        else:
            value = 0.02 * noise
        out[name] = value.contiguous()
    return out


def tiny_unet_state_dict(seed: int = 1, channel_mult=None) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = dict(TINY_UNET_CONFIG)
    if channel_mult is not None:
        config["channel_mult"] = list(channel_mult)
    with torch.device("meta"):
        unet = UNetModel(**config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)
    shapes = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in unet.state_dict().items()}
    return fill_deterministic(shapes, seed)


def tiny_taesd_state_dict(seed: int = 2) -> dict[str, torch.Tensor]:
    import comfy.taesd.taesd

    with torch.device("meta"):
        vae = comfy.taesd.taesd.TAESD()
    shapes = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in vae.state_dict().items()}
    state = fill_deterministic(shapes, seed)
    state["vae_scale"] = torch.tensor(1.0)
    state["vae_shift"] = torch.tensor(0.0)
    return state


def tiny_clip_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.ops

    with torch.device("meta"):
        clip = comfy.clip_model.CLIPTextModel(
            dict(TINY_CLIP_CONFIG), dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init
        )
    shapes = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in clip.state_dict().items()}
    state = fill_deterministic(shapes, seed)
    # Token embeddings of a real CLIP are small; keep the sequence well conditioned.
    state["text_model.embeddings.token_embedding.weight"] *= 0.5
    return state


def tiny_lora_state_dict(seed: int = 5, rank: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA (kohya key format, as ComfyUI's LoraLoader reads it) on the attn1 projections of the
    injected output blocks."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for block, width in ((3, 64), (4, 64), (6, 64), (7, 64)):
        for proj in ("to_q", "to_k", "to_v"):
            key = f"lora_unet_output_blocks_{block}_1_transformer_blocks_0_attn1_{proj}"
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, width, generator=gen) * 0.2
            sd[f"{key}.lora_up.weight"] = torch.randn(width, rank, generator=gen) * 0.2
            sd[f"{key}.alpha"] = torch.tensor(float(rank))
    return sd


def tiny_checkpoint_state_dict(channel_mult=None) -> dict[str, torch.Tensor]:
    sd = {}
    for k, v in tiny_unet_state_dict(channel_mult=channel_mult).items():
        sd["model.diffusion_model." + k] = v
    for k, v in tiny_taesd_state_dict().items():
        sd["first_stage_model." + k] = v
    for k, v in tiny_clip_state_dict().items():
        sd["cond_stage_model.transformer." + k] = v
    return {k: v.half() if v.is_floating_point() and v.ndim > 0 else v for k, v in sd.items()}


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor]):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"anyi2v_tiny_format": str(FORMAT_VERSION)})
    os.replace(tmp, path)


def ensure_models(models_dir: Path) -> dict[str, Path]:
    """Write the tiny files under a ComfyUI-style models folder once; return their paths."""
    from safetensors import safe_open

    from .standin_ade_weights import motion_module_state_dict

    models_dir = Path(models_dir)
    wanted = {
        "checkpoint": (models_dir / "checkpoints" / CHECKPOINT_NAME, tiny_checkpoint_state_dict),
        "motion": (models_dir / "animatediff_models" / MOTION_MODEL_NAME, motion_module_state_dict),
        "lora": (models_dir / "loras" / LORA_NAME, tiny_lora_state_dict),
        "other": (models_dir / "checkpoints" / OTHER_CHECKPOINT_NAME, lambda: tiny_checkpoint_state_dict((1, 1, 1, 1))),
    }
    out = {}
    for key, (path, make) in wanted.items():
        fresh = False
        if path.is_file():
            try:
                with safe_open(str(path), "pt") as f:
                    fresh = (f.metadata() or {}).get("anyi2v_tiny_format") == str(FORMAT_VERSION)
            except Exception:
                fresh = False
        if not fresh:
            from .host import boot

            boot()  # the generators build ComfyUI's own modules to get the exact layouts
            _write_atomic(path, make())
        out[key] = path
    return out


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
