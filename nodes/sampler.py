"""The AnyI2V sampler and its nodes: zero-shot trajectory control by latent optimisation (paper Sec. 3.3-3.4).

Before each early denoising step (sigma >= the sigma at ``opt_percent`` of the run's schedule, and always the
first step) the latent is optimised (nodes/optimizer.py); the first step's ordinary pass is then injected too.
Then the base sampler takes the ordinary CFG step. Single-step base samplers are driven interval by interval
through the optimisation window; the rest of the schedule runs in one call.
"""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import numpy as np
import torch
from comfy_api.latest import io, ui
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..core.loss import MASK_MODES
from ..core.optimize import UPDATE_RULES
from ..core.view import loss_masks, maps_rgb, upsample
from .inject import RUN_END_KEY, apply_injection, injection_state, state_from_options
from .memory import MODES, memory_mode
from .optimizer import Optimizer, Settings, optimised_steps
from .types import CATEGORY, Features
from .types import Trajectory as TrajectoryType

log = logging.getLogger("AnyI2V")

BASE_SAMPLERS = ["ddim", "euler", "euler_ancestral", "heun", "dpm_2", "lcm", "dpmpp_2m", "uni_pc"]


def anyi2v_sample_function(base, settings: Settings, trajectory, features, progress=None):
    """A k-diffusion-style sampler function wrapping `base` (a KSAMPLER) with the optimisation."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = dict(extra_args or {})
        guider = model.inner_model
        model_options = extra_args.get("model_options", guider.model_options)
        state = state_from_options(model_options)
        if state is None:
            raise ValueError("model: AnyI2V needs a MODEL from AnyI2V Inject Features (or features given to the sampler)")
        opt = Optimizer(guider, settings, trajectory, state, tuple(x.shape), extra_args.get("seed"))
        window = opt.steps(sigmas)
        if window:
            log.info("AnyI2V: optimising the latent before steps %s of %d (%d iterations each)",
                     ", ".join(map(str, window)), len(sigmas) - 1, settings.iterations)
            # the first step is optimised whatever opt_percent says, so it is injected whatever end_percent says
            model_options = comfy.model_patcher.create_model_options_clone(model_options)
            to = model_options.setdefault("transformer_options", {})
            to[RUN_END_KEY] = min(to.get(RUN_END_KEY, state.end_sigma), float(sigmas[0]))
            extra_args["model_options"] = model_options
        run = RunProgress(len(sigmas) - 1, settings.iterations, disable, progress)

        def shifted(offset):
            def step_done(d):
                d = dict(d, i=d["i"] + offset)
                run.step_done(d["i"])
                if callback is not None:
                    callback(d)

            return step_done

        i = 0
        try:
            while i < len(sigmas) - 1:
                comfy.model_management.throw_exception_if_processing_interrupted()
                if i in window:
                    x = opt.optimize(x, sigmas[i], i, model_options, run.iteration_of(i))
                    x = base.sampler_function(model, x, sigmas[i:i + 2], extra_args=extra_args, callback=shifted(i),
                                              disable=True, **base.extra_options)
                    i += 1
                else:
                    x = base.sampler_function(model, x, sigmas[i:], extra_args=extra_args, callback=shifted(i),
                                              disable=True, **base.extra_options)
                    break
        finally:
            run.close()
        sample.losses = opt.losses
        sample.backward_seconds = opt.backward_seconds
        sample.optimizer = opt
        return x

    sample.losses = []
    sample.backward_seconds = 0.0
    sample.optimizer = None
    sample.settings = settings
    return sample


class RunProgress:
    """The progress of one run. The console bar counts the run's steps (8 steps show 8/8 however they are
    driven), its postfix the optimisation iterations. In the UI, AnyI2V KSampler counts steps + iterations
    itself (``units``: called once per iteration); inside SamplerCustom(Advanced), whose bar counts steps
    through the step callback, each iteration advances the bar by a share of its step."""

    def __init__(self, steps: int, iterations: int, disable, units=None):
        self.steps, self.iterations, self.units = steps, iterations, units
        self.console = tqdm(total=steps, disable=disable)
        self.ui = comfy.utils.ProgressBar(steps) if units is None else None

    def iteration_of(self, step: int):
        done = [0]

        def tick():
            done[0] += 1
            if self.units is not None:
                self.units()
            else:
                self.ui.update_absolute(step + done[0] / (self.iterations + 1), self.steps)
            self.console.set_postfix_str(f"optimising step {step}: {done[0]}/{self.iterations}", refresh=True)

        return tick

    def step_done(self, step: int):
        self.console.set_postfix_str("", refresh=False)
        self.console.update(step + 1 - self.console.n)

    def close(self):
        self.console.close()


def base_ksampler(name: str):
    if name not in BASE_SAMPLERS:
        raise ValueError(f"sampler_name: expected one of {', '.join(BASE_SAMPLERS)}, got '{name}'")
    return comfy.samplers.sampler_object(name)


class AnyI2VSAMPLER(comfy.samplers.KSAMPLER):
    """A KSAMPLER whose function is the optimising wrapper (keeps noise scaling and inpainting of KSAMPLER)."""

    def __init__(self, base, settings, trajectory, features=None, progress=None):
        self.base = base
        self.fn = anyi2v_sample_function(base, settings, trajectory, features, progress)
        self.anyi2v_settings = settings  # read by the injection's memory wrapper before sampling (nodes/memory.py)
        super().__init__(self.fn, {}, getattr(base, "inpaint_options", {}))
        self.features = features

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
        if self.features is not None and state_from_options(extra_args.get("model_options", {})) is None:
            extra_args = dict(extra_args)
            options = comfy.model_patcher.create_model_options_clone(extra_args.get("model_options", model_wrap.model_options))
            holder = _OptionsHolder(model_wrap.model_patcher, options)
            apply_injection(holder, self.features)
            extra_args["model_options"] = options
        return super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)

    @property
    def losses(self):
        return self.fn.losses

    def feature_view(self, image_hw: tuple[int, int], frames: int):
        """(IMAGE (F, H, B * W, 3), MASK (F, H, W)): per frame, the optimised query maps of the last iteration of
        each of the B optimised blocks, side by side, as RGB of their first three principal components; and where
        the loss looked in each frame (all groups). Black and empty when no optimisation ran."""
        opt = self.fn.optimizer
        if opt is None or opt.last_maps is None:
            return torch.zeros(frames, *image_hw, 3), torch.zeros(frames, *image_hw)
        maps = [m.float().cpu() for m in opt.last_maps]
        panels = [upsample(maps_rgb(m), *image_hw) for m in maps]
        masks = loss_masks(maps, opt.boxes, opt.points, self.fn.settings.mask_mode).amax(0)
        return torch.cat(panels, dim=2), upsample(masks, *image_hw)


class _OptionsHolder:
    """Lets apply_injection install its patches into a sampling run's model_options (not the MODEL)."""

    def __init__(self, patcher, model_options):
        self.model = patcher.model
        self.model_options = model_options
        self._patcher = patcher

    def get_model_object(self, name):
        return self._patcher.get_model_object(name)

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.model_options = comfy.model_patcher.set_model_options_patch_replace(
            self.model_options, patch, "attn1", block_name, number, transformer_index)

    def remove_wrappers_with_key(self, wrapper_type, key):
        self.model_options.setdefault("transformer_options", {}).setdefault("wrappers", {}).setdefault(wrapper_type, {}).pop(key, None)

    def add_wrapper_with_key(self, wrapper_type, key, fn):
        comfy.patcher_extension.add_wrapper_with_key(wrapper_type, key, fn, self.model_options, is_model_options=True)


