"""TEST DOUBLE of ComfyUI-AnimateDiff-Evolved (ADE), which is on no package registry.

It registers ADE's node ids and inputs for the nodes our workflows use
(ADE_LoadAnimateDiffModel -> ADE_ApplyAnimateDiffModelSimple -> ADE_UseEvolvedSampling, and
ADE_StandardStaticContextOptions) and injects a small temporal module the ADE way (PatcherInjection +
forward_timestep_embed_patch, module placed after index [1] of each block). Context windows work the ADE
way too: a CALC_COND_BATCH wrapper runs the model window by window with
``transformer_options["ad_params"] = {"full_length", "context_length", "sub_idxs"}`` and averages the
overlaps (flat weights; text conditioning only). The motion module's weights are stored in ComfyUI's
``unet_dtype()``, with manual-cast ops where needed, as ADE's Gen2 loader does (see motion.py). Never shipped
with the pack: tests link it into the host's custom_nodes.
"""

from __future__ import annotations

import os

import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import comfy.utils
import folder_paths
import torch

from .motion import StandinMotionModule, ade_dtype_and_ops, build_modules, motion_slots

STANDIN = True
INJECTION_KEY = "ADE"
_FOLDER = "animatediff_models"

if _FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.add_model_folder_path(_FOLDER, os.path.join(folder_paths.models_dir, _FOLDER))
    folder_paths.folder_names_and_paths[_FOLDER] = (folder_paths.folder_names_and_paths[_FOLDER][0], {".safetensors", ".ckpt"})

BETA_SCHEDULES = ["autoselect", "use existing", "sqrt_linear (AnimateDiff)", "linear (HotshotXL/default)"]


def _frames(x, transformer_options):
    ad_params = transformer_options.get("ad_params") or {}
    sub_idxs = ad_params.get("sub_idxs")
    if sub_idxs is not None:
        return len(sub_idxs)
    return x.shape[0] // max(1, len(transformer_options.get("cond_or_uncond", [0])))


def _run_motion(layer, x, emb, context, transformer_options, *args):
    return layer(x, _frames(x, transformer_options))


class MotionModel:
    def __init__(self, name, state_dict):
        self.name = name
        self.state_dict = state_dict
        self.dtype, self.ops = ade_dtype_and_ops()  # decided when loaded, as ADE does

    def modules_for(self, unet):
        modules = build_modules(self.state_dict, self.dtype, self.ops)
        slots = motion_slots(unet)
        placed = []
        for kind, block, pos, channels in slots:
            module = modules.get(f"{kind}.{block}")
            if module is None or module.channels != channels:
                have = None if module is None else module.channels
                raise ValueError(f"motion model '{self.name}' does not fit this UNet at {kind} block {block}: size mismatch [{have}] vs [{channels}]")
            placed.append((kind, block, pos, module))
        return placed


def _inject(patcher):
    unet = patcher.model.diffusion_model
    placed = patcher.get_attachment("standin_ade_modules")
    for kind, block, pos, module in placed:
        blocks = unet.input_blocks if kind == "input" else unet.output_blocks
        module.to(device=next(unet.parameters()).device)  # ADE moves its motion model to the device, its dtype kept
        blocks[block].insert(pos, module)


def _eject(patcher):
    unet = patcher.model.diffusion_model
    for blocks in (unet.input_blocks, unet.output_blocks):
        for block in blocks:
            for i in reversed(range(len(block))):
                if isinstance(block[i], StandinMotionModule):
                    del block[i]


class LoadAnimateDiffModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (folder_paths.get_filename_list(_FOLDER),)}, "optional": {"ad_settings": ("AD_SETTINGS",)}}

    RETURN_TYPES = ("MOTION_MODEL_ADE",)
    RETURN_NAMES = ("MOTION_MODEL",)
    FUNCTION = "load"
    CATEGORY = "Animate Diff (test stand-in)"

    def load(self, model_name, ad_settings=None):
        path = folder_paths.get_full_path_or_raise(_FOLDER, model_name)
        return (MotionModel(model_name, comfy.utils.load_torch_file(path, safe_load=True)),)


class ApplyAnimateDiffModelSimple:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"motion_model": ("MOTION_MODEL_ADE",)},
            "optional": {
                "motion_lora": ("MOTION_LORA",),
                "scale_multival": ("MULTIVAL",),
                "effect_multival": ("MULTIVAL",),
                "ad_keyframes": ("AD_KEYFRAMES",),
                "per_block": ("PER_BLOCK",),
            },
        }

    RETURN_TYPES = ("M_MODELS",)
    FUNCTION = "apply"
    CATEGORY = "Animate Diff (test stand-in)"

    def apply(self, motion_model, **_):
        return ([motion_model],)


