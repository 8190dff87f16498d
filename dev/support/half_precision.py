"""The optimisation in half precision against fp32, on this CPU emulating a GPU (tests/host/test_precision.py and
`make bench`).

How a half-precision GPU is emulated (ComfyUI computes SD1.5 in fp16 on most NVIDIA GPUs, bf16 on some, without
autocast):
- before loading, ComfyUI is told to store the UNet in the half dtype (``args.fp16_unet`` / ``bf16_unet``) and
  ``unet_manual_cast`` answers None (a GPU computes in that dtype), so ``apply_model`` casts the latent and the
  context to half and every layer computes in half; the AnimateDiff-Evolved stand-in stores its weights in
  ``unet_dtype()`` with plain ops, as ADE does on such a GPU;
- convolutions (forward and backward) are computed as a GPU's kernels compute them: half-precision inputs and
  outputs, fp32 accumulation. PyTorch's CPU bf16 convolution does not accumulate in fp32: measured on the test
  models, its gradient's signs agree with fp32's on 52 % of the latent's elements, 96 % with fp32 accumulation
  (the same as bf16 weights computed in fp32); no other op mattered (matmuls, norms, softmax, activations,
  elementwise: 51-52 % each when only it was given fp32 accumulation).

What is compared (the same seed, trajectory, settings): the alignment loss reached after each optimised step's
iterations, evaluated in fp32 (the fp32 run's model, injection and options of that step) on the half run's
optimised latent, over the fp32 run's own; and the signs of the first gradient of the first optimised step (the
same latent in every run) against fp32's, beside the method's own sensitivity: a whole fp32 run whose gradient
forwards see the latent rounded to the half dtype ("rounding control"), its sign agreement and its reached loss.

Measured (4 frames, 8 steps, 4 optimised x 5 iterations, lr 0.01): fp16 worst step 1.020 (signs 0.979; rounding
control 0.999, 1.004), bf16 1.080 (signs 0.962; rounding control 0.902, 1.005): bf16 misses the issue's 5 %, and
not because of the latent's rounding, which alone costs 0.5 %: by the UNet's own bf16
compute.
"""

from __future__ import annotations

import contextlib
import json
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .host import pack_module

HALF = (torch.float16, torch.bfloat16)
FLAGS = {torch.float16: "fp16_unet", torch.bfloat16: "bf16_unet"}
NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class GPUConvolutions(TorchDispatchMode):
    """Convolutions (and their backward) of half tensors computed with fp32 accumulation and rounded back."""

    OPS = ("aten.convolution.default", "aten.convolution_backward.default")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        half = next((a.dtype for a in args if isinstance(a, torch.Tensor) and a.dtype in HALF), None)
        if half is None or str(func) not in self.OPS:
            return func(*args, **kwargs)
        up = [a.float() if isinstance(a, torch.Tensor) and a.dtype in HALF else a for a in args]
        out = func(*up, **kwargs)
        if isinstance(out, torch.Tensor):
            return out.to(half)
        return type(out)(o.to(half) if isinstance(o, torch.Tensor) else o for o in out)


@contextlib.contextmanager
def computing_in(dtype):
    """ComfyUI computing the models loaded meanwhile in `dtype` (see the module docstring)."""
    import comfy.cli_args
    import comfy.model_management as mm

    if dtype not in HALF:
        yield
        return
    saved = {k: getattr(comfy.cli_args.args, k) for k in FLAGS.values()}
    cast, unet_dtype = mm.unet_manual_cast, mm.unet_dtype
    try:
        setattr(comfy.cli_args.args, FLAGS[dtype], True)
        mm.unet_manual_cast = lambda *a, **k: None
        mm.unet_dtype = lambda *a, **k: dtype
        with GPUConvolutions():
            yield
    finally:
        for k, v in saved.items():
            setattr(comfy.cli_args.args, k, v)
        mm.unet_manual_cast, mm.unet_dtype = cast, unet_dtype