def settings_inputs():
    return [
        io.Float.Input("opt_percent", default=0.24, min=0.0, max=1.0, step=0.01,
                       tooltip="Optimise the latent before the steps in this first part of the schedule (0.24 = the first 6 of 25 steps); "
                               "the first step is always optimised, however few the steps."),
        io.Int.Input("iterations", default=5, min=0, max=100, tooltip="Optimisation iterations before each of those steps."),
        io.Float.Input("lr", default=0.01, min=0.0, max=1.0, step=0.001, tooltip="Step of the latent update per element and iteration, in units of the unit-variance "
                                 "latent z_t = x / sqrt(1 + sigma^2) the paper optimises (the paper: 0.01; 0 = no optimisation)."),
        io.Combo.Input("update_rule", options=list(UPDATE_RULES), default="adamw_fresh",
                       tooltip="adamw_fresh: the reference's new AdamW each iteration (a sign-like step of lr on every element of z_t); "
                                "adam_persistent: Adam kept across a step's iterations."),
        io.Int.Input("pca_dim", default=64, min=1, max=1280, tooltip="Principal components M kept of the queries (Eq. 4)."),
        io.String.Input("query_blocks", default="Query 1.1, Query 2.0",
                        tooltip="Attention blocks whose queries are aligned (paper names or output_blocks indices)."),
        io.Combo.Input("mask_mode", options=list(MASK_MODES), default="semantic",
                       tooltip="semantic: adaptive masks from the salient points (Sec. 3.4), one per optimised block; static: the "
                                "first frame's masks only; off: whole boxes."),
        io.Combo.Input("low_memory", options=list(MODES), default="auto",
                       tooltip="Checkpointing of the UNet's layers in the optimisation's gradient forwards (activations "
                               "recomputed in backward): SD1.5 + AnimateDiff v3 at 512x512, 16 frames, fp16 peaks at about "
                               "4.2 GB instead of 12.6 GB, weights included (make scale), for about a third more time. "
                               "auto: on when the estimate does not fit the GPU's free memory, off when it does; on; off. "
                               "(true/false in older workflows read as on/auto.)"),
    ]


