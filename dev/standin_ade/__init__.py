"""TEST DOUBLE of ComfyUI-AnimateDiff-Evolved (ADE), which is on no package registry.

Written from a reading of ADE 1.5.7 (commit d8d163cd; GPL, nothing copied) to reproduce the contract other
packs meet when they run inside it:
- node ids and inputs (names, order, defaults) of ADE_LoadAnimateDiffModel, ADE_ApplyAnimateDiffModelSimple,
  ADE_UseEvolvedSampling, ADE_StandardStaticContextOptions, ADE_StandardUniformContextOptions and
  ADE_MultivalDynamic (nodes_gen2.py, nodes_context.py, nodes_multival.py), so workflows saved against the
  stand-in load in the real ADE;
- Use Evolved Sampling (nodes_gen2.py ``UseEvolvedSamplingNode``) clones the MODEL and puts an object patch
  ``model_sampling`` on it: the beta schedule ("autoselect" = sqrt_linear for an SD1.5 motion model, "use
  existing" without one), so the MODEL's sigmas change at that node; it keys an OUTER_SAMPLE and a
  CALC_COND_BATCH wrapper "ADE" on it, and, with motion models, a PatcherInjection that inserts them into the
  UNet (model_injection.py ``inject_motion_models``) and a ``forward_timestep_embed_patch`` that runs them;
- the sampling contract of sampling.py (see ``sampling``): the sampling_function swap for the duration of
  sampling, ``ad_params`` created per call on a copy of model_options, the context-window wrapper writing
  into it, one per-call feature reading it in an APPLY_MODEL wrapper;
- context windows "standard_static" and "standard_uniform" (see ``context``);
- weights as ADE's Gen2 loader stores them: in ``comfy.model_management.unet_dtype()`` whatever the UNet's
  own dtype, with manual-cast ops where needed, moved to the UNet's device (not its dtype) when inserted (see
  motion.py).
Never shipped with the pack: tests link it into the host's custom_nodes.
"""

from __future__ import annotations

import os

import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import comfy.utils
import folder_paths

from .context import FUSE_METHODS, FUSE_METHODS_STATIC, STATIC, UNIFORM, ContextOptions
from .motion import StandinMotionModule, ade_dtype_and_ops, build_modules, motion_slots, run_motion_module
from .sampling import outer_sample_wrapper, sliding_calc_cond_batch

STANDIN = True
KEY = "ADE"
_FOLDER = "animatediff_models"
MENU = "Animate Diff (test stand-in)"

if _FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.add_model_folder_path(_FOLDER, os.path.join(folder_paths.models_dir, _FOLDER))
    folder_paths.folder_names_and_paths[_FOLDER] = (folder_paths.folder_names_and_paths[_FOLDER][0], {".safetensors", ".ckpt"})

# ADE's BetaSchedules.ALIAS_LIST (the combo's values); the stand-in builds the first four and refuses the rest
BETA_SCHEDULES = ["autoselect", "use existing", "sqrt_linear (AnimateDiff)", "linear (AnimateDiff-SDXL)",
                  "linear (HotshotXL/default)", "avg(sqrt_linear,linear)", "lcm avg(sqrt_linear,linear)", "lcm",
                  "lcm[100_ots]", "lcm >> sqrt_linear", "sqrt", "cosine", "squaredcos_cap_v2"]
_RAW = {"sqrt_linear (AnimateDiff)": ("sqrt_linear", 0.012), "linear (HotshotXL/default)": ("linear", 0.012),
        "linear (AnimateDiff-SDXL)": ("linear", 0.020)}
BIG = 2**31 - 1


class MotionModel:
    def __init__(self, name, state_dict):
        self.name = name
        self.state_dict = state_dict
        self.dtype, self.ops = ade_dtype_and_ops()  # decided when loaded, as ADE does

    def modules_for(self, unet):
        modules = build_modules(self.state_dict, self.dtype, self.ops)
        placed = []
        for kind, block, pos, channels in motion_slots(unet):
            module = modules.get(f"{kind}.{block}")
            if module is None or module.channels != channels:
                have = None if module is None else module.channels
                raise ValueError(f"motion model '{self.name}' does not fit this UNet at {kind} block {block}: size mismatch [{have}] vs [{channels}]")
            placed.append((kind, block, pos, module))
        return placed


class AppliedMotionModel:
    def __init__(self, model: MotionModel, effect=None):
        self.model, self.effect = model, effect


def _inject(patcher):
    unet = patcher.model.diffusion_model
    device = next(unet.parameters()).device
    for kind, block, pos, module in patcher.get_attachment("standin_ade_placed"):
        blocks = unet.input_blocks if kind == "input" else unet.output_blocks
        module.to(device=device)  # ADE moves its motion model to the device, its dtype kept
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
    CATEGORY = MENU

    def load(self, model_name, ad_settings=None):
        path = folder_paths.get_full_path_or_raise(_FOLDER, model_name)
        return (MotionModel(model_name, comfy.utils.load_torch_file(path, safe_load=True)),)


class MultivalDynamic:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"float_val": ("FLOAT", {"default": 1.0, "min": 0.0, "step": 0.001})},
                "optional": {"mask_optional": ("MASK",)}}

    RETURN_TYPES = ("MULTIVAL",)
    FUNCTION = "create"
    CATEGORY = MENU

    def create(self, float_val=1.0, mask_optional=None):
        return (float_val if mask_optional is None else mask_optional.clone() * float_val,)


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
    CATEGORY = MENU

    def apply(self, motion_model, effect_multival=None, **others):
        unsupported = [k for k, v in others.items() if v is not None]
        if unsupported:
            raise ValueError(f"the ADE test stand-in does not reproduce {', '.join(unsupported)}")
        return ([AppliedMotionModel(motion_model, effect_multival)],)


