"""`make bench`: AnyI2V against plain AnimateDiff sampling on an SD1.5-layout model, here on this machine.

One run prints lines of detail and, last, one line of JSON with plain_s, anyi2v_s, ratio,
overhead_frac (AnyI2V time outside UNet forward/backward, as a fraction of anyi2v_s), inversion_s,
peak_plain_mb, peak_anyi2v_mb, peak_lowmem_mb, and the optimisation in half precision against fp32 on the test
models with a GPU's half-precision compute emulated (dev/support/half_precision.py): fp16_loss_ratio and
bf16_loss_ratio (the loss reached, evaluated in fp32, over fp32's, at the worst optimised step), the first
gradient's sign agreement with fp32 and the rounding control's (fp32 on the latent rounded to the half dtype).

The bench UNet has the SD1.5 layout and channel multipliers (1, 2, 4, 4) at a base width that lets a
2-core CPU finish in minutes (BENCH_CHANNELS, default 64); it runs the paper's schedule: 16 frames,
25 DDIM steps (ddim_uniform), CFG 8, inversion t_alpha 201 with stride 1, optimisation in the first 6
steps x 5 iterations, M = 64. The latent is BENCH_LATENT x BENCH_LATENT (default 16, i.e. 128 px):
the image size is reduced, not frames or steps. Weights are generated (deterministic), never loaded.
Each variant runs in its own subprocess, twice: once for time, once for memory. Peak memory is the
growth over the model-loaded state while sampling the first two steps (both optimised for AnyI2V, so
its peak is among them): on CUDA, max_memory_allocated minus memory_allocated; on CPU, the process's
peak RSS (VmHWM, reset through /proc/self/clear_refs) minus its RSS, with glibc told to serve blocks of
MEMORY_MMAP_THRESHOLD bytes and more by mmap, so freed tensors leave the RSS at once and the peak RSS
follows live tensor memory. That setting slows large allocations, which is why the timed runs go without.
Smaller blocks still come from glibc's heap, which keeps some slack: on this model the peak RSS runs
about 20-30 % over the live tensors. `dev/bench.py VARIANT tensors` runs the same steps metering the
live tensor bytes themselves (dev/support/tensor_meter.py), what a GPU's allocator would hold; `make scale`
uses it to cross-check its estimates.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dev.support.bench_model import build_model  # noqa: E402

CHANNELS = int(os.environ.get("BENCH_CHANNELS", 64))
LATENT = int(os.environ.get("BENCH_LATENT", 16))
FRAMES, STEPS, CFG = 16, 25, 8.0
MEMORY_STEPS = 2
MEMORY_MMAP_THRESHOLD = 1 << 20


def rss_mb(field="VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak():
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def timed_unet(model, store):
    """A keyed DIFFUSION_MODEL wrapper on a clone that sums the wall time of UNet forwards."""
    import comfy.patcher_extension

    def wrapper(executor, *args, **kwargs):
        started = time.perf_counter()
        try:
            return executor(*args, **kwargs)
        finally:
            store["forward"] += time.perf_counter() - started

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "bench_timer", wrapper)
    return clone


def run(variant: str, measure: str) -> dict:
    """One variant ("plain", "anyi2v", "lowmem"); measure "time" (the whole schedule), "memory" (peak RSS
    over the first steps) or "tensors" (the peak of live tensor bytes over the same steps, metered by
    dev/support/tensor_meter.py: what a GPU's allocator would hold, without the CPU heap's slack)."""
    import torch

    patcher, video, pos, neg, vae = build_model(CHANNELS)
    import comfy.model_management
    import comfy.sample
    import comfy.samplers

    from dev.support import tensor_meter
    from dev.support.host import pack_module

    invert = pack_module("nodes.invert")
    inject = pack_module("nodes.inject")
    sampler_mod = pack_module("nodes.sampler")
    traj_mod = pack_module("core.trajectory")
    size = LATENT * 8
    latent = torch.zeros(FRAMES, 4, LATENT, LATENT)
    noise = comfy.sample.prepare_noise(latent, 8)
    out = {}
    with torch.inference_mode():
        image = torch.zeros(1, size, size, 3)
        image[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
        started = time.perf_counter()
        if variant == "plain":
            features = None
        else:
            (features,) = invert.InvertCondition.execute(patcher, vae, image, pos, 201, 1, "sqrt_linear (AnimateDiff)",
                                                         invert.DEFAULT_QUERY_NAMES, invert.DEFAULT_RES_NAMES).result
        out["inversion_s"] = time.perf_counter() - started
        traj = traj_mod.Trajectory.from_reference_json({
            "bounding_box": [[size * 0.2, size * 0.3, size * 0.5, size * 0.7]], "center_traj": [[[size * 0.35, size * 0.5], [size * 0.65, size * 0.5]]],
            "width": size, "height": size})
        store = {"forward": 0.0}
        model = video.clone()
        if features is not None:  # plain sampling: the same MODEL without AnyI2V
            inject.apply_injection(model, features)
        model = timed_unet(model, store)
        comfy.model_management.load_models_gpu([model])
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", STEPS)
        if measure in ("memory", "tensors"):
            sigmas = sigmas[: MEMORY_STEPS + 1]
        if variant == "plain":
            sampler = comfy.samplers.sampler_object("ddim")
        else:
            settings = sampler_mod.Settings(low_memory="on" if variant == "lowmem" else "off")
            sampler = sampler_mod.TrajectorySampler(sampler_mod.base_ksampler("ddim"), settings, traj)
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 2**20
        else:
            before = rss_mb()
            reset_peak()
        started = time.perf_counter()
        meter = tensor_meter.LiveBytes() if measure == "tensors" else contextlib.nullcontext()
        with meter:
            comfy.sample.sample_custom(model, noise, CFG, sampler, sigmas, pos, neg, latent, seed=8)
        if measure == "tensors":
            out["tensor_peak_mb"] = meter.peak / 2**20
        if cuda:
            torch.cuda.synchronize()
        out["seconds"] = time.perf_counter() - started
        out["unet_forward_s"] = store["forward"]
        if variant != "plain":
            out["backward_s"] = sampler.fn.result.backward_seconds
            out["losses"] = len(sampler.losses)
        if measure == "memory":
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mb("VmHWM")
            out["peak_mb"] = peak - before
    return out


def child(variant: str, measure: str) -> dict:
    env = dict(os.environ)
    if measure == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = str(MEMORY_MMAP_THRESHOLD)
    proc = subprocess.run([sys.executable, __file__, variant, measure], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"bench variant {variant} ({measure}) failed")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{variant} {measure}: {json.dumps(result)}", flush=True)
    return result


def precision() -> dict:
    """Half precision against fp32 on the test models (dev/support/half_precision.py), at the issue's setting: 8
    frames, 8 steps, the first 4 optimised x 5 iterations, lr 0.01."""
    from dev.support import half_precision
    from dev.support.comfy_run import get_host

    return half_precision.compare(get_host(), frames=8, steps=8, opt_percent=0.5, iterations=5, lr=0.01)


def main():
    if len(sys.argv) > 1:  # child: one variant, one measure
        print(json.dumps(precision() if sys.argv[1] == "precision" else run(sys.argv[1], sys.argv[2])))
        return
    variants = ("plain", "anyi2v", "lowmem")
    timed = {v: child(v, "time") for v in variants}
    peaks = {v: child(v, "memory")["peak_mb"] for v in variants}
    plain, anyi2v = timed["plain"], timed["anyi2v"]
    inside = anyi2v["unet_forward_s"] + anyi2v["backward_s"]
    summary = {
        "plain_s": round(plain["seconds"], 2),
        "anyi2v_s": round(anyi2v["seconds"], 2),
        "ratio": round(anyi2v["seconds"] / plain["seconds"], 3),
        "overhead_frac": round(max(0.0, anyi2v["seconds"] - inside) / anyi2v["seconds"], 3),
        "inversion_s": round(anyi2v["inversion_s"], 2),
        "lowmem_s": round(timed["lowmem"]["seconds"], 2),
        "peak_plain_mb": round(peaks["plain"], 1),
        "peak_anyi2v_mb": round(peaks["anyi2v"], 1),
        "peak_lowmem_mb": round(peaks["lowmem"], 1),
    }
    half = child("precision", "loss")
    for name in ("fp16", "bf16"):
        summary[f"{name}_loss_ratio"] = round(half[name]["loss_ratio"], 3)
        summary[f"{name}_sign_agreement"] = round(half[name]["sign_agreement"], 3)
        summary[f"{name}_rounding_control"] = round(half[name]["rounding_control"], 3)
    print(f"bench model: SD1.5 layout, base width {CHANNELS}, {FRAMES} frames, {LATENT}x{LATENT} latent, {STEPS} steps")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
