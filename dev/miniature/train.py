"""`make miniature`: train the miniature video model here, on a CPU, from a seed.

Stages (each a fixed number of steps, so a run is reproducible on one machine):
1. VAE: the TAESD-format encoder computes the latent of dev/miniature/latent.py exactly from its
   initialisation (RGB into three channels, 2x2 average pooling in each stride-2 convolution, the last one
   also taking the half-patch-offset brightness, then the affine map to the latent; residual branches at
   zero) and is not trained. The decoder starts from a smooth interpolation of the colour channels (the
   inverse colour map, then a [1 2 1] tent after each nearest 2x upsampling) and is trained to draw 48 x 48
   crops of generated frames back from their latents (slightly noised, as a sampler's are).
2. Video model: the narrow SD1.5-layout UNet first on single frames of many scenes (the temporal
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

The files go to dev/miniature/models/ (float16); the script prints their SHA-256 and writes the loss curve to
docs/miniature-loss.png and a record of the run to dev/miniature/models/training.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dev.miniature import latent as L  # noqa: E402
from dev.miniature import model as M  # noqa: E402
from dev.miniature import scenes as S  # noqa: E402

LINEAR_START, LINEAR_END, TIMESTEPS = 0.00085, 0.012, 1000


def alphas_cumprod() -> torch.Tensor:
    """AnimateDiff's schedule (ComfyUI's "sqrt_linear"): betas linear in t."""
    betas = torch.linspace(LINEAR_START, LINEAR_END, TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


# ---------------------------------------------------------------------------------------------------- prompts


def all_prompts() -> list[str]:
    one = [f"a {c} {k}" for c in S.HUES for k in S.CLASSES]
    two = [f"{a} and {b}" for a in one for b in one if a.split()[1] != b.split()[1]]
    return [""] + one + two


def encode_prompts(unet, taesd, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Each prompt's conditioning (77, 64) from the checkpoint's CLIP, loaded by ComfyUI's checkpoint loader."""
    import comfy.sd

    from dev.support.tiny_models import register_tiny_sd15

    register_tiny_sd15()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.safetensors"
        M.save(path, M.checkpoint_state(unet, taesd))
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


def vae_images(rng: np.random.Generator, n: int) -> torch.Tensor:
    """One random frame of each of n random scenes."""
    imgs = []
    for _ in range(n):
        scene = S.sample_scene(rng)
        imgs.append(S.render_frame(scene, int(rng.integers(scene.frames))))
    return torch.stack(imgs)


