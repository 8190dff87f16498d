"""TEST DOUBLE of AnimateDiff-Evolved's sampling contract (animatediff/sampling.py), our own code.

- ``outer_sample_wrapper`` (ADE: ``outer_sample_wrapper``, an OUTER_SAMPLE wrapper keyed "ADE"): on a clone of
  the guider's model_options puts the global state object under ``transformer_options["ADGS"]``, sets the
  motion modules' video length (context length when the video slides in windows, else the whole video),
  wraps the step callback to count ``current_step``, and, for the duration of sampling, REPLACES
  ``comfy.samplers.sampling_function`` with ``evolved_sampling_function`` (ADE:
  ``FunctionInjectionHolder.inject_functions``); everything is restored in ``finally``.
- ``evolved_sampling_function`` (ADE: same name): on every model call creates ``ad_params`` = {full_length, context_length, sub_idxs} in
  the transformer_options of a COPY of model_options, skips the unconditional branch when cond_scale is 1
  (cfg1 optimisation, unless ``disable_cfg1_optimization``), calls ``comfy.samplers.calc_cond_batch`` and
  ``comfy.samplers.cfg_function``. Like ADE it does not run ``sampler_calc_cond_batch_function`` or
  ``sampler_pre_cfg_function``.
- ``sliding_calc_cond_batch`` (ADE: same name, a CALC_COND_BATCH wrapper keyed "ADE"): passes through unless
  the video slides; otherwise runs the windows of the current step one by one, writing each window's
  ``sub_idxs`` and ``context_length`` INTO the existing ``ad_params`` (so, like ADE, it fails with
  KeyError 'ad_params' when called outside the sampling function above), subsets x, timestep and per-frame
  conds, and fuses the windows with the context option's weights; it checks for interrupts between windows.
- ``apply_model_wrapper`` (ADE: ``_apply_model_wrapper``, an APPLY_MODEL wrapper ADE's outer wrapper adds to
  the run's model_options for AnimateLCM-I2V, CameraCtrl and MotionCtrl models; here for a mask effect): reads ``transformer_options["ad_params"]`` (full_length, sub_idxs) and
  ``["ADGS"]`` inside the model call to prepare per-frame inputs of the motion modules. Here the per-frame
  input is a mask ``effect_multival``; the real ADE takes a mask effect's rows from indices its window loop
  sets on the motion model, and reads ``ad_params`` this way for its adapter features.
Not reproduced: ADE's other per-step set-up in that function (keyframes, scale/effect schedules), custom CFG, sample settings, noise types, PIA/FancyVideo/AnimateLCM-I2V/CameraCtrl
inputs, the GroupNorm hack of v1/v2 models, multi-GPU, ContextRef/NaiveReuse, the PREPARE_SAMPLING memory
estimate.
"""

from __future__ import annotations

import math

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import torch


class GlobalState:
    """ADE's AnimateDiffGlobalState, for one sampling run."""

    def __init__(self, modules, context, full_length: int):
        self.modules = modules
        self.full_length = full_length
        self.context = context if context is not None and context.slides(full_length) else None
        self.sub_idxs = None
        self.current_step = 0
        video_length = self.context.context_length if self.context else full_length
        for module in modules:
            module.video_length = video_length

    def exposed_params(self) -> dict:
        """ADE's create_exposed_params: the dict other packs read as transformer_options["ad_params"]."""
        length = self.context.context_length if self.context else None
        return {"full_length": self.full_length, "context_length": length, "sub_idxs": self.sub_idxs}

    def reset(self):
        for module in self.modules:
            module.video_length, module.effect_rows = 16, None


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    patcher = guider.model_patcher
    original_options = guider.model_options
    original_function = comfy.samplers.sampling_function
    state = None
    try:
        guider.model_options = comfy.model_patcher.create_model_options_clone(original_options)
        params = patcher.get_attachment("ADE_params")
        state = GlobalState(patcher.get_attachment("standin_ade_modules") or [], params.context if params else None,
                            args[1].shape[0])
        guider.model_options.setdefault("transformer_options", {})["ADGS"] = state
        if any(isinstance(m.effect, torch.Tensor) for m in state.modules):  # ADE: create_special_model_apply_model_wrapper
            comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "ADE_special_model_apply_model",
                                                         apply_model_wrapper, guider.model_options, is_model_options=True)
        args = list(args)
        callback = args[-3]

        def ad_callback(step, x0, x, total_steps):
            if callback is not None:
                callback(step, x0, x, total_steps)
            state.current_step = step + 1

        args[-3] = ad_callback
        comfy.samplers.sampling_function = evolved_sampling_function
        return executor(*args, **kwargs)
    finally:
        guider.model_options = original_options
        comfy.samplers.sampling_function = original_function
        if state is not None:
            state.reset()


