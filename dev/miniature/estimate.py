"""What training and evaluating a miniature profile costs, counted from the model before anything runs.

FLOPs are counted as `make scale` counts them (dev/scale.py): torch.utils.flop_counter over ComfyUI's own
UNetModel at the profile's widths with the stand-in temporal modules inserted, and over ComfyUI's TAESD decoder,
on the meta device (shapes only), attention as SDPA's flash kernel (what a GPU runs). Per pass:

- training: a decoder step (fwd + bwd on the profile's crops), a single-frame UNet step and a video step (fwd +
  bwd of the whole batch; the optimiser's and the EMA's element-wise work is left out);
- evaluation, per case and variant: the sampling steps (CFG: cond and uncond batched, 2 x frames), the
  inversion's one-frame calls (shared by the AnyI2V variants of a case), the optimisation's gradient passes
  (fwd + bwd of the cond batch; the real forward stops after the last optimised block, so this is an upper
  bound) and the VAE decode; the quality gate's plain samples.

Seconds are FLOPs over an assumed throughput (ASSUMED_FLOPS below, per device type), which the printout names;
evaluation on a GPU is bound by the number of UNet calls (ComfyUI's and the pack's Python around each small
model call) more than by FLOPs, so its call count and an assumed per-call time are printed as well.
`python -m dev.miniature.estimate --profile gpu` prints both estimates.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dev.miniature import profiles as P  # noqa: E402
from dev.miniature import scenes as S  # noqa: E402

# Effective throughput assumed for this workload (not a peak): on CUDA, an H100's dense bf16 peak is 989 TFLOP/s
# (a large matrix product measured 798 here); a UNet of 64-256 channels with GroupNorms, small convolutions and
# memory-bound element-wise work reaches a small share of it: 10 %, i.e. 100 TFLOP/s. On a CPU: what 2 cores
# gave the 256 px evaluation (docs/eval.md: about 110 GFLOP/s, fp32).
ASSUMED_FLOPS = {"cuda": 100e12, "cpu": 100e9}
# Wall time of one small-model UNet call through ComfyUI, the ADE stand-in and the pack (hooks, wrappers,
# options), assumed for a GPU where such calls are bound by Python, not by the GPU.
ASSUMED_CALL_S = {"cuda": 0.015, "cpu": None}


def _throughput(device_type: str) -> float:
    return ASSUMED_FLOPS.get(device_type, ASSUMED_FLOPS["cpu"])


@contextlib.contextmanager
def _meta_attention():
    """Attention as SDPA's flash kernel for meta tensors (ComfyUI's CPU attention functions read free memory)."""
    import dev.standin_ade.motion as motion
    from dev.scale import flash_attention

    original = motion.ade_attention
    motion.ade_attention = lambda: (lambda q, k, v, heads, **kw: flash_attention(None, q, k, v, heads))
    try:
        yield {"optimized_attention_override": flash_attention}
    finally:
        motion.ade_attention = original


def _unet(profile: P.Profile):
    import comfy.ops
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from dev.standin_ade.motion import StandinMotionModule, motion_slots

    with torch.device("meta"):
        unet = UNetModel(**profile.unet_config(), dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)
        motion = 0
        for kind, block, pos, channels in motion_slots(unet):
            module = StandinMotionModule(channels, ops=torch.nn)
            motion += sum(p.numel() for p in module.parameters())
            (unet.input_blocks if kind == "input" else unet.output_blocks)[block].insert(pos, module)
    params = sum(p.numel() for p in unet.parameters())
    return unet, params - motion, motion


def unet_flops(unet, profile: P.Profile, batch: int, frames: int, train: bool) -> int:
    """FLOPs of one UNet call on `batch` latents of the profile's size (videos of `frames`), fwd (+ bwd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dev.standin_ade.motion import StandinMotionModule

    def run(layer, x, emb, context, transformer_options, *args, **kwargs):
        return layer.temporal(x, frames)

    lat = profile.latent
    with _meta_attention() as options:
        options["patches"] = {"forward_timestep_embed_patch": [(StandinMotionModule, run)]}
        x = torch.zeros(batch, 4, lat, lat, device="meta")
        t = torch.zeros(batch, device="meta")
        context = torch.zeros(batch, 77, 64, device="meta")
        with FlopCounterMode(display=False) as counter:
            if train:
                unet(x, t, context, transformer_options=options).float().pow(2).mean().backward()
            else:
                with torch.no_grad():
                    unet(x, t, context, transformer_options=options)
    return counter.get_total_flops()