def warmup_cosine(lr_max: float, step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a cosine decay to a tenth of lr_max."""
    return lr_max * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))


def train_vae(taesd, steps: int, rng: np.random.Generator, log: list, batch: int = 8, crop: int = 48, lr_max: float = 2e-4):
    """The decoder only (the encoder is exact by construction)."""
    dec = taesd.taesd_decoder
    opt = torch.optim.AdamW(dec.parameters(), lr=lr_max, weight_decay=0.0)
    started = time.time()
    pool = None
    for step in range(steps):
        if step % 10 == 0:  # a fresh pool of frames every 10 steps; crops from it
            pool = vae_images(rng, 8)
        lr = warmup_cosine(lr_max, step, steps, warmup=20)
        for g in opt.param_groups:
            g["lr"] = lr
        y = random_crops(pool, batch, crop, rng)
        z = L.encode(y) * L.NET_GAIN
        z = z + 0.03 * torch.randn_like(z)  # the decoder also sees imperfect latents (a sampler's)
        out = dec(z)
        loss = F.l1_loss(out, y) + F.mse_loss(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append({"stage": "vae", "step": step, "decoder": loss.item()})
        if step % 25 == 0 or step == steps - 1:
            recent = [e["decoder"] for e in log[-25:] if "decoder" in e]
            print(f"[vae {step:5d}/{steps}] decoder {np.mean(recent):.5f} ({time.time() - started:.0f}s)", flush=True)


# ---------------------------------------------------------------------------------------------------- video model


class EMA:
    def __init__(self, params, decay: float):
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params, strict=True):
            s.mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def copy_to_params(self):
        for s, p in zip(self.shadow, self.params, strict=True):
            p.copy_(s)


def video_batch(rng: np.random.Generator, videos: int, frames: int):
    """(videos * frames, 4, 32, 32) model-space latents and the videos' prompts; frames == 1: one random
    frame of each of `videos` scenes."""
    scenes = [S.sample_scene(rng) for _ in range(videos)]
    with torch.no_grad():
        if frames == 1:
            x = L.encode(torch.stack([S.render_frame(s, int(rng.integers(s.frames))) for s in scenes]))
        else:
            x = torch.cat([L.encode(S.render_video(s)[:frames]) for s in scenes])
    return x, [s.prompt for s in scenes]


def sample_t(n: int, gen: torch.Generator | None) -> torch.Tensor:
    """Half uniform, half with density rising linearly in t (the steps where the layout is decided)."""
    u = torch.rand(n, generator=gen)
    pick = torch.rand(n, generator=gen) < 0.5
    u = torch.where(pick, u, u.sqrt())
    return (u * TIMESTEPS).long().clamp(max=TIMESTEPS - 1)


def train_video(unet, motion, conds, image_steps: int, video_steps: int, rng: np.random.Generator, log: list,
                videos: int = 2, frames: int = S.FRAMES, lr_max: float = 1e-3, gen: torch.Generator | None = None):
    """image_steps on single frames of videos * frames scenes, then video_steps on `videos` videos."""
    M.insert_motion(unet, motion)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=lr_max, betas=(0.9, 0.99), weight_decay=0.01)
    ema = EMA(params, 0.995)
    ac = alphas_cumprod().float()
    empty = conds[""]
    started, cpu = time.time(), time.process_time()
    steps = image_steps + video_steps
    for step in range(steps):
        lr = warmup_cosine(lr_max, step, steps, warmup=100)
        for g in opt.param_groups:
            g["lr"] = lr
        if step < image_steps:
            n, f = videos * frames, 1
        else:
            n, f = videos, frames
        options = M.motion_options(f)
        x0, prompts = video_batch(rng, n, f)
        t = sample_t(n, gen)
        a = ac[t].repeat_interleave(f).view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=gen)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        context = torch.stack([empty if rng.random() < 0.1 else conds[p] for p in prompts]).repeat_interleave(f, 0)
        v = unet(xt, t.repeat_interleave(f).float(), context, transformer_options=dict(options))
        per = (v.float() - (a.sqrt() * noise - (1 - a).sqrt() * x0)).pow(2).mean((1, 2, 3))
        loss = per.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        log.append({"stage": "video" if f > 1 else "image", "step": step, "loss": loss.item()})
        if step % 20 == 0 or step == steps - 1:
            recent = [e["loss"] for e in log[-20:] if "loss" in e]
            print(f"[{log[-1]['stage']} {step:5d}/{steps}] loss {np.mean(recent):.4f} lr {lr:.2e} "
                  f"({time.time() - started:.0f}s wall, {(time.process_time() - cpu) / 2:.0f}s cpu/2)", flush=True)
    ema.copy_to_params()
    return unet


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=300)
    p.add_argument("--image-steps", type=int, default=300, help="UNet steps on single frames (16 scenes each)")
    p.add_argument("--video-steps", type=int, default=2900, help="UNet + temporal steps on videos")
    p.add_argument("--videos", type=int, default=2, help="videos per step (8 frames each)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=M.MODELS_DIR)
    p.add_argument("--curve", type=Path, default=REPO / "docs" / "miniature-loss.png")
    args = p.parse_args(argv)

    from dev.support.host import boot

    boot()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started, cpu = time.time(), time.process_time()
    unet, taesd = M.new_unet(), M.new_taesd()
    motion = M.new_motion_modules(unet)
    log: list = []
    init_taesd_analytic(taesd)
    conds = encode_prompts(unet, taesd, all_prompts())
    train_vae(taesd, args.vae_steps, rng, log)
    vae_seconds = time.time() - started
    train_video(unet, motion, conds, args.image_steps, args.video_steps, rng, log, videos=args.videos, lr_max=args.lr, gen=gen)
    remove_motion(unet)
    total, cpu_total = time.time() - started, time.process_time() - cpu

    checkpoint = args.out / "checkpoints" / M.CHECKPOINT_NAME
    motion_file = args.out / "animatediff_models" / M.MOTION_NAME
    M.save(checkpoint, M.checkpoint_state(unet, taesd))
    M.save(motion_file, M.motion_state(motion))
    args.curve.parent.mkdir(parents=True, exist_ok=True)
    loss_curve(log, args.curve)
    record = {
        "seed": args.seed, "vae_steps": args.vae_steps, "image_steps": args.image_steps, "video_steps": args.video_steps,
        "videos_per_step": args.videos, "lr": args.lr, "prediction": "v", "seconds_total": round(total, 1), "seconds_vae": round(vae_seconds, 1),
        "cpu_seconds": round(cpu_total, 1), "threads": torch.get_num_threads(),
        "files": {f.name: {"bytes": f.stat().st_size, "sha256": M.sha256(f)} for f in (checkpoint, motion_file)},
        "final_loss_mean_100": float(np.mean([e["loss"] for e in log if e["stage"] == "video"][-100:] or [float("nan")])),
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    for f in (checkpoint, motion_file):
        print(f"{f.relative_to(REPO) if f.is_relative_to(REPO) else f}  {f.stat().st_size / 1e6:.2f} MB  sha256 {M.sha256(f)}")
    print(f"trained in {total / 60:.1f} min wall (VAE {vae_seconds / 60:.1f} min), {cpu_total / 60:.1f} CPU-minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