def evolved_sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options=None, seed=None):
    state: GlobalState = model_options["transformer_options"]["ADGS"]
    model_options = model_options.copy()
    model_options["transformer_options"] = dict(model_options.get("transformer_options", {}))
    model_options["transformer_options"]["ad_params"] = state.exposed_params()
    uncond_ = uncond
    if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
        uncond_ = None
    cond_pred, uncond_pred = comfy.samplers.calc_cond_batch(model, [cond, uncond_], x, timestep, model_options)
    return comfy.samplers.cfg_function(model, cond_pred, uncond_pred, cond_scale, x, timestep, model_options, cond, uncond)


def window_conds(conds, x_in, window, device):
    """ADE's get_resized_cond for text conditioning: tensors with one row per frame keep the window's rows."""
    out = []
    for cond in conds:
        if cond is None:
            out.append(None)
            continue
        resized = []
        for entry in cond:
            if entry.get("control") is not None:
                raise ValueError("the ADE test stand-in does not reproduce ControlNets in context windows")
            entry = entry.copy()
            model_conds = dict(entry.get("model_conds", {}))
            for key, value in model_conds.items():
                c = getattr(value, "cond", None)
                if isinstance(c, torch.Tensor) and c.shape[0] == x_in.shape[0]:
                    model_conds[key] = value._copy_with(c[window].to(device))
            entry["model_conds"] = model_conds
            resized.append(entry)
        out.append(resized)
    return out


def sliding_calc_cond_batch(executor, model, conds, x_in, timestep, model_options):
    state: GlobalState = model_options["transformer_options"]["ADGS"]
    if state.context is None:
        return executor(model, conds, x_in, timestep, model_options)
    context = state.context
    finals = [torch.zeros_like(x_in) for _ in conds]
    counts = [torch.zeros((x_in.shape[0], 1, 1, 1), device=x_in.device) for _ in conds]
    for window in context.windows(state.full_length, state.current_step):
        comfy.model_management.throw_exception_if_processing_interrupted()
        state.sub_idxs = window
        for module in state.modules:
            module.video_length = len(window)
        model_options["transformer_options"]["ad_params"]["sub_idxs"] = window
        model_options["transformer_options"]["ad_params"]["context_length"] = len(window)
        outs = executor(model, window_conds(conds, x_in, window, x_in.device), x_in[window], timestep[window], model_options)
        weights = context.weights(window, x_in.shape[0]).to(x_in.device)[:, None, None, None]
        for i, out in enumerate(outs):
            finals[i][window] += out * weights
            counts[i][window] += weights
    return [f / c for f, c in zip(finals, counts, strict=True)]


def apply_model_wrapper(executor, *args, **kwargs):
    transformer_options = args[5]
    ad_params = transformer_options["ad_params"]
    state: GlobalState = transformer_options["ADGS"]
    frames = ad_params["sub_idxs"] if ad_params["sub_idxs"] is not None else list(range(ad_params["full_length"]))
    for module in state.modules:
        if isinstance(module.effect, torch.Tensor):
            mask = module.effect
            if mask.shape[0] < ad_params["full_length"]:  # ADE's extend_to_batch_size: the last row repeats
                mask = torch.cat([mask] + [mask[-1:]] * (ad_params["full_length"] - mask.shape[0]))
            module.effect_rows = mask[frames]
    return executor(*args, **kwargs)
