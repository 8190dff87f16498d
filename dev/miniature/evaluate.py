"""Running the miniature through the pack's real nodes and measuring it (used by `make eval` and the tests).

``Runner`` executes API prompts (dev/miniature/workflow.py) with ComfyUI's real PromptExecutor in-process, with
the miniature's files and the ADE stand-in, and returns the decoded frames (cached on disk under a
fingerprint of everything the videos depend on). ``measure`` applies the locator's metrics;
``locator_check`` and ``quality_gate`` are the checks `make eval` prints before the comparison;
``paired`` is the paired comparison of two variants over the same cases.
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


class Runner:
    """ComfyUI's real PromptExecutor in-process, with the miniature's files and the ADE stand-in."""

    def __init__(self):
        from dev.support.comfy_run import get_host

        self.host = get_host()
        add_model_folders()
        self.cache = CACHE / fingerprint()
        self.cache.mkdir(parents=True, exist_ok=True)
        self.seconds: list[float] = []

    def frames(self, name: str, prompt: dict):
        """Decoded frames (F, 3, H, W) float of a prompt's "dec" node (cached under `name`)."""
        import torch

        path = self.cache / f"{name}.npz"
        if path.is_file():
            arr = np.load(path)["frames"]
        else:
            started = time.time()
            images = self.host.node_output(prompt, "dec")[0]
            self.seconds.append(time.time() - started)
            arr = (images.clamp(0, 1) * 255).round().byte().cpu().numpy()
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, frames=arr)
            tmp.replace(path)
        return torch.from_numpy(arr).float().div(255).permute(0, 3, 1, 2)


def add_model_folders():
    """Let ComfyUI's loaders find the miniature's files."""
    import folder_paths

    for folder in ("checkpoints", "animatediff_models"):
        folder_paths.add_model_folder_path(folder, str(M.MODELS_DIR / folder))


def write_condition(case: TS.Case) -> dict[str, str]:
    from dev.support.images import write_input_image

    return {k: write_input_image(f"miniature_{case.key}_{k}.png", np.round(v * 255))
            for k, v in case.condition_parts().items()}


def run_case(runner: Runner, case: TS.Case, variant: str, overrides: dict | None = None):
    overrides = overrides or {}
    prompt = W.build(variant, case.prompt, write_condition(case), TS.trajectory_json(case.trajectory),
                     case.boxes[:, 0], case.seed, TS.FRAMES, TS.SIZE,
                     sampler_overrides=overrides.get("sampler"), inject_overrides=overrides.get("inject"))
    tag = variant if not overrides else f"{variant}+{hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]}"
    return runner.frames(f"{tag}-{case.key}", prompt)


def measure(frames, case: TS.Case) -> dict:
    m = LOC.objmc(frames, case.boxes)
    return {"objmc": m["objmc"], "found": m["found"], "iou": LOC.iou(frames[0], case.condition_mask())}


# ---------------------------------------------------------------------------------------------------- checks


def locator_check(cases: list[TS.Case], vae_cases: int = 10) -> dict:
    """ObjMC of the locator on the ground-truth videos: raw, and through the miniature's VAE (loaded by
    ComfyUI's checkpoint loader)."""
    import comfy.sd
    import torch

    _, _, vae, _ = comfy.sd.load_checkpoint_guess_config(str(M.CHECKPOINT), output_vae=True, output_clip=False)
    raw, through = [], []
    for i, c in enumerate(cases):
        video = S.render_video(c.scene)  # rendered once for both checks
        raw.append(LOC.objmc(video, c.boxes)["objmc"])
        if i >= vae_cases:
            continue
        with torch.inference_mode():
            decoded = vae.decode(vae.encode(video.permute(0, 2, 3, 1))).reshape(-1, TS.SIZE, TS.SIZE, 3)
        through.append(LOC.objmc(decoded.permute(0, 3, 1, 2).float().cpu(), c.boxes)["objmc"])
    return {"raw_mean": float(np.mean(raw)), "raw_max": float(np.max(raw)),
            "vae_mean": float(np.mean(through)), "vae_max": float(np.max(through)), "vae_videos": len(through)}


def quality_gate(runner: Runner, samples: int, start: int = 0) -> dict:
    """Unconditional samples start..start+samples-1 (plain sampling, random prompts of the training distribution)."""
    passed, reasons = 0, []
    for i in range(start, start + samples):
        scene = S.sample_scene(np.random.default_rng([99, i]))
        prompt = W.build("plain", scene.prompt, {}, "", [], 1000 + i, TS.FRAMES, TS.SIZE)
        frames = runner.frames(f"gate-{i}", prompt)
        g = LOC.gate(frames, len(scene.objects))
        passed += g["pass"]
        if not g["pass"]:
            reasons.append({"sample": i, "prompt": scene.prompt, "why": g["reasons"][:3]})
        print(f"[gate] {i + 1}/{start + samples} {scene.prompt!r}: {'pass' if g['pass'] else 'FAIL ' + '; '.join(g['reasons'][:2])}",
              file=sys.stderr, flush=True)
    return {"rate": passed / max(1, samples), "samples": samples, "failures": reasons}


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
