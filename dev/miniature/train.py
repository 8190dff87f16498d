"""`make miniature` (and `make study`'s training): train the miniature video model from a seed, at a profile's
resolution and widths (dev/miniature/profiles.py: `cpu`, the 256 px recipe of docs/eval.md's runs 7-8, the
default; `gpu`, 512 px), on whatever device ComfyUI's model management picks (CUDA when there is one).

Stages:
1. VAE: the TAESD-format encoder computes the latent of dev/miniature/latent.py exactly from its
   initialisation (RGB into three channels, 2x2 average pooling in each stride-2 convolution, the last one
   also taking the half-patch-offset brightness, then the affine map to the latent; residual branches at
   zero) and is not trained. The decoder starts from a smooth interpolation of the colour channels (the
   inverse colour map, then a [1 2 1] tent after each nearest 2x upsampling) and is trained to draw crops
   (48 px, 96 px at 512) of generated frames back from their latents (slightly noised, as a sampler's are).
2. Video model: the SD1.5-layout UNet first on single frames of many scenes (the temporal
   modules pass single frames through), then jointly with the stand-in temporal modules on 8-frame
   videos from dev/miniature/scenes.py. V-prediction (v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0, the
   checkpoint holds a `v_pred` key as ComfyUI's v-prediction checkpoints do) on AnimateDiff's noise schedule
   (betas linear 0.00085..0.012), one timestep per video, half of them drawn with a density rising in t.
   Why not epsilon prediction, as SD1.5: at t = 999 alpha_bar = 0.0016, so x0 = (x_t - 0.9992 eps) / 0.040
   and a small error in a region's epsilon is a large one in its colour; the epsilon-trained miniatures
   (runs 2-6 in docs/eval.md) gave each frame its own colours, however the loss was weighted. With v the
   network predicts x0 itself at high noise, where the temporal modules can make the frames agree.
   The prompt is dropped 10 % of the time for classifier-free guidance; AdamW with warm-up and cosine
   decay, an EMA of the weights (saved).
   Prompts ("a red ball and a blue kite") are encoded by the checkpoint's own CLIP through ComfyUI's
   real checkpoint loader, as CLIPTextEncode does.
The 512 px profile draws the same scenes at twice the resolution (scenes.Scene.scaled).

Devices. On a CPU everything is float32 on 2 threads with the random draws of the recipe before profiles, so
the `cpu` profile trains what `make miniature` trained. On CUDA the UNet runs under bf16 autocast (weights,
AdamW and the EMA stay float32; the decoder, the loss and TF32 matmuls float32), the data are rendered on the
GPU (every frame of a video at once) and nothing waits for the GPU but the loss printout every 20 steps.

Budget. With a wall-clock budget (the `gpu` profile's 8 minutes, --budget-s) the decoder and single-frame phases
stop at 10 % and 15 % of it, and the video phase's step count is fitted to the time left after its first
steps (at most twice the plan; the learning-rate schedule follows). The FLOP estimate of the run
(dev/miniature/estimate.py) is printed before it starts.

The files go to dev/miniature/models/ (float16; --out elsewhere); the script prints their SHA-256 and writes
the loss curve to docs/miniature-loss.png (--curve) and a record of the run to training.json beside the files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dev.miniature import latent as L  # noqa: E402
from dev.miniature import model as M  # noqa: E402
from dev.miniature import profiles as P  # noqa: E402
from dev.miniature import scenes as S  # noqa: E402

LINEAR_START, LINEAR_END, TIMESTEPS = 0.00085, 0.012, 1000
PRINT_EVERY = 20  # steps between printouts (on a GPU, the only moments the CPU waits for it)
BUDGET_SHARES = {"vae": 0.10, "image": 0.15}  # of a budget, at most; the video phase has the rest
PROBE = (5, 25)  # video steps between which the step time is measured, to fit the phase to its budget
RESERVE_S = 20.0  # of a budget, kept for saving the files and the record


def alphas_cumprod() -> torch.Tensor:
    """AnimateDiff's schedule (ComfyUI's "sqrt_linear"): betas linear in t."""
    betas = torch.linspace(LINEAR_START, LINEAR_END, TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class Run:
    """Where and how a training runs: device, autocast, generators, the clock and its budget."""

    def __init__(self, device: torch.device, seed: int, budget_s: float | None):
        self.device = device
        self.cuda = device.type == "cuda"
        self.bf16 = self.cuda and torch.cuda.is_bf16_supported()
        self.gen = torch.Generator(device=device if self.cuda else "cpu").manual_seed(seed)
        self.started = time.time()
        self.budget_s = budget_s

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def elapsed(self) -> float:
        return time.time() - self.started

    def deadline(self, share: float | None = None) -> float:
        """Absolute time by which a phase with this share of the budget (None: the rest) must stop."""
        if self.budget_s is None:
            return math.inf
        if share is None:
            return self.started + self.budget_s - RESERVE_S
        return time.time() + share * self.budget_s

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)


class Losses:
    """Losses kept on the device and read every PRINT_EVERY steps (reading one makes the CPU wait for the GPU)."""

    def __init__(self, log: list, stage_key: str):
        self.log, self.key = log, stage_key
        self.pending: list[tuple[str, int, torch.Tensor]] = []

    def add(self, stage: str, step: int, loss: torch.Tensor):
        self.pending.append((stage, step, loss.detach()))

    def flush(self) -> float:
        if not self.pending:
            return float("nan")
        values = torch.stack([p[2].float() for p in self.pending]).tolist()
        for (stage, step, _), v in zip(self.pending, values, strict=True):
            if not math.isfinite(v):
                raise FloatingPointError(f"training diverged: {stage} loss {v} at step {step}")
            self.log.append({"stage": stage, "step": step, self.key: v})
        self.pending.clear()
        return float(np.mean([e[self.key] for e in self.log[-PRINT_EVERY:] if self.key in e]))


# ---------------------------------------------------------------------------------------------------- prompts


def all_prompts() -> list[str]:
    one = [f"a {c} {k}" for c in S.HUES for k in S.CLASSES]
    two = [f"{a} and {b}" for a in one for b in one if a.split()[1] != b.split()[1]]
    return [""] + one + two


def encode_prompts(unet, taesd, prompts: list[str], profile: P.Profile = P.CPU) -> dict[str, torch.Tensor]:
    """Each prompt's conditioning (77, 64) from the checkpoint's CLIP, loaded by ComfyUI's checkpoint loader."""
    import comfy.sd

    M.register(profile)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.safetensors"
        M.save(path, M.checkpoint_state(unet, taesd), profile)
        _, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=True)
    out = {}
    with torch.no_grad():
        for p in prompts:
            cond = clip.encode_from_tokens_scheduled(clip.tokenize(p))
            out[p] = cond[0][0][0].float().cpu()
    return out


