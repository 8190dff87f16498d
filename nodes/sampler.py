"""The AnyI2V sampler and its nodes: zero-shot trajectory control by latent optimisation (paper Sec. 3.3-3.4).

Before each early denoising step (sigma >= the sigma at ``opt_percent`` of the run's schedule, and always the
first step) the latent is optimised (nodes/optimizer.py); the first step's ordinary pass is then injected too.
The base sampler runs once over the whole schedule, as the core sampler does (its noise and its multistep
history are its own): the first step's latent is optimised before the sampler starts, and a later step's
latent at the model call that evaluates it, which a dry run of the sampler with a stand-in model finds. With
nothing moved (lr 0) the run is the core sampler's bit for bit.
"""

from __future__ import annotations

import logging

import comfy.k_diffusion.sampling as k_sampling
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import numpy as np
import torch
from comfy.extra_samplers import uni_pc
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

# ComfyUI's samplers (comfy.samplers.KSampler.SAMPLERS) that the nodes do not offer, and why.
EXCLUDED_SAMPLERS = {
    "dpm_fast": "it takes its own steps (a fixed grid between the schedule's first and last sigma), so the "
                "schedule's steps that opt_percent names do not exist in its run",
    "dpm_adaptive": "it chooses its steps by error control as it goes, so the schedule's steps that opt_percent "
                    "names do not exist in its run",
}
# The rest of ComfyUI 0.3.75's list, ddim first (the default); a name the running ComfyUI lacks is left out.
_OFFERED = ["ddim", "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
            "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu",
            "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun",
            "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
            "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
            "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
            "sa_solver_pece", "uni_pc", "uni_pc_bh2"]
BASE_SAMPLERS = [name for name in _OFFERED if name in comfy.samplers.KSampler.SAMPLERS]

# Predictor-corrector samplers that never hand their own latent to the model after the first step: UniPC
# evaluates a rescaled copy of its predicted latent, SA-Solver its predicted latent, and both then correct
# their latent from the previous one. There the model's prediction at a later step of the window is taken at
# the optimised latent, and the sampler's latent itself stays (only the first step's latent is replaced).
_PREDICTION_ONLY = {uni_pc.sample_unipc, uni_pc.sample_unipc_bh2, k_sampling.sample_sa_solver,
                    k_sampling.sample_sa_solver_pece}


def replaces_latent(base) -> bool:
    """Whether the model call that evaluates a step's latent gets the sampler's own latent (which the
    optimised one then replaces in place), for a KSAMPLER from base_ksampler."""
    return base.sampler_function not in _PREDICTION_ONLY


class _DryModel:
    """The sampler's model in a dry run: returns zeros, counts its calls and their sigmas, and shows the real
    model's attributes (samplers read model.inner_model's model_sampling and model_patcher). The post-CFG
    functions the sampler itself adds (the CFG++ samplers read the unconditional prediction through one) are
    called with zeros; those of the run's model are not called."""

    def __init__(self, model, model_options):
        self.inner_model = model.inner_model
        self.theirs = list(model_options.get("sampler_post_cfg_function", []))
        self.sigmas: list[torch.Tensor] = []

    def __call__(self, x, sigma, model_options=None, **kwargs):
        self.sigmas.append(sigma)
        out = torch.zeros_like(x)
        for fn in (model_options or {}).get("sampler_post_cfg_function", []):
            if not any(fn is f for f in self.theirs):
                out = fn({"denoised": out, "cond": None, "uncond": None, "cond_scale": 1.0, "model": self.inner_model.inner_model,
                          "uncond_denoised": torch.zeros_like(x), "cond_denoised": torch.zeros_like(x), "sigma": sigma,
                          "model_options": model_options, "input": x})
        return out


def evaluation_calls(base, model, x, sigmas, extra_args) -> dict[int, tuple[int, float]]:
    """{step: (index of the model call that evaluates the step's latent, its sigma)}: the last model call
    before the sampler's callback for the step (k-diffusion samplers and UniPC call back right after
    evaluating a step's latent, before a second-order or corrector evaluation). Found by running the sampler
    on a one-element latent with a model that returns zeros; the global random state is put back (samplers
    seeded by the run draw from their own generators)."""
    dry = _DryModel(model, extra_args.get("model_options", {}))
    found: dict[int, tuple[int, float]] = {}

    def seen(d):
        if d["i"] not in found and dry.sigmas:
            found[d["i"]] = (len(dry.sigmas) - 1, float(dry.sigmas[-1].reshape(-1)[0]))

    tiny = torch.zeros((1,) * x.ndim, dtype=x.dtype, device=x.device)
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        base.sampler_function(dry, tiny, sigmas.clone(), extra_args=dict(extra_args), callback=seen, disable=True,
                              **base.extra_options)
    return found