TRAJECTORY = {"bounding_box": [[16, 20, 44, 44]], "target_box": [[0, 0, 28, 24]],
              "center_traj": [[[30, 32], [38, 32], [46, 32]]], "query_point": [[[24, 30]]], "width": 64, "height": 64}


def _parts(host):
    """Text conditioning, the condition image and the VAE of the host tests' prompt (an edge map)."""
    from .images import edge_image, write_input_image

    p = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "anyi2v_tiny_sd15.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red car driving", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "img": {"class_type": "LoadImage", "inputs": {"image": write_input_image("cond_edges.png", edge_image(64, 64))}},
    }
    vae, pos, neg, image = host.node_outputs(p, ["ckpt", "pos", "neg", "img"])
    return {"vae": vae[2], "pos": pos[0], "neg": neg[0], "image": image[0]}


def video_model(host, parts, dtype):
    """The test checkpoint loaded to compute in `dtype`, its condition inverted in that dtype, the ADE stand-in's
    motion module applied, and the features injected: the MODEL a user's graph gives the AnyI2V sampler."""
    import comfy.sd

    invert, inject = pack_module("nodes.invert"), pack_module("nodes.inject")
    ade = next(m for name, m in sys.modules.items() if name.endswith("standin_ade"))
    with computing_in(dtype), torch.inference_mode():
        model, *_ = comfy.sd.load_checkpoint_guess_config(str(host.files["checkpoint"]), output_vae=False, output_clip=False)
        (features,) = invert.InvertCondition.execute(model, parts["vae"], parts["image"], parts["pos"], 21, 5,
                                                     "sqrt_linear (AnimateDiff)", invert.DEFAULT_QUERY_NAMES,
                                                     invert.DEFAULT_RES_NAMES).result
        (motion,) = ade.LoadAnimateDiffModel().load("anyi2v_tiny_motion.safetensors")
        (m_models,) = ade.ApplyAnimateDiffModelSimple().apply(motion)
        (video,) = ade.UseEvolvedSampling().use(model, "autoselect", m_models=m_models)
        (injected,) = inject.InjectFeatures.execute(video, features, True, True, True, 4, 0.5).result
    return injected


class _Enough(Exception):
    """Ends a run once what it was for has been recorded."""


@contextlib.contextmanager
def _observed(on_optimize=None, on_gradient=None):
    """Optimizer.optimize / Optimizer.gradient wrapped: on_optimize(opt, x_in, x_out, sigma, step, options) after each
    step's iterations; on_gradient(opt, z, real) -> (value, grad) in place of each gradient."""
    optimizer = pack_module("nodes.optimizer")
    cls = optimizer.Optimizer
    real_optimize, real_gradient = cls.optimize, cls.gradient

    def optimize(self, x, sigma, step, model_options, progress):
        out = real_optimize(self, x, sigma, step, model_options, progress)
        if on_optimize is not None:
            on_optimize(self, x, out, sigma, step, model_options)
        return out

    def gradient(self, z, *args, **kwargs):
        if on_gradient is None:
            return real_gradient(self, z, *args, **kwargs)
        return on_gradient(self, z, lambda zz: real_gradient(self, zz, *args, **kwargs))

    cls.optimize, cls.gradient = optimize, gradient
    try:
        yield
    finally:
        cls.optimize, cls.gradient = real_optimize, real_gradient


def _sample(parts, model, dtype, settings, frames, steps, seed):
    import comfy.sample
    import comfy.samplers

    sampler_mod = pack_module("nodes.sampler")
    trajectory = pack_module("core.trajectory").Trajectory.from_reference_json(json.loads(json.dumps(TRAJECTORY)))
    sampler = sampler_mod.TrajectorySampler(sampler_mod.base_ksampler("ddim"), sampler_mod.Settings(**settings), trajectory)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    latent = torch.zeros(frames, 4, 8, 8)
    with computing_in(dtype), torch.inference_mode():
        try:
            return comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, seed), 4.0, sampler, sigmas,
                                              parts["pos"], parts["neg"], latent, seed=seed)
        except _Enough:
            return None


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    both = (a != 0) & (b != 0)
    return float((torch.sign(a) == torch.sign(b))[both].float().mean())