def validate_low_memory(low_memory) -> bool | str:
    """low_memory is a combo now; workflows and API prompts saved when it was a boolean still validate."""
    try:
        memory_mode(low_memory)
    except ValueError as error:
        return str(error)
    return True


class AnyI2VSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VSampler",
            display_name="AnyI2V Sampler",
            category=CATEGORY,
            description="A SAMPLER for SamplerCustom / SamplerCustomAdvanced that moves objects along the trajectory by "
                        "optimising the latent in the early steps. Use it with a MODEL from AnyI2V Inject Features.",
            inputs=[
                TrajectoryType.Input("trajectory", tooltip="Boxes and paths from AnyI2V Trajectory."),
                io.Combo.Input("sampler_name", options=BASE_SAMPLERS, default="ddim",
                               tooltip="The base sampler that takes the denoising steps (single-step samplers are driven step by step in the window)."),
                *settings_inputs(),
                Features.Input("features", optional=True,
                               tooltip="Features from AnyI2V Invert Condition, when the MODEL is not already injected."),
            ],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def validate_inputs(cls, low_memory):
        return validate_low_memory(low_memory)

    @classmethod
    def execute(cls, trajectory, sampler_name, opt_percent, iterations, lr, update_rule, pca_dim, query_blocks,
                mask_mode, low_memory, features=None) -> io.NodeOutput:
        settings = Settings(opt_percent, iterations, lr, update_rule, pca_dim, query_blocks, mask_mode, low_memory)
        return io.NodeOutput(AnyI2VSAMPLER(base_ksampler(sampler_name), settings, trajectory, features))


def loss_title(losses) -> str:
    """The loss plot's caption: the optimised step indices and the loss from the first to the last iteration."""
    if not losses:
        return "no optimisation ran"
    steps = sorted({s for s, _, _ in losses})
    return f"optimised steps {', '.join(map(str, steps))}: alignment loss {losses[0][2]:.4g} -> {losses[-1][2]:.4g}"


def loss_plot(losses, width=384, height=192) -> torch.Tensor:
    """A small line chart of the alignment loss per iteration, as an IMAGE; each optimised step is labelled
    under its iterations."""
    img = Image.new("RGB", (width, height), (24, 24, 24))
    d = ImageDraw.Draw(img)
    if losses:
        values = np.array([v for _, _, v in losses], dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo or 1.0
        xs = np.linspace(20, width - 10, len(values)) if len(values) > 1 else np.array([width / 2])
        ys = height - 20 - (values - lo) / span * (height - 40)
        for k, (step, _, _) in enumerate(losses):
            if k == 0 or losses[k - 1][0] != step:
                if k:
                    between = (xs[k] + xs[k - 1]) / 2
                    d.line([(between, 14), (between, height - 4)], fill=(70, 70, 70))
                d.text((xs[k], height - 14), f"s{step}", fill=(160, 160, 160))
        d.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(90, 200, 255), width=2)
    d.text((4, 2), loss_title(losses), fill=(230, 230, 230))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


