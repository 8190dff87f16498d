"""`make study`: the efficacy study in one command. It trains the miniature for the device present
(dev/miniature/train.py), evaluates it (dev/eval.py) and prints eval's JSON as its last line, with `device`,
`profile`, `train_s` and `eval_s` added.

- Profile: `gpu` (512 px, dev/miniature/profiles.py) when torch sees CUDA, `cpu` (the 256 px recipe) otherwise;
  STUDY_PROFILE=gpu|cpu chooses. ANYI2V_DEVICE=cpu keeps everything on the CPU.
- Budgets: STUDY_TRAIN_S and STUDY_EVAL_S (seconds; default the profile's: 480 and 180 for `gpu`, none for
  `cpu`): training stops at its budget (train.py fits its video phase to it), sampling at its own and the report
  covers the seeds it completed. STUDY_SEEDS (default 20), STUDY_GATE (gate samples, default 40),
  STUDY_WORKERS (eval's sampling processes).
- STUDY_PHASE=train|eval|all (default all): train only, evaluate the trained files only, or both. A machine
  whose commands are limited in time runs the two phases as two commands (docs/eval.md).
- Preflight (CUDA only; STUDY_PREFLIGHT=0 skips it): the smoke below runs on the device first, so that a
  failure of the script or the pack on the GPU shows in about a minute rather than after the training.
- STUDY_SMOKE=1: the plumbing check. The gpu profile's shapes (512 px, its widths) with 2 steps of each
  training phase (one sample a step), then 1 case per variant (seed 0 of `grow`, whose condition is the mixed
  one) and 1 gate sample with shortened sampling (eval --smoke: 2 steps, a 2-call inversion, 1 optimiser
  iteration) over 2 eval workers, on whatever device is present. Everything it writes (files, eval.md, plots,
  WEBP, cache) goes to a temporary folder, removed at the end unless STUDY_OUT names one. Its numbers mean nothing.

Outputs of a real run: the trained files in dev/miniature/models (ANYI2V_MINIATURE_DIR), their training.json,
docs/miniature-loss.png, and what `make eval` writes: docs/eval.md's table, docs/eval-objmc.png, and
docs/eval-cases.webp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def run(cmd: list[str], env: dict, label: str) -> tuple[int, str, float]:
    """Run a step, its output passed through as it comes; returns (code, last stdout line, seconds)."""
    print(f"[study] {label}: {' '.join(cmd[1:])}", flush=True)
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
    last = ""
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.strip():
            last = line.strip()
    return proc.wait(), last, time.time() - started


def cuda_available() -> bool:
    if os.environ.get("ANYI2V_DEVICE", "") == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def study(smoke: bool, phase: str, out: Path | None, preflight: bool) -> int:
    from dev.miniature import profiles as P

    cuda = cuda_available()
    name = "gpu" if smoke else os.environ.get("STUDY_PROFILE") or ("gpu" if cuda else "cpu")
    profile = P.smoke(P.get(name)) if smoke else P.get(name)
    env = dict(os.environ, PYTHONUNBUFFERED="1", ANYI2V_DEVICE=os.environ.get("ANYI2V_DEVICE") or "auto")
    py = sys.executable
    train = [py, "-m", "dev.miniature.train", "--profile", name]
    evaluate = [py, "-m", "dev.eval"]
    if smoke:
        env["ANYI2V_MINIATURE_DIR"] = str(out / "models")
        env["ANYI2V_EVAL_CACHE"] = str(out / "cache")
        train += ["--smoke", "--out", str(out / "models"), "--curve", str(out / "miniature-loss.png")]
        evaluate += ["--smoke", "--seeds", "1", "--trajectories", "grow", "--gate-samples", "1", "--workers", "2",
                     "--docs-dir", str(out)]
    else:
        train_s = os.environ.get("STUDY_TRAIN_S")
        if train_s is not None:
            train += ["--budget-s", train_s]
        eval_s = os.environ.get("STUDY_EVAL_S") or (str(profile.eval_budget_s) if profile.eval_budget_s else "")
        evaluate += ["--seeds", os.environ.get("STUDY_SEEDS") or str(profile.eval_seeds),
                     "--gate-samples", os.environ.get("STUDY_GATE") or str(profile.gate_samples)]
        if eval_s:
            evaluate += ["--budget-s", eval_s]
        if os.environ.get("STUDY_WORKERS"):
            evaluate += ["--workers", os.environ["STUDY_WORKERS"]]
    models = Path(env.get("ANYI2V_MINIATURE_DIR") or REPO / "dev" / "miniature" / "models")
    print(f"[study] {'smoke of the ' if smoke else ''}{name} profile ({profile.size} px) on "
          f"{'CUDA' if cuda else 'the CPU'}; phase {phase}; files in {models}", flush=True)

    if preflight and cuda and not smoke and phase in ("all", "train"):
        with tempfile.TemporaryDirectory(prefix="anyi2v-preflight-") as tmp:
            code, _, seconds = run([py, "-m", "dev.study"], dict(env, STUDY_SMOKE="1", STUDY_OUT=tmp), "preflight (the smoke on this device)")
        if code:
            print(f"[study] the preflight failed (exit {code}, {seconds:.0f} s): not training", file=sys.stderr)
            return code
        print(f"[study] preflight passed in {seconds:.0f} s", flush=True)

    train_s = None
    if phase in ("all", "train"):
        code, _, train_s = run(train, env, "training")
        if code:
            print(f"[study] training failed (exit {code})", file=sys.stderr)
            return code
        if phase == "train":
            print(json.dumps({"phase": "train", "profile": name, "train_s": round(train_s, 1), "models": str(models)}))
            return 0
    else:
        record = models / "training.json"
        if not record.is_file():
            print(f"[study] no trained files in {models}: run the train phase first", file=sys.stderr)
            return 1
        trained = json.loads(record.read_text())
        if trained.get("profile", "cpu") != name:
            print(f"[study] the files in {models} are the {trained.get('profile')} profile's, not {name}'s", file=sys.stderr)
            return 1
        train_s = trained.get("seconds_total")

    code, last, eval_s = run(evaluate, env, "evaluation")
    try:
        line = json.loads(last)
    except json.JSONDecodeError:
        print(f"[study] the evaluation printed no JSON line (exit {code})", file=sys.stderr)
        return code or 1
    line.update(profile=name, train_s=None if train_s is None else round(train_s, 1), eval_s=round(eval_s, 1))
    if smoke:
        missing = [k for k in ("objmc_plain", "objmc_injection_only", "objmc_full", "first_frame_iou", "quality_gate_pass",
                               "seeds", "device", "profile", "train_s", "eval_s") if k not in line]
        files = [out / "models" / "checkpoints", out / "eval.md", out / "eval-objmc.png", out / "eval-cases.webp",
                 out / "miniature-loss.png"]
        absent = [str(f) for f in files if not f.exists()]
        if missing or absent or line.get("seeds") != 1 or line.get("size") != profile.size:
            print(f"[study] smoke: keys missing {missing}, files missing {absent}, seeds {line.get('seeds')}, "
                  f"size {line.get('size')}", file=sys.stderr)
            code = code or 1
    print(json.dumps(line))
    return code


def main() -> int:
    smoke = env_flag("STUDY_SMOKE")
    phase = os.environ.get("STUDY_PHASE", "all")
    if phase not in ("all", "train", "eval"):
        print(f"STUDY_PHASE: expected all, train or eval, got '{phase}'", file=sys.stderr)
        return 2
    started = time.time()
    out = None
    keep = bool(os.environ.get("STUDY_OUT"))
    if smoke:
        out = Path(os.environ["STUDY_OUT"]) if keep else Path(tempfile.mkdtemp(prefix="anyi2v-study-smoke-"))
        out.mkdir(parents=True, exist_ok=True)
    try:
        code = study(smoke, "all" if smoke else phase, out, os.environ.get("STUDY_PREFLIGHT", "1") != "0")
    finally:
        if out is not None and not keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"[study] {'smoke ' if smoke else ''}done in {time.time() - started:.0f} s (exit {code})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