def compare(host, dtypes=HALF, frames=4, steps=8, opt_percent=0.5, iterations=5, lr=0.01, pca_dim=64, seed=3,
            controls=True) -> dict:
    """{"fp16": {...}, "bf16": {...}} with, per half dtype: loss_ratio (the worst optimised step's reached loss over
    fp32's), ratios (every optimised step's), sign_agreement and rounding_control (see the module docstring),
    finite (every loss and gradient of the half run), and the fp32 run's reached losses; with `controls`, the
    rounding controls (a whole fp32 run each: rounding_control_loss_ratio and the sign agreement)."""
    parts = _parts(host)
    settings = {"opt_percent": opt_percent, "iterations": iterations, "lr": lr, "update_rule": "adamw_fresh",
                "pca_dim": pca_dim, "query_blocks": "Query 1.1, Query 2.0", "mask_mode": "semantic", "low_memory": False}
    runs = {}
    for dtype in dtypes:
        run = runs[dtype] = {"latents": {}, "first": None, "finite": True}

        def keep(opt, x, out, sigma, step, options, run=run):
            run["latents"][step] = out.detach().float().cpu()

        def gradient(opt, z, real, run=run):
            value, grad = real(z)
            run["finite"] &= grad is not None and bool(torch.isfinite(grad).all()) and value == value
            if run["first"] is None and grad is not None:
                run["first"] = grad.detach().float().cpu()
            return value, grad

        with _observed(keep, gradient):
            _sample(parts, video_model(host, parts, dtype), dtype, settings, frames, steps, seed)

    fp32 = video_model(host, parts, torch.float32)
    for dtype, run in runs.items() if controls else ():  # the rounding control: fp32 on the latent rounded to half
        control = run["control"] = {"latents": {}, "first": None}

        def keep(opt, x, out, sigma, step, options, control=control):
            control["latents"][step] = out.detach().float().cpu()

        def rounded(opt, z, real, control=control, dtype=dtype):
            value, grad = real(z.to(dtype).to(z.dtype))
            if control["first"] is None:
                control["first"] = grad.detach().float().cpu()
            return value, grad

        with _observed(keep, rounded):
            _sample(parts, fp32, torch.float32, settings, frames, steps, seed)

    reached, first = {}, {}

    def evaluate(opt, x, out, sigma, step, options):
        with opt.gradient_mode(), torch.no_grad():
            reached[step] = {name: float(opt.loss(latent.to(x.device, torch.float32), sigma, options))
                             for name, latent in [("fp32", out), *((NAMES[d], r["latents"][step]) for d, r in runs.items()),
                                                  *((f"{NAMES[d]} control", r["control"]["latents"][step])
                                                    for d, r in runs.items() if "control" in r)]}

    def gradient(opt, z, real):
        value, grad = real(z)
        first.setdefault("grad", grad.detach().float().cpu())
        return value, grad

    with _observed(evaluate, gradient):
        _sample(parts, fp32, torch.float32, settings, frames, steps, seed)
    result = {"fp32_reached": [reached[s]["fp32"] for s in sorted(reached)]}
    for dtype, run in runs.items():
        ratios = [reached[s][NAMES[dtype]] / reached[s]["fp32"] for s in sorted(reached)]
        result[NAMES[dtype]] = {"loss_ratio": max(ratios), "ratios": ratios, "finite": run["finite"],
                                "sign_agreement": _agreement(run["first"], first["grad"])}
        if "control" in run:
            control = [reached[s][f"{NAMES[dtype]} control"] / reached[s]["fp32"] for s in sorted(reached)]
            result[NAMES[dtype]].update(rounding_control=_agreement(run["control"]["first"], first["grad"]),
                                        rounding_control_loss_ratio=max(control), rounding_control_ratios=control)
    return result