class AnyI2VKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VKSampler",
            display_name="AnyI2V KSampler",
            category=CATEGORY,
            description="KSampler with AnyI2V trajectory control: objects in the boxes follow their paths.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from AnyI2V Inject Features (AnimateDiff applied before it)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True, tooltip="The noise seed."),
                io.Int.Input("steps", default=25, min=1, max=10000, tooltip="Denoising steps (the paper: 25)."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale (the paper: 8)."),
                io.Combo.Input("sampler_name", options=BASE_SAMPLERS, default="ddim", tooltip="The base sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="ddim_uniform",
                               tooltip="The noise schedule (ddim_uniform gives the reference's DDIM timesteps)."),
                io.Conditioning.Input("positive", tooltip="The prompt."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Latent.Input("latent_image", tooltip="An empty latent whose batch size is the frame count."),
                TrajectoryType.Input("trajectory", tooltip="Boxes and paths from AnyI2V Trajectory."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Denoise strength."),
                *settings_inputs(),
                Features.Input("features", optional=True, tooltip="Features, when the MODEL is not already injected."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent"),
                io.Image.Output(display_name="loss_plot", tooltip="The alignment loss of every optimisation iteration."),
                io.Image.Output(display_name="feature_view",
                                tooltip="Per frame, the optimised query maps of the last iteration as RGB (first three "
                                        "principal components), one panel per optimised block, side by side: the object "
                                        "should look alike inside every frame's box."),
                io.Mask.Output(display_name="loss_masks",
                               tooltip="Per frame, where the alignment loss looked (every group's semantic mask in its box)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, low_memory):
        return validate_low_memory(low_memory)

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, trajectory,
                denoise, opt_percent, iterations, lr, update_rule, pca_dim, query_blocks, mask_mode, low_memory,
                features=None) -> io.NodeOutput:
        settings = Settings(opt_percent, iterations, lr, update_rule, pca_dim, query_blocks, mask_mode, low_memory)
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        if injection_state(model) is None:
            if features is None:
                raise ValueError("model: connect a MODEL from AnyI2V Inject Features, or give the features input")
            model = model.clone()
            apply_injection(model, features)
        sampling = model.get_model_object("model_sampling")
        sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler, steps).cpu()
        if denoise < 1.0:
            total = int(steps / denoise) if denoise > 0 else 0
            sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler, total).cpu()[-(steps + 1):] if total else sigmas[-1:]
        opt_steps = len(optimised_steps(sigmas, float(sampling.percent_to_sigma(opt_percent)), iterations))
        total_units = len(sigmas) - 1 + opt_steps * iterations  # ddim_uniform may give a step more than asked
        pbar = comfy.utils.ProgressBar(total_units)
        previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
        done = {"iters": 0, "steps": 0}

        def tick():
            done["iters"] += 1
            pbar.update_absolute(min(total_units, done["steps"] + done["iters"]), total_units)

        def callback(step, x0, x, total_steps):
            done["steps"] = step + 1
            preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
            pbar.update_absolute(min(total_units, done["steps"] + done["iters"]), total_units, preview)

        sampler = AnyI2VSAMPLER(base_ksampler(sampler_name), settings, trajectory, None, progress=tick)
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        samples = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                             noise_mask=latent_image.get("noise_mask"), callback=callback,
                                             disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = dict(latent_image, samples=samples)
        out.pop("noise_mask", None)
        plot = loss_plot(sampler.losses)
        view, masks = sampler.feature_view((samples.shape[-2] * 8, samples.shape[-1] * 8), samples.shape[0])
        device = comfy.model_management.intermediate_device()
        return io.NodeOutput(out, plot, view.to(device), masks.to(device), ui=ui.PreviewImage(plot, cls=cls))


NODES = [AnyI2VSampler, AnyI2VKSampler]
