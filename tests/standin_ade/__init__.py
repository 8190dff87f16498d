"""TEST DOUBLE of ComfyUI-AnimateDiff-Evolved (ADE), which is on no package registry.

It registers ADE's node ids and inputs for the three nodes our workflows use
(ADE_LoadAnimateDiffModel -> ADE_ApplyAnimateDiffModelSimple -> ADE_UseEvolvedSampling) and injects a
small temporal module the ADE way (PatcherInjection + forward_timestep_embed_patch, module placed after
index [1] of each block). Never shipped with the pack: tests link it into the host's custom_nodes.
"""

from __future__ import annotations

import os

import comfy.model_patcher
import comfy.model_sampling
import comfy.utils
import folder_paths

from .motion import StandinMotionModule, build_modules, motion_slots

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

    def modules_for(self, unet):
        modules = build_modules(self.state_dict)
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
        module.to(device=next(unet.parameters()).device, dtype=next(unet.parameters()).dtype)
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
        return (model,)


NODE_CLASS_MAPPINGS = {
    "ADE_LoadAnimateDiffModel": LoadAnimateDiffModel,
    "ADE_ApplyAnimateDiffModelSimple": ApplyAnimateDiffModelSimple,
    "ADE_UseEvolvedSampling": UseEvolvedSampling,
}
NODE_DISPLAY_NAME_MAPPINGS = {k: f"{k} (TEST STAND-IN)" for k in NODE_CLASS_MAPPINGS}