def _context_node(schedule, fuse_methods, stride):
    required = {"context_length": ("INT", {"default": 16, "min": 1, "max": 128})}
    if stride:
        required["context_stride"] = ("INT", {"default": 1, "min": 1, "max": 32})
    required["context_overlap"] = ("INT", {"default": 4, "min": 0, "max": 128})

    class Node:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": dict(required),
                    "optional": {"fuse_method": (list(fuse_methods),),
                                 "use_on_equal_length": ("BOOLEAN", {"default": False}),
                                 "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}),
                                 "guarantee_steps": ("INT", {"default": 1, "min": 0, "max": BIG}),
                                 "prev_context": ("CONTEXT_OPTIONS",), "view_opts": ("VIEW_OPTS",)}}

        RETURN_TYPES = ("CONTEXT_OPTIONS",)
        RETURN_NAMES = ("CONTEXT_OPTS",)
        FUNCTION = "create"
        CATEGORY = MENU

        def create(self, context_length, context_overlap, context_stride=1, fuse_method="pyramid", use_on_equal_length=False,
                   start_percent=0.0, guarantee_steps=1, prev_context=None, view_opts=None):
            if prev_context is not None or view_opts is not None or start_percent != 0.0:
                raise ValueError("the ADE test stand-in does not reproduce prev_context, view_opts or start_percent")
            return (ContextOptions(schedule, context_length, context_overlap, context_stride, fuse_method, use_on_equal_length),)

    return Node


StandardStaticContextOptions = _context_node(STATIC, FUSE_METHODS_STATIC, stride=False)
StandardUniformContextOptions = _context_node(UNIFORM, FUSE_METHODS, stride=True)


class Params:
    """ADE's InjectionParams attachment: the context options of the MODEL."""

    def __init__(self, context: ContextOptions | None):
        self.context = context


def beta_schedule_patch(model, beta_schedule, has_motion_models):
    """The model_sampling object ADE's Use Evolved Sampling patches in (None: keep the model's own)."""
    if beta_schedule == "autoselect":
        beta_schedule = "sqrt_linear (AnimateDiff)" if has_motion_models else "use existing"
    if beta_schedule == "use existing":
        return None
    if beta_schedule not in _RAW:
        raise ValueError(f"beta_schedule: '{beta_schedule}' is not reproduced by the ADE test stand-in")
    raw, linear_end = _RAW[beta_schedule]
    sampling = type(model.get_model_object("model_sampling"))(model.model.model_config)
    sampling._register_schedule(beta_schedule=raw, linear_start=0.00085, linear_end=linear_end)
    return sampling


class UseEvolvedSampling:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"model": ("MODEL",), "beta_schedule": (BETA_SCHEDULES, {"default": "autoselect"})},
            "optional": {"m_models": ("M_MODELS",), "context_options": ("CONTEXT_OPTIONS",), "sample_settings": ("SAMPLE_SETTINGS",)},
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "use"
    CATEGORY = MENU

    def use(self, model, beta_schedule, m_models=None, context_options=None, sample_settings=None):
        if sample_settings is not None:
            raise ValueError("the ADE test stand-in does not reproduce sample_settings")
        model = model.clone()
        wrappers = comfy.patcher_extension.WrappersMP
        model.remove_wrappers_with_key(wrappers.OUTER_SAMPLE, KEY)
        model.add_wrapper_with_key(wrappers.OUTER_SAMPLE, KEY, outer_sample_wrapper)
        model.remove_wrappers_with_key(wrappers.CALC_COND_BATCH, KEY)
        model.add_wrapper_with_key(wrappers.CALC_COND_BATCH, KEY, sliding_calc_cond_batch)
        model.set_attachments("ADE_params", Params(context_options))
        if m_models:
            placed = []
            for applied in m_models:
                modules = applied.model.modules_for(model.model.diffusion_model)
                for *_, module in modules:
                    module.effect = applied.effect
                placed += modules
            model.set_attachments("standin_ade_placed", placed)
            model.set_attachments("standin_ade_modules", [m for *_, m in placed])
            model.set_model_forward_timestep_embed_patch((StandinMotionModule, run_motion_module))
            model.set_injections(KEY, [comfy.model_patcher.PatcherInjection(inject=_inject, eject=_eject)])
        sampling = beta_schedule_patch(model, beta_schedule, bool(m_models))
        if sampling is not None:
            model.add_object_patch("model_sampling", sampling)
        return (model,)


NODE_CLASS_MAPPINGS = {
    "ADE_LoadAnimateDiffModel": LoadAnimateDiffModel,
    "ADE_ApplyAnimateDiffModelSimple": ApplyAnimateDiffModelSimple,
    "ADE_UseEvolvedSampling": UseEvolvedSampling,
    "ADE_StandardStaticContextOptions": StandardStaticContextOptions,
    "ADE_StandardUniformContextOptions": StandardUniformContextOptions,
    "ADE_MultivalDynamic": MultivalDynamic,
}
NODE_DISPLAY_NAME_MAPPINGS = {k: f"{k} (TEST STAND-IN)" for k in NODE_CLASS_MAPPINGS}