# ---------------------------------------------------------------------------------------------------- VAE


def _centre(w: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel tensor view of a conv weight's centre taps (out, in)."""
    return w[:, :, 1, 1]


def init_taesd_analytic(taesd):
    """Start the TAESD networks at the analytic solution (see module doc): the encoder exact, the decoder a
    smooth interpolation of the colour channels."""
    import comfy.taesd.taesd as T

    enc, dec = taesd.taesd_encoder, taesd.taesd_decoder
    G = L.NET_GAIN
    S_, O_ = L.SPREAD.double(), L.OFFSET.double()
    with torch.no_grad():
        for net in (enc, dec):
            for m in net.modules():
                if isinstance(m, T.Block):
                    torch.nn.init.zeros_(m.conv[4].weight)
                    torch.nn.init.zeros_(m.conv[4].bias)
        # encoder: RGB into channels 0-2, 2x2 average pooling thrice (the last also gives channel 3: the mean
        # brightness of the 2x2 blocks up and left, i.e. the half-patch-offset window), then the affine map
        first = enc[0]
        first.weight.zero_()
        first.bias.zero_()
        for c in range(3):
            first.weight[c, c, 1, 1] = 1.0
        for idx in (2, 6, 10):
            conv = enc[idx]
            conv.weight.zero_()
            for c in range(3):
                conv.weight[c, c, 1:3, 1:3] = 0.25
        enc[10].weight[3, :3, 0:2, 0:2] = 0.25 / 3
        last = enc[14]
        last.weight.zero_()
        rows = torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0], [1.0, -1.0, 0.0, 0], [0.5, 0.5, -1.0, 0], [0, 0, 0, 1.0]], dtype=torch.float64)
        for c in range(4):
            _centre(last.weight)[c, :4] = (G * rows[c] / S_[c]).float()
        last.bias.copy_((-G * O_ / S_).float())
        # decoder: the inverse of the colour channels into channels 0-2, a tent after each upsampling, RGB out
        first = dec[1]
        first.weight.zero_()
        inv = torch.tensor([[1.0, 0.5, 1 / 3], [1.0, -0.5, 1 / 3], [1.0, 0.0, -2 / 3]], dtype=torch.float64)  # rgb from (y, rg, yb)
        for c in range(3):
            _centre(first.weight)[c, :3] = (inv[c] * S_[:3] / G).float()
        first.bias.zero_()
        first.bias[:3] = (inv @ O_[:3]).float()
        tent = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])) / 16
        for idx in (7, 12, 17):
            conv = dec[idx]
            conv.weight.zero_()
            for c in range(64):
                conv.weight[c, c] = tent
        out = dec[19]
        out.weight.zero_()
        out.bias.zero_()
        for c in range(3):
            out.weight[c, c, 1, 1] = 1.0


