"""AnyI2V Invert Condition: DDIM-invert the condition image with the image UNet (no CFG, motion
modules off, one frame) and capture, in the forward at t_alpha, the attn1 queries and the ResBlock
residuals of the chosen output blocks (paper Sec. 3.2; reference: 201 calls at t = 1..201)."""

from __future__ import annotations

import contextlib
import math

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ..core.blocks import UNetLayout
from ..core.features import ConditionFeatures
from ..core.schedule import (
    alphas_cumprod_from_betas,
    alphas_cumprod_from_sigmas,
    ddim_inversion_step,
    first_alpha,
    inversion_timesteps,
)
from .types import CATEGORY, Features

DEFAULT_QUERY_NAMES = "up_blocks.1.attentions.0, up_blocks.1.attentions.1, up_blocks.2.attentions.0, up_blocks.2.attentions.1"
DEFAULT_RES_NAMES = "up_blocks.1.resnets.0, up_blocks.1.resnets.1, up_blocks.2.resnets.0, up_blocks.2.resnets.1"


def require_sd15_layout(model) -> None:
    """AnyI2V's block choices, inversion and injection are defined for SD1.5-layout UNets (AnimateDiff
    v1-v3). UNets that take class/ADM conditioning (SDXL, AnimateDiff-SDXL, HotShot-XL) are refused."""
    unet = getattr(model.model, "diffusion_model", None)
    if unet is None or not hasattr(unet, "output_blocks"):
        raise ValueError("model: AnyI2V needs an SD1.5-style UNet (with output_blocks); this MODEL has none")
    if getattr(unet, "num_classes", None) is not None:
        raise ValueError("model: SDXL-layout UNets (AnimateDiff-SDXL, HotShot-XL) are not supported yet; "
                         "use an SD1.5 checkpoint with an AnimateDiff v1-v3 motion module")


def transformer_module(unet, block: int):
    for child in unet.output_blocks[block]:
        if type(child).__name__ == "SpatialTransformer":
            return child
    raise ValueError(f"output block {block} has no SpatialTransformer")


def query_module(unet, block: int):
    """The attn1 query projection of an output block's first transformer block."""
    return transformer_module(unet, block).transformer_blocks[0].attn1.to_q


def residual_module(unet, block: int):
    """The residual branch of an output block's ResBlock (its output is taken before the skip is added)."""
    for child in unet.output_blocks[block]:
        if type(child).__name__ == "ResBlock":
            return child.out_layers
    raise ValueError(f"output block {block} has no ResBlock")


@contextlib.contextmanager
def capture(unet, query_blocks, res_blocks, store: dict):
    """Forward hooks that record to_q outputs and residual branches; always removed."""
    handles = []
    try:
        for b in query_blocks:
            handles.append(transformer_module(unet, b).register_forward_pre_hook(
                lambda m, args, b=b: store.setdefault("hw", {}).__setitem__(b, tuple(args[0].shape[-2:]))))
            handles.append(query_module(unet, b).register_forward_hook(
                lambda m, i, out, b=b: store.setdefault("q", {}).__setitem__(b, out.detach())))
        for b in res_blocks:
            handles.append(residual_module(unet, b).register_forward_hook(
                lambda m, i, out, b=b: store.setdefault("r", {}).__setitem__(b, out.detach())))
        yield store
    finally:
        for h in handles:
            h.remove()


def _skip_inserted(layer, x, *args, **kwargs):
    """Run ComfyUI's own layers (convolutions, downsampling); pass through modules other packs inserted."""
    return layer(x) if type(layer).__module__.startswith("comfy.") else x


def image_only_options(model) -> dict:
    """transformer_options for a pure image pass: any module inserted into the UNet's blocks (AnimateDiff
    motion modules run through forward_timestep_embed_patch) is passed through unchanged, and other
    packs' sampling wrappers are left out (this is not a sampling run)."""
    options = dict(model.model_options.get("transformer_options", {}))
    options.pop("wrappers", None)
    patches = dict(options.get("patches", {}))
    patches["forward_timestep_embed_patch"] = [(torch.nn.Module, _skip_inserted)]
    options["patches"] = patches
    options["cond_or_uncond"] = [0]
    return options


SCHEDULES = {"sqrt_linear (AnimateDiff)": "linear", "scaled_linear (SD1.5)": "scaled_linear", "model": None}


