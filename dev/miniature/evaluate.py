"""Running the miniature through the pack's real nodes and measuring it (used by `make eval` and the tests).

``Runner`` executes API prompts (dev/miniature/workflow.py) with ComfyUI's real PromptExecutor in-process, with
the miniature's files and the ADE stand-in, and returns the decoded frames (cached on disk under a
fingerprint of everything the videos depend on). ``measure`` applies the locator's metrics;
``locator_check`` and ``quality_gate`` are the checks `make eval` prints before the comparison;
``paired`` is the paired comparison of two variants over the same cases.

Resolution: the test set, the locator and the gate work at 256 px (issue 13's instrument). A miniature of
another resolution (its checkpoint names its profile, dev/miniature/profiles.py) is run at its own: the
conditions are drawn from the test set's scenes at that resolution (scenes.Scene.scaled), the trajectory is
given at 256 px and scaled by the pack's AnyI2V Trajectory node as for any image size, and the decoded frames
are averaged down to 256 px (``measured``) before anything is measured, so ObjMC stays in 256-px pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import locator as LOC
from . import model as M
from . import profiles as P
from . import scenes as S
from . import testset as TS
from . import workflow as W

REPO = Path(__file__).resolve().parents[2]

CACHE = Path(os.environ.get("ANYI2V_EVAL_CACHE", Path.home() / ".cache" / "comfyui-anyi2v" / "eval"))


def fingerprint() -> str:
    """What the sampled videos depend on: the model files, ComfyUI's version, the pack's code, the stand-in,
    the test model config that loads the miniature, the test set and how its graphs are built."""
    import comfyui_version

    h = hashlib.sha256(comfyui_version.__version__.encode())
    for f in (M.CHECKPOINT, M.MOTION):
        h.update(M.sha256(f).encode())
    files = sorted([*REPO.glob("core/*.py"), *REPO.glob("nodes/*.py"), *REPO.glob("dev/standin_ade/*.py"),
                    *REPO.glob("dev/tiny_models_pack/*.py"), REPO / "dev" / "support" / "tiny_models.py",
                    *(REPO / "dev" / "miniature" / f"{m}.py" for m in ("workflow", "testset", "scenes", "evaluate"))])
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def measured(frames):
    """Frames (F, 3, H, W) at the size the locator measures (TS.SIZE): a miniature's larger frames averaged down."""
    import torch.nn.functional as F

    k = frames.shape[-1] // TS.SIZE
    if frames.shape[-1] == TS.SIZE:
        return frames
    if k < 1 or frames.shape[-1] != k * TS.SIZE or frames.shape[-2] != k * TS.SIZE:
        raise ValueError(f"frames: expected a multiple of {TS.SIZE} px, got {tuple(frames.shape[-2:])}")
    return F.avg_pool2d(frames, k)


class Runner:
    """ComfyUI's real PromptExecutor in-process, with the miniature's files and the ADE stand-in.
    cached_only: answer from the cache alone (``frames`` returns None for what is not there)."""

    def __init__(self, cached_only: bool = False):
        from dev.support.comfy_run import get_host

        self.host = get_host()
        self.profile = M.profile_of()
        M.register(self.profile)
        add_model_folders()
        self.cache = CACHE / fingerprint()
        self.cache.mkdir(parents=True, exist_ok=True)
        self.cached_only = cached_only
        self.seconds: list[float] = []

    def has(self, name: str) -> bool:
        return (self.cache / f"{name}.npz").is_file()

    def frames(self, name: str, prompt: dict | None):
        """Decoded frames (F, 3, H, W) float of a prompt's "dec" node (cached under `name`)."""
        import torch

        path = self.cache / f"{name}.npz"
        if path.is_file():
            arr = np.load(path)["frames"]
        elif self.cached_only:
            return None
        else:
            started = time.time()
            images = self.host.node_output(prompt, "dec")[0]
            self.seconds.append(time.time() - started)
            arr = (images.clamp(0, 1) * 255).round().byte().cpu().numpy()
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # workers may share the cache
            np.savez_compressed(tmp, frames=arr)
            tmp.replace(path)
        return torch.from_numpy(arr).float().div(255).permute(0, 3, 1, 2)


def add_model_folders():
    """Let ComfyUI's loaders find the miniature's files."""
    import folder_paths

    for folder in ("checkpoints", "animatediff_models"):
        folder_paths.add_model_folder_path(folder, str(M.MODELS_DIR / folder))


def write_condition(case: TS.Case, profile: P.Profile = P.CPU) -> dict[str, str]:
    from dev.support.images import write_input_image

    suffix = "" if profile.size == TS.SIZE else f"_{profile.size}"
    return {k: write_input_image(f"miniature_{case.key}_{k}{suffix}.png", np.round(v * 255))
            for k, v in case.condition_parts(profile.scale).items()}


def case_tag(variant: str, overrides: dict | None) -> str:
    return variant if not overrides else f"{variant}+{hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]}"


def run_case(runner: Runner, case: TS.Case, variant: str, overrides: dict | None = None):
    """Decoded frames of one case and variant at the miniature's resolution. overrides: "sampler" and "inject"
    widgets, "paper" settings (steps, t_alpha, stride) of workflow.PAPER; they name their own cache entries."""
    overrides = overrides or {}
    name = f"{case_tag(variant, overrides)}-{case.key}"
    if runner.cached_only:
        return runner.frames(name, None)
    k = runner.profile.scale
    prompt = W.build(variant, case.prompt, write_condition(case, runner.profile), TS.trajectory_json(case.trajectory),
                     case.boxes[:, 0] * k, case.seed, TS.FRAMES, runner.profile.size,
                     sampler_overrides=overrides.get("sampler"), inject_overrides=overrides.get("inject"),
                     paper_overrides=overrides.get("paper"))
    return runner.frames(name, prompt)