def random_crops(images: torch.Tensor, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """n crops of size x size from (N, 3, H, W), aligned to the 8-pixel latent grid."""
    out = []
    _, _, h, w = images.shape
    for _ in range(n):
        i = int(rng.integers(len(images)))
        y = int(rng.integers(0, (h - size) // 8 + 1)) * 8
        x = int(rng.integers(0, (w - size) // 8 + 1)) * 8
        out.append(images[i, :, y:y + size, x:x + size])
    return torch.stack(out)


def vae_images(rng: np.random.Generator, n: int, profile: P.Profile = P.CPU, device=None) -> torch.Tensor:
    """One random frame of each of n random scenes, at the profile's resolution."""
    imgs = []
    for _ in range(n):
        scene = S.sample_scene(rng)
        imgs.append(S.render_frame(scene.scaled(profile.scale), int(rng.integers(scene.frames)), device=device))
    return torch.stack(imgs)


def warmup_cosine(lr_max: float, step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a cosine decay to a tenth of lr_max."""
    return lr_max * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))


def train_vae(taesd, steps: int, rng: np.random.Generator, log: list, profile: P.Profile = P.CPU, run: Run | None = None,
              lr_max: float = 2e-4) -> int:
    """The decoder only (the encoder is exact by construction); returns the steps done (fewer at the deadline)."""
    run = run or Run(torch.device("cpu"), 0, None)
    dec = taesd.taesd_decoder
    opt = torch.optim.AdamW(dec.parameters(), lr=lr_max, weight_decay=0.0)
    deadline = run.deadline(BUDGET_SHARES["vae"])
    losses = Losses(log, "decoder")
    pool = None
    step = -1
    for step in range(steps):
        if step % 10 == 0:  # a fresh pool of frames every 10 steps; crops from it
            pool = vae_images(rng, 8, profile, run.device)
        lr = warmup_cosine(lr_max, step, steps, warmup=20)
        for g in opt.param_groups:
            g["lr"] = lr
        y = random_crops(pool, profile.vae_batch, profile.vae_crop, rng)
        z = L.encode(y) * L.NET_GAIN
        z = z + 0.03 * torch.randn_like(z)  # the decoder also sees imperfect latents (a sampler's)
        out = dec(z)
        loss = F.l1_loss(out, y) + F.mse_loss(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.add("vae", step, loss)
        late = time.time() > deadline
        if step % 25 == 0 or step == steps - 1 or late:
            print(f"[vae {step:5d}/{steps}] decoder {losses.flush():.5f} ({run.elapsed():.0f}s)", flush=True)
        if late:
            print(f"[budget] decoder stopped after {step + 1} of {steps} steps ({BUDGET_SHARES['vae']:.0%} of the budget)", flush=True)
            break
    losses.flush()
    return step + 1


# ---------------------------------------------------------------------------------------------------- video model


class EMA:
    def __init__(self, params, decay: float):
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_mul_(self.shadow, d)
        torch._foreach_add_(self.shadow, [p.detach() for p in self.params], alpha=1 - d)

    @torch.no_grad()
    def copy_to_params(self):
        for s, p in zip(self.shadow, self.params, strict=True):
            p.copy_(s)


def video_batch(rng: np.random.Generator, videos: int, frames: int, profile: P.Profile = P.CPU, device=None,
                per_scene: int = 1):
    """Model-space latents (N, 4, h, w) at the profile's resolution and one prompt per latent.
    frames > 1: `videos` videos of `frames` frames (N = videos * frames, a video's frames in a row);
    frames == 1: `per_scene` distinct random frames of each of `videos` scenes (N = videos * per_scene)."""
    scenes = [S.sample_scene(rng) for _ in range(videos)]
    k = profile.scale
    with torch.no_grad():
        if frames == 1 and per_scene == 1:
            x = L.encode(torch.stack([S.render_frame(s.scaled(k), int(rng.integers(s.frames)), device=device) for s in scenes]))
        elif frames == 1:
            x = L.encode(torch.cat([S.render_frames(s.scaled(k), np.sort(rng.choice(s.frames, per_scene, replace=False)), device=device)
                                    for s in scenes]))
        else:
            x = torch.cat([L.encode(S.render_frames(s.scaled(k), slice(0, frames), device=device)) for s in scenes])
    return x, [s.prompt for s in scenes for _ in range(per_scene if frames == 1 else 1)]


def sample_t(n: int, gen: torch.Generator | None) -> torch.Tensor:
    """Half uniform, half with density rising linearly in t (the steps where the layout is decided)."""
    device = gen.device if gen is not None else None
    u = torch.rand(n, generator=gen, device=device)
    pick = torch.rand(n, generator=gen, device=device) < 0.5
    u = torch.where(pick, u, u.sqrt())
    return (u * TIMESTEPS).long().clamp(max=TIMESTEPS - 1)


def train_video(unet, motion, conds, image_steps: int, video_steps: int, rng: np.random.Generator, log: list,
                profile: P.Profile = P.CPU, run: Run | None = None, lr_max: float | None = None) -> dict:
    """image_steps on single frames of the profile's scenes, then video_steps on its videos. With a budget, the
    single-frame phase stops at its share and the video phase is fitted to the time left. Returns the steps done."""
    run = run or Run(torch.device("cpu"), 0, None)
    lr_max = profile.lr if lr_max is None else lr_max
    frames = S.FRAMES
    M.insert_motion(unet, motion)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=lr_max, betas=(0.9, 0.99), weight_decay=0.01, **({"fused": True} if run.cuda else {}))
    ema = EMA(params, profile.ema)
    ac = alphas_cumprod().float().to(run.device)
    empty = conds[""]
    losses = Losses(log, "loss")
    started, cpu = time.time(), time.process_time()
    image_deadline = run.deadline(BUDGET_SHARES["image"])
    steps = image_steps + video_steps
    done = {"image": 0, "video": 0}
    step, probe_time = 0, {}
    while step < steps:
        image = step < image_steps
        lr = warmup_cosine(lr_max, step, steps, warmup=profile.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        if image:
            n, f = profile.image_scenes, 1
            x0, prompts = video_batch(rng, n, 1, profile, run.device, per_scene=profile.image_frames)
            n = len(prompts)
        else:
            n, f = profile.videos, frames
            x0, prompts = video_batch(rng, n, f, profile, run.device)
        options = M.motion_options(f)
        t = sample_t(n, run.gen)
        a = ac[t].repeat_interleave(f).view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=run.gen, device=run.gen.device)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        context = torch.stack([empty if rng.random() < 0.1 else conds[p] for p in prompts]).repeat_interleave(f, 0)
        with run.autocast():
            v = unet(xt, t.repeat_interleave(f).float(), context, transformer_options=dict(options))
        per = (v.float() - (a.sqrt() * noise - (1 - a).sqrt() * x0)).pow(2).mean((1, 2, 3))
        loss = per.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        stage = "image" if image else "video"
        losses.add(stage, step, loss)
        done[stage] += 1
        k = step - image_steps  # video steps done before this one
        if not image and run.budget_s is not None and k + 1 in PROBE:  # fit the video phase to the time left
            run.sync()
            probe_time[k + 1] = time.time()
            if k + 1 == PROBE[1]:
                per_step = (probe_time[PROBE[1]] - probe_time[PROBE[0]]) / (PROBE[1] - PROBE[0])
                fit = int((run.deadline() - time.time()) / per_step) + k + 1
                fitted = max(k + 1, min(2 * video_steps, fit))
                print(f"[budget] video phase: {per_step:.3f} s a step, {run.deadline() - time.time():.0f} s left: "
                      f"{fitted} steps (planned {video_steps})", flush=True)
                video_steps = fitted
                steps = image_steps + video_steps
        late_image = image and time.time() > image_deadline
        late_video = not image and time.time() > run.deadline()
        if step % PRINT_EVERY == 0 or step == steps - 1 or late_image or late_video:
            mean = losses.flush()
            print(f"[{stage} {step:5d}/{steps}] loss {mean:.4f} lr {lr:.2e} "
                  f"({time.time() - started:.0f}s wall, {(time.process_time() - cpu) / 2:.0f}s cpu/2)", flush=True)
        step += 1
        if late_image:
            print(f"[budget] single frames stopped after {done['image']} of {image_steps} steps "
                  f"({BUDGET_SHARES['image']:.0%} of the budget)", flush=True)
            steps -= image_steps - step
            image_steps = step
        if late_video:
            print(f"[budget] videos stopped after {done['video']} of {video_steps} steps (the budget is spent)", flush=True)
            break
    losses.flush()
    ema.copy_to_params()
    return {"image_steps": done["image"], "video_steps": done["video"]}


def remove_motion(unet):
    from dev.standin_ade.motion import StandinMotionModule

    for blocks in (unet.input_blocks, unet.output_blocks):
        for block in blocks:
            for i in reversed(range(len(block))):
                if isinstance(block[i], StandinMotionModule):
                    del block[i]


# ---------------------------------------------------------------------------------------------------- main


def loss_curve(log: list, path: Path):
    from dev.miniature.plot import line_chart

    def smooth(values, k):
        out, acc = [], []
        for i, v in enumerate(values):
            acc.append(v)
            if len(acc) > k:
                acc.pop(0)
            out.append((i, float(np.mean(acc))))
        return out

    video = [e["loss"] for e in log if e["stage"] in ("image", "video")]
    vae_d = [e["decoder"] for e in log if e["stage"] == "vae"]
    series = {"UNet loss (v MSE, mean of 50; frames, then videos)": smooth(video, 50)}
    if vae_d:
        series["VAE decoder L1+MSE (mean of 10)"] = smooth(vae_d, 10)
    line_chart(series, "Miniature training losses", "step", "loss", path, log_y=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="cpu", choices=list(P.PROFILES), help="resolution, widths and recipe (profiles.py)")
    p.add_argument("--smoke", action="store_true", help="the profile's shapes, 2 steps of each phase, one sample a step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=None, help="decoder steps (default: the profile's)")
    p.add_argument("--image-steps", type=int, default=None, help="UNet steps on single frames (default: the profile's)")
    p.add_argument("--video-steps", type=int, default=None, help="UNet + temporal steps on videos (default: the profile's)")
    p.add_argument("--videos", type=int, default=None, help="videos per step (default: the profile's)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock budget in seconds (default: the profile's; 0: none)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (default 2)")
    p.add_argument("--out", type=Path, default=M.MODELS_DIR)
    p.add_argument("--curve", type=Path, default=REPO / "docs" / "miniature-loss.png")
    args = p.parse_args(argv)

    import dataclasses

    profile = P.get(args.profile)
    if args.smoke:
        profile = P.smoke(profile)
    overrides = {k: v for k, v in (("vae_steps", args.vae_steps), ("image_steps", args.image_steps), ("video_steps", args.video_steps),
                                   ("videos", args.videos), ("lr", args.lr)) if v is not None}
    if args.budget_s is not None:
        overrides["train_budget_s"] = args.budget_s or None
    profile = dataclasses.replace(profile, **overrides)

    from dev.support.host import boot

    boot(device="auto")
    import comfy.model_management

    from dev.miniature import estimate as E

    device = comfy.model_management.get_torch_device()
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 2)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    estimate = E.training(profile)
    print(f"[train] profile {profile.name}{' (smoke)' if args.smoke else ''}: {profile.size} px, widths "
          f"{[profile.model_channels * m for m in profile.channel_mult]}, on {device}"
          f"{' (bf16 autocast)' if device.type == 'cuda' and torch.cuda.is_bf16_supported() else ' (float32)'}", flush=True)
    print(E.describe_training(estimate, device.type, profile.train_budget_s), flush=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    run = Run(device, args.seed, profile.train_budget_s)
    cpu = time.process_time()
    unet, taesd = M.new_unet(profile), M.new_taesd()
    motion = M.new_motion_modules(unet)
    log: list = []
    init_taesd_analytic(taesd)
    conds = {k: v.to(device) for k, v in encode_prompts(unet, taesd, all_prompts(), profile).items()}
    unet.to(device)
    taesd.to(device)
    for m in motion.values():
        m.to(device)
    vae_done = train_vae(taesd, profile.vae_steps, rng, log, profile, run)
    vae_seconds = run.elapsed()
    done = train_video(unet, motion, conds, profile.image_steps, profile.video_steps, rng, log, profile, run)
    run.sync()
    train_seconds = run.elapsed()
    unet.cpu()
    taesd.cpu()
    remove_motion(unet)
    for m in motion.values():
        m.cpu()
    cpu_total = time.process_time() - cpu

    checkpoint = args.out / "checkpoints" / M.CHECKPOINT_NAME
    motion_file = args.out / "animatediff_models" / M.MOTION_NAME
    M.save(checkpoint, M.checkpoint_state(unet, taesd), profile)
    M.save(motion_file, M.motion_state(motion), profile)
    args.curve.parent.mkdir(parents=True, exist_ok=True)
    loss_curve(log, args.curve)
    record = {
        "seed": args.seed, "profile": profile.name, "smoke": args.smoke, "device": str(device),
        "precision": "bf16 autocast" if run.bf16 else "float32",
        "vae_steps": vae_done, "image_steps": done["image_steps"], "video_steps": done["video_steps"],
        "planned": {"vae_steps": profile.vae_steps, "image_steps": profile.image_steps, "video_steps": profile.video_steps},
        "videos_per_step": profile.videos, "lr": profile.lr, "prediction": "v", "budget_s": profile.train_budget_s,
        "seconds_total": round(run.elapsed(), 1), "seconds_training": round(train_seconds, 1), "seconds_vae": round(vae_seconds, 1),
        "cpu_seconds": round(cpu_total, 1), "threads": torch.get_num_threads(),
        "estimate_pflop": round(estimate["total"] / 1e15, 3), "profile_settings": profile.record(),
        "files": {f.name: {"bytes": f.stat().st_size, "sha256": M.sha256(f)} for f in (checkpoint, motion_file)},
        "final_loss_mean_100": float(np.mean([e["loss"] for e in log if e["stage"] == "video"][-100:] or [float("nan")])),
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    for f in (checkpoint, motion_file):
        print(f"{f.relative_to(REPO) if f.is_relative_to(REPO) else f}  {f.stat().st_size / 1e6:.2f} MB  sha256 {M.sha256(f)}")
    print(f"trained in {run.elapsed() / 60:.1f} min wall (VAE {vae_seconds / 60:.1f} min), {cpu_total / 60:.1f} CPU-minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