def schedule_alphas(name: str, sampling) -> torch.Tensor:
    """alpha_bar for timesteps 0..999: AnimateDiff's (the reference's), SD1.5's, or the MODEL's own."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got '{name}'")
    if SCHEDULES[name] is None:
        return alphas_cumprod_from_sigmas(sampling.sigmas.detach().cpu())
    return alphas_cumprod_from_betas(SCHEDULES[name])


def invert(model, latent: torch.Tensor, context: torch.Tensor, t_alpha: int, stride: int, query_blocks, res_blocks,
           schedule: str = "sqrt_linear (AnimateDiff)"):
    """DDIM inversion x_0 -> x_{t_alpha - stride} (in alpha space); returns the features captured in the
    call at t_alpha. The UNet always gets timestep t and sees x_t itself: apply_model's input scaling is
    undone with the MODEL's own sigma(t), and the DDIM update uses the chosen schedule."""
    steps = inversion_timesteps(t_alpha, stride)
    comfy.model_management.load_models_gpu([model])
    base = model.model
    device = model.load_device
    sampling = model.get_model_object("model_sampling")
    options = image_only_options(model)
    alphas = schedule_alphas(schedule, sampling)  # float64, on the CPU: MPS and DirectML have no float64
    x = latent.to(device=device, dtype=torch.float32)
    context = context.to(device)
    a_prev = first_alpha(alphas, stride)
    bar = comfy.utils.ProgressBar(len(steps))
    store: dict = {}
    for i, t in enumerate(steps):
        comfy.model_management.throw_exception_if_processing_interrupted()
        sigma = sampling.sigma(torch.tensor([float(t)], device=device)).to(device)
        x_in = x * math.sqrt(1.0 + float(sigma) ** 2)  # apply_model divides by this again
        a_t = float(alphas[t])
        last = i == len(steps) - 1
        hooks = capture(base.diffusion_model, query_blocks, res_blocks, store) if last else contextlib.nullcontext()
        with hooks:
            denoised = base.apply_model(x_in, sigma, c_crossattn=context, transformer_options=dict(options, sigmas=sigma))
        if not last:
            eps = (x_in - denoised.float()) / sigma.float()
            x = ddim_inversion_step(x, eps, a_prev, a_t)
            a_prev = a_t
        bar.update_absolute(i + 1, len(steps))
    return store, len(steps)


class InvertCondition(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VInvertCondition",
            display_name="AnyI2V Invert Condition",
            category=CATEGORY,
            description="DDIM-invert a condition image (depth, edges, pose, sketch, render...) with the image UNet and "
                        "capture its structure features at t_alpha, for AnyI2V Inject Features.",
            inputs=[
                io.Model.Input("model", tooltip="The image model (the plain checkpoint). Motion modules, if any, are left out of this pass."),
                io.Vae.Input("vae", tooltip="The VAE that encodes the condition image."),
                io.Image.Input("image", tooltip="Exactly one condition image, of any modality. Its aspect is kept."),
                io.Conditioning.Input("positive", tooltip="The text prompt (the same as for generation); inversion runs without CFG."),
                io.Int.Input("t_alpha", default=201, min=1, max=999, tooltip="Timestep (of 1000) at which the features are captured. The paper uses 201."),
                io.Int.Input("stride", default=1, min=1, max=200,
                             tooltip="Inversion stride: 1 gives the reference's t_alpha UNet calls; larger is faster and coarser."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default="sqrt_linear (AnimateDiff)",
                               tooltip="Noise schedule of the inversion: AnimateDiff's (as the reference), SD1.5's, or the MODEL's own."),
                io.String.Input("query_blocks", default=DEFAULT_QUERY_NAMES,
                                tooltip="Attention blocks whose queries are captured (paper names, 'Query 1.1' style, or output_blocks indices)."),
                io.String.Input("residual_blocks", default=DEFAULT_RES_NAMES,
                                tooltip="ResBlocks whose residual hidden states are captured."),
            ],
            outputs=[Features.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, model, vae, image, positive, t_alpha, stride, schedule, query_blocks, residual_blocks) -> io.NodeOutput:
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"image: expected exactly one condition image, got a batch of {image.shape[0]}; "
                             "pick one (e.g. with ImageFromBatch)")
        if not positive:
            raise ValueError("positive: empty conditioning")
        require_sd15_layout(model)
        layout = UNetLayout.from_unet(model.model.diffusion_model)
        q_blocks = layout.resolve(query_blocks, "attn")
        r_blocks = layout.resolve(residual_blocks, "res")
        inversion_timesteps(t_alpha, stride)  # validates before any work
        h, w = (image.shape[1] // 8) * 8, (image.shape[2] // 8) * 8
        if h == 0 or w == 0:
            raise ValueError(f"image: {image.shape[2]}x{image.shape[1]} is too small (at least 8x8 pixels)")
        latent = model.model.process_latent_in(vae.encode(image[:, :h, :w, :3]))
        store, _ = invert(model, latent, positive[0][0], t_alpha, stride, q_blocks, r_blocks, schedule)
        out = comfy.model_management.intermediate_device()
        lh, lw = latent.shape[-2:]
        features = ConditionFeatures(
            queries={b: q.to(out) for b, q in store["q"].items()},
            residuals={b: r.to(out) for b, r in store["r"].items()},
            query_hw={b: (int(hw[0]), int(hw[1])) for b, hw in store["hw"].items()},
            latent_hw=(int(lh), int(lw)),
            image_hw=(int(h), int(w)),
            model_signature=layout.signature(),
            t_alpha=int(t_alpha),
            stride=int(stride),
        )
        return io.NodeOutput(features)


NODES = [InvertCondition]