class _OptimisingModel:
    """The sampler's model for a run: before the model calls that evaluate the latents of the window's steps,
    the latent is optimised; the optimised latent replaces the sampler's own in place (so the sampler's update
    starts from it) or, for the samplers that hand the model a copy, is what the model evaluates."""

    def __init__(self, model, at_calls: dict[int, tuple[int, float]], optimise, replace: bool):
        self.model, self.inner_model = model, model.inner_model
        self.at_calls = at_calls
        self.optimise, self.replace = optimise, replace
        self.calls = 0

    def __getattr__(self, name):  # anything else a sampler might read from its model
        return getattr(self.__dict__["model"], name)

    def __call__(self, x, sigma, **kwargs):
        planned = self.at_calls.get(self.calls)
        self.calls += 1
        if planned is not None:
            step, dry_sigma = planned
            now = float(sigma.reshape(-1)[0])
            if abs(now - dry_sigma) > 1e-5 * max(1.0, abs(dry_sigma)):
                raise RuntimeError(f"AnyI2V: the base sampler's model calls differ from its dry run (step {step}: "
                                   f"sigma {now:.6g}, expected {dry_sigma:.6g})")
            optimised = self.optimise(x, sigma.reshape(-1)[0], step)
            if optimised is not x:
                if self.replace:
                    with torch.inference_mode(x.is_inference()):
                        x.copy_(optimised)
                else:
                    x = optimised
        return self.model(x, sigma, **kwargs)


class RunResult:
    """What a run leaves on its sampler: plain values and CPU tensors, never the model (a checkpoint switched
    afterwards must be collectable)."""

    def __init__(self, losses=(), backward_seconds=0.0, maps=None, boxes=None, points=None):
        self.losses = list(losses)
        self.backward_seconds = backward_seconds
        self.maps, self.boxes, self.points = maps, boxes, points

    @classmethod
    def of(cls, opt: Optimizer):
        maps = None if opt.last_maps is None else [m.float().cpu() for m in opt.last_maps]
        return cls(opt.losses, opt.backward_seconds, maps, opt.boxes.cpu(), [p.cpu() for p in opt.points])


def anyi2v_sample_function(base, settings: Settings, trajectory, features, progress=None):
    """A k-diffusion-style sampler function wrapping `base` (a KSAMPLER) with the optimisation."""
    replace = replaces_latent(base)

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
        later = [i for i in window if i > 0]
        calls = evaluation_calls(base, model, x, sigmas, extra_args) if later else {}
        missing = [i for i in later if i not in calls]
        if missing:
            raise RuntimeError(f"AnyI2V: the base sampler never evaluated the latent of steps {missing} in its dry run")

        def optimise(latent, sigma, step):
            return opt.optimize(latent, sigma, step, model_options, run.iteration_of(step))

        def step_done(d):
            run.step_done(d["i"])
            if callback is not None:
                callback(d)

        try:
            if 0 in window:
                comfy.model_management.throw_exception_if_processing_interrupted()
                x = optimise(x, sigmas[0], 0)
            wrapped = _OptimisingModel(model, {calls[i][0]: (i, calls[i][1]) for i in later}, optimise, replace)
            x = base.sampler_function(wrapped, x, sigmas, extra_args=extra_args, callback=step_done, disable=True,
                                      **base.extra_options)
        finally:
            run.close()
        sample.result = RunResult.of(opt)
        return x

    sample.result = RunResult()
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


class TrajectorySampler(comfy.samplers.KSAMPLER):
    """The SAMPLER AnyI2V Sampler outputs (and AnyI2V KSampler runs): a KSAMPLER around a base sampler whose function
    optimises the latent along the trajectory in the early steps (keeps noise scaling and inpainting of KSAMPLER)."""

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
        return self.fn.result.losses

    def feature_view(self, image_hw: tuple[int, int], frames: int):
        """(IMAGE (F, H, B * W, 3), MASK (F, H, W)): per frame, the optimised query maps of the last iteration of
        each of the B optimised blocks, side by side, as RGB of their first three principal components; and where
        the loss looked in each frame (all groups). Black and empty when no optimisation ran."""
        result = self.fn.result
        if result.maps is None:
            return torch.zeros(frames, *image_hw, 3), torch.zeros(frames, *image_hw)
        panels = [upsample(maps_rgb(m), *image_hw) for m in result.maps]
        masks = loss_masks(result.maps, result.boxes, result.points, self.fn.settings.mask_mode).amax(0)
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


SAMPLER_TOOLTIP = ("The base sampler that takes the denoising steps, run once over the whole schedule as KSampler runs "
                   "it (ComfyUI's samplers but dpm_fast and dpm_adaptive, which take their own steps). With lr 0 "
                   "the result is the core sampler's.")


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
                io.Combo.Input("sampler_name", options=BASE_SAMPLERS, default="ddim", tooltip=SAMPLER_TOOLTIP),
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
        return io.NodeOutput(TrajectorySampler(base_ksampler(sampler_name), settings, trajectory, features))


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
                io.Combo.Input("sampler_name", options=BASE_SAMPLERS, default="ddim", tooltip=SAMPLER_TOOLTIP),
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
        # KSampler's own schedule (denoise, and the penultimate sigma it drops for dpm_2, dpm_2_ancestral, uni_pc
        # and uni_pc_bh2)
        sigmas = comfy.samplers.KSampler(model, steps, "cpu", sampler=sampler_name, scheduler=scheduler, denoise=denoise).sigmas
        opt_steps = len(optimised_steps(sigmas, float(sampling.percent_to_sigma(opt_percent)), iterations))
        total_units = max(len(sigmas) - 1, 0) + opt_steps * iterations  # ddim_uniform may give a step more than asked
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

        sampler = TrajectorySampler(base_ksampler(sampler_name), settings, trajectory, None, progress=tick)
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