class ContextOptions:
    def __init__(self, length: int, overlap: int):
        self.context_length, self.context_overlap = length, overlap

    def windows(self, frames: int) -> list[list[int]]:
        """ADE's "standard static" schedule: windows of context_length frames, the last one shifted back to fit."""
        if frames <= self.context_length:
            return [list(range(frames))]
        out, step = [], max(1, self.context_length - self.context_overlap)
        for start in range(0, frames, step):
            start = min(start, frames - self.context_length)
            out.append(list(range(start, start + self.context_length)))
            if start + self.context_length >= frames:
                break
        return out


class StandardStaticContextOptions:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"context_length": ("INT", {"default": 16, "min": 1, "max": 128}),
                             "context_overlap": ("INT", {"default": 4, "min": 0, "max": 128})},
                "optional": {"fuse_method": (["pyramid", "flat", "overlap-linear", "relative"],),  # ADE's inputs; the
                             "use_on_equal_length": ("BOOLEAN", {"default": False}),       # stand-in averages flat
                             "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}),
                             "guarantee_steps": ("INT", {"default": 1, "min": 0, "max": 2**31 - 1}),
                             "prev_context": ("CONTEXT_OPTIONS",), "view_opts": ("VIEW_OPTS",)}}

    RETURN_TYPES = ("CONTEXT_OPTIONS",)
    FUNCTION = "create"
    CATEGORY = "Animate Diff (test stand-in)"

    def create(self, context_length, context_overlap, **_):
        return (ContextOptions(context_length, context_overlap),)


def sliding_calc_cond_batch(options: ContextOptions):
    def wrapper(executor, model, conds, x_in, timestep, model_options):
        windows = options.windows(x_in.shape[0])
        if len(windows) == 1:
            return executor(model, conds, x_in, timestep, model_options)
        out = [torch.zeros_like(x_in) if c is not None else None for c in conds]
        counts = torch.zeros(x_in.shape[0], 1, 1, 1, device=x_in.device, dtype=x_in.dtype)
        for window in windows:
            comfy.model_management.throw_exception_if_processing_interrupted()
            opts = dict(model_options)
            opts["transformer_options"] = dict(model_options.get("transformer_options", {}), ad_params={
                "full_length": x_in.shape[0], "context_length": len(window), "sub_idxs": window})
            sub = executor(model, conds, x_in[window], timestep[window], opts)
            for i, part in enumerate(sub):
                if out[i] is not None:
                    out[i] = out[i].index_add(0, torch.tensor(window, device=x_in.device), part)
            counts[window] += 1
        return [o / counts if o is not None else None for o in out]

    return wrapper


class UseEvolvedSampling:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"model": ("MODEL",), "beta_schedule": (BETA_SCHEDULES, {"default": "autoselect"})},
            "optional": {"m_models": ("M_MODELS",), "context_options": ("CONTEXT_OPTIONS",), "sample_settings": ("SAMPLE_SETTINGS",)},
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "use"
    CATEGORY = "Animate Diff (test stand-in)"

    def use(self, model, beta_schedule, m_models=None, context_options=None, sample_settings=None):
        model = model.clone()
        if beta_schedule in ("autoselect", "sqrt_linear (AnimateDiff)", "linear (HotshotXL/default)"):
            raw = "sqrt_linear" if beta_schedule != "linear (HotshotXL/default)" else "linear"
            sampling = model.get_model_object("model_sampling")
            new = type(sampling)(model.model.model_config)
            new._register_schedule(beta_schedule=raw, linear_start=0.00085, linear_end=0.012)
            model.add_object_patch("model_sampling", new)
        if m_models:
            placed = []
            for motion_model in m_models:
                placed += motion_model.modules_for(model.model.diffusion_model)
            model.set_attachments("standin_ade_modules", placed)
            model.set_model_forward_timestep_embed_patch((StandinMotionModule, _run_motion))
            model.set_injections(INJECTION_KEY, [comfy.model_patcher.PatcherInjection(inject=_inject, eject=_eject)])
        if context_options is not None:
            model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, INJECTION_KEY,
                                       sliding_calc_cond_batch(context_options))
        return (model,)


NODE_CLASS_MAPPINGS = {
    "ADE_LoadAnimateDiffModel": LoadAnimateDiffModel,
    "ADE_ApplyAnimateDiffModelSimple": ApplyAnimateDiffModelSimple,
    "ADE_UseEvolvedSampling": UseEvolvedSampling,
    "ADE_StandardStaticContextOptions": StandardStaticContextOptions,
}
NODE_DISPLAY_NAME_MAPPINGS = {k: f"{k} (TEST STAND-IN)" for k in NODE_CLASS_MAPPINGS}