def measure(frames, case: TS.Case) -> dict:
    frames = measured(frames)
    m = LOC.objmc(frames, case.boxes)
    return {"objmc": m["objmc"], "found": m["found"], "iou": LOC.iou(frames[0], case.condition_mask())}


# ---------------------------------------------------------------------------------------------------- checks


def locator_check(cases: list[TS.Case], vae_cases: int = 10, profile: P.Profile | None = None) -> dict:
    """ObjMC of the locator on the ground-truth videos at the miniature's resolution (measured at 256 px): raw,
    and through the miniature's VAE (loaded by ComfyUI's checkpoint loader)."""
    import comfy.sd
    import torch

    profile = profile or M.profile_of()
    M.register(profile)
    _, _, vae, _ = comfy.sd.load_checkpoint_guess_config(str(M.CHECKPOINT), output_vae=True, output_clip=False)
    raw, through = [], []
    for i, c in enumerate(cases):
        video = S.render_video(c.scene.scaled(profile.scale))  # rendered once for both checks
        raw.append(LOC.objmc(measured(video), c.boxes)["objmc"])
        if i >= vae_cases:
            continue
        with torch.inference_mode():
            decoded = vae.decode(vae.encode(video.permute(0, 2, 3, 1))).reshape(-1, profile.size, profile.size, 3)
        through.append(LOC.objmc(measured(decoded.permute(0, 3, 1, 2).float().cpu()), c.boxes)["objmc"])
    return {"raw_mean": float(np.mean(raw)), "raw_max": float(np.max(raw)),
            "vae_mean": float(np.mean(through)), "vae_max": float(np.max(through)), "vae_videos": len(through)}


def gate_sample(runner: Runner, i: int, overrides: dict | None = None):
    """Unconditional sample i (plain sampling, a random prompt of the training distribution): (scene, frames)."""
    scene = S.sample_scene(np.random.default_rng([99, i]))
    name = f"{case_tag('gate', overrides)}-{i}"
    if runner.cached_only:
        return scene, runner.frames(name, None)
    prompt = W.build("plain", scene.prompt, {}, "", [], 1000 + i, TS.FRAMES, runner.profile.size,
                     paper_overrides=(overrides or {}).get("paper"))
    return scene, runner.frames(name, prompt)


def quality_gate(runner: Runner, samples: int, start: int = 0, overrides: dict | None = None) -> dict:
    """Unconditional samples start..start+samples-1; from the cache alone, only those there count."""
    passed, reasons, counted = 0, [], 0
    for i in range(start, start + samples):
        scene, frames = gate_sample(runner, i, overrides)
        if frames is None:
            continue
        counted += 1
        g = LOC.gate(measured(frames), len(scene.objects))
        passed += g["pass"]
        if not g["pass"]:
            reasons.append({"sample": i, "prompt": scene.prompt, "why": g["reasons"][:3]})
        print(f"[gate] {i + 1}/{start + samples} {scene.prompt!r}: {'pass' if g['pass'] else 'FAIL ' + '; '.join(g['reasons'][:2])}",
              file=sys.stderr, flush=True)
    return {"rate": passed / max(1, counted), "samples": counted, "failures": reasons}


# ---------------------------------------------------------------------------------------------------- statistics


def paired(a: list[float], b: list[float], rng_seed: int = 0) -> dict:
    """a: full, b: reference (injection only), paired per case."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a), np.asarray(b)
    diff = b - a
    reduction = 1 - a.mean() / b.mean() if b.mean() > 0 else 0.0
    rng = np.random.default_rng(rng_seed)
    boots = []
    for _ in range(2000):
        idx = rng.integers(0, len(a), len(a))
        boots.append(1 - a[idx].mean() / max(1e-9, b[idx].mean()))
    p = float(wilcoxon(a, b).pvalue) if np.any(diff != 0) else 1.0
    return {"reduction": float(reduction), "reduction_ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "wins": int((diff > 0).sum()), "cases": len(a), "wilcoxon_p": p, "mean_diff_px": float(diff.mean())}


def summarise(results: dict[str, dict[str, dict]], keys: list[str]) -> dict:
    out = {}
    for variant, per_case in results.items():
        vals = [per_case[k] for k in keys if k in per_case]
        if not vals:
            continue
        objmc = np.array([v["objmc"] for v in vals])
        out[variant] = {"objmc": float(objmc.mean()), "objmc_sem": float(objmc.std(ddof=1) / np.sqrt(len(objmc))) if len(objmc) > 1 else 0.0,
                        "iou": float(np.mean([v["iou"] for v in vals])), "found": float(np.mean([v["found"] for v in vals])),
                        "cases": len(vals)}
    return out


def per_trajectory(results, variant, cases) -> dict:
    out = {}
    for name in TS.TRAJECTORIES:
        vals = [results[variant][c.key]["objmc"] for c in cases if c.trajectory == name and c.key in results[variant]]
        if vals:
            out[name] = float(np.mean(vals))
    return out