def decoder_flops(pixels: int, batch: int, train: bool) -> int:
    """FLOPs of ComfyUI's TAESD decoder on `batch` images of pixels x pixels."""
    import comfy.taesd.taesd
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        dec = comfy.taesd.taesd.TAESD().taesd_decoder
        z = torch.zeros(batch, 4, pixels // 8, pixels // 8)
        with FlopCounterMode(display=False) as counter:
            if train:
                dec(z).pow(2).mean().backward()
            else:
                with torch.no_grad():
                    dec(z)
    return counter.get_total_flops()


def training(profile: P.Profile) -> dict:
    """Per-step and total FLOPs of the profile's three training phases."""
    unet, unet_params, motion_params = _unet(profile)
    frames = S.FRAMES
    steps = {"vae": profile.vae_steps, "image": profile.image_steps, "video": profile.video_steps}
    per_step = {
        "vae": decoder_flops(profile.vae_crop, profile.vae_batch, True),
        "image": unet_flops(unet, profile, profile.image_scenes * profile.image_frames, 1, True),
        "video": unet_flops(unet, profile, profile.videos * frames, frames, True),
    }
    samples = {"vae": profile.vae_batch, "image": profile.image_scenes * profile.image_frames, "video": profile.videos * frames}
    total = sum(steps[k] * per_step[k] for k in steps)
    return {"profile": profile.name, "unet_params": unet_params, "motion_params": motion_params, "steps": steps,
            "per_step": per_step, "frames_per_step": samples, "total": total,
            "frame_samples": steps["image"] * samples["image"] + steps["video"] * samples["video"]}


def schedule(steps: int, t_alpha: int, stride: int, opt_percent: float, iterations: int) -> dict:
    """Optimised steps and inversion calls by the pack's own rules, on AnimateDiff's schedule."""
    import comfy.model_sampling
    import comfy.samplers

    from core.schedule import inversion_timesteps
    from dev.support.host import pack_module

    class Config:
        sampling_settings = {"beta_schedule": "sqrt_linear", "linear_start": 0.00085, "linear_end": 0.012}

    sampling = comfy.model_sampling.ModelSamplingDiscrete(Config())
    sigmas = comfy.samplers.calculate_sigmas(sampling, "ddim_uniform", steps)
    optimised = pack_module("nodes.optimizer").optimised_steps(sigmas, float(sampling.percent_to_sigma(opt_percent)), iterations)
    return {"optimised_steps": len(optimised), "iterations": iterations, "inversion_calls": len(inversion_timesteps(t_alpha, stride))}


def evaluation(profile: P.Profile, cases: int, variants: list[str], gate_samples: int, settings: dict | None = None) -> dict:
    """FLOPs and UNet calls of `make eval` over `cases` cases of `variants` and the gate's samples; settings
    overrides the paper's steps, t_alpha, stride, opt_percent and iterations (the smoke's)."""
    from dev.miniature import workflow as W

    s = dict(steps=W.PAPER["steps"], t_alpha=W.PAPER["t_alpha"], stride=W.PAPER["stride"],
             opt_percent=W.node_defaults("AnyI2VKSampler")["opt_percent"],
             iterations=W.node_defaults("AnyI2VKSampler")["iterations"])
    s.update(settings or {})
    sched = schedule(s["steps"], s["t_alpha"], s["stride"], s["opt_percent"], s["iterations"])
    unet, _, _ = _unet(profile)
    frames = S.FRAMES
    cfg = unet_flops(unet, profile, 2 * frames, frames, False)
    grad = unet_flops(unet, profile, frames, frames, True)
    inversion = unet_flops(unet, profile, 1, 1, False)
    decode = decoder_flops(profile.size, frames, False)
    sample = s["steps"] * cfg + decode
    optimise = sched["optimised_steps"] * sched["iterations"] * grad
    anyi2v = [v for v in variants if W.VARIANTS[v]["anyi2v"]]
    optimising = [v for v in anyi2v if W.VARIANTS[v].get("optimise", True)]
    per_case = len(variants) * sample + (sched["inversion_calls"] * inversion if anyi2v else 0) + len(optimising) * optimise
    calls_per_case = (len(variants) * s["steps"] + (sched["inversion_calls"] if anyi2v else 0)
                      + len(optimising) * sched["optimised_steps"] * sched["iterations"] * 2)  # fwd and bwd
    return {"settings": s, **sched, "cases": cases, "variants": len(variants), "gate_samples": gate_samples,
            "per_call": {"cfg_step": cfg, "gradient_pass": grad, "inversion_call": inversion, "decode": decode},
            "per_case": per_case, "total": cases * per_case + gate_samples * sample,
            "unet_calls": cases * calls_per_case + gate_samples * s["steps"]}


def describe_training(est: dict, device_type: str, budget_s: float | None = None) -> str:
    rate = _throughput(device_type)
    lines = [f"[estimate] {est['profile']} profile: UNet {est['unet_params'] / 1e6:.2f} M + temporal modules "
             f"{est['motion_params'] / 1e6:.2f} M parameters"]
    for phase in ("vae", "image", "video"):
        f = est["per_step"][phase]
        lines.append(f"[estimate]   {phase:5s} {est['steps'][phase]:5d} steps x {f / 1e12:8.4f} TFLOP "
                     f"({est['frames_per_step'][phase]} {'crops' if phase == 'vae' else 'frames'} a step, fwd + bwd)")
    seconds = est["total"] / rate
    lines.append(f"[estimate]   training: {est['total'] / 1e15:.2f} PFLOP, {est['frame_samples'] / 1e3:.0f} k frame samples; "
                 f"{seconds / 60:.1f} min at an assumed {rate / 1e12:g} TFLOP/s on {device_type}"
                 + (f" (budget {budget_s / 60:.1f} min)" if budget_s else ""))
    return "\n".join(lines)


def describe_evaluation(est: dict, device_type: str, workers: int = 1) -> str:
    rate = _throughput(device_type)
    call_s = ASSUMED_CALL_S.get(device_type)
    s = est["settings"]
    lines = [f"[estimate] evaluation: {est['cases']} cases x {est['variants']} variants + {est['gate_samples']} gate samples; "
             f"{s['steps']} steps, inversion {est['inversion_calls']} calls, {est['optimised_steps']} optimised steps x "
             f"{est['iterations']} iterations",
             "[estimate]   per call: CFG step {:.3f}, gradient pass {:.3f}, inversion {:.4f}, decode {:.3f} TFLOP".format(
                 *(est["per_call"][k] / 1e12 for k in ("cfg_step", "gradient_pass", "inversion_call", "decode"))),
             f"[estimate]   {est['total'] / 1e15:.3f} PFLOP: {est['total'] / rate / 60:.1f} min at an assumed "
             f"{rate / 1e12:g} TFLOP/s on {device_type}; {est['unet_calls']} UNet calls"
             + (f", {est['unet_calls'] * call_s / workers / 60:.1f} min at an assumed {call_s * 1e3:.0f} ms a call over "
                f"{workers} worker process(es)" if call_s else "")]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="FLOP estimates of a miniature profile's training and evaluation")
    ap.add_argument("--profile", default="gpu", choices=list(P.PROFILES))
    ap.add_argument("--device", default="cuda", choices=list(ASSUMED_FLOPS))
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)
    from dev.support.host import load_pack

    load_pack()
    profile = P.get(args.profile)
    from dev.miniature import testset as TS
    from dev.miniature import workflow as W

    print(describe_training(training(profile), args.device, profile.train_budget_s))
    seeds = args.seeds or profile.eval_seeds
    print(describe_evaluation(evaluation(profile, seeds * len(TS.TRAJECTORIES), list(W.VARIANTS), profile.gate_samples),
                              args.device, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
