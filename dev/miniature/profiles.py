"""The miniature's profiles: its resolution, widths and training recipe for the device that trains it.

- ``cpu``: what `make miniature` has trained since run 7 (256 px, a 32 x 32 latent, the tiny test widths,
  about 50 minutes on 2 cores; docs/eval.md runs 7-8).
- ``gpu``: the paper's resolution (512 px, a 64 x 64 latent, so the decoder maps of output blocks 3-4 and 6-7
  are 16 x 16 and 32 x 32, as SD1.5's), wider, trained on one H100 in about 8 minutes and evaluated in
  about 3 (`make study`; the sizes are chosen from dev/miniature/estimate.py's FLOP counts, docs/eval.md).

The scenes, the test set, the locator and its thresholds are those of issue 13 at 256 px for both: a 512 px
miniature is trained on the same scenes drawn at twice the resolution (scenes.Scene.scaled) and its decoded
frames are measured after a 2 x 2 average (evaluate.measured), so ObjMC stays in pixels of the 256 px frame.

``smoke(profile)`` is the profile's shapes with 2 steps of each training phase and a tiny batch, for the
plumbing check `STUDY_SMOKE=1 make study`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import scenes as S


@dataclass(frozen=True)
class Profile:
    name: str
    size: int  # video side in pixels (the latent is size / 8)
    model_channels: int
    channel_mult: tuple[int, ...]
    num_heads: int
    transformer_depth: tuple[int, ...]  # per input block, level 0 first
    transformer_depth_output: tuple[int, ...]  # per output block, level 0 first
    # training
    vae_steps: int
    vae_batch: int  # crops per decoder step
    vae_crop: int  # crop side in pixels
    image_steps: int
    image_scenes: int  # scenes per single-frame step
    image_frames: int  # frames of each of them (each one a separate sample)
    video_steps: int
    videos: int  # videos of S.FRAMES frames per video step
    lr: float
    ema: float
    warmup: int
    train_budget_s: float | None  # wall-clock budget of the whole training (None: the steps as given)
    # evaluation defaults (`make study`)
    eval_seeds: int
    gate_samples: int
    eval_budget_s: float | None

    @property
    def scale(self) -> float:
        """Pixels of this profile per pixel of the 256 px scenes, test set and locator."""
        return self.size / S.SIZE

    @property
    def latent(self) -> int:
        return self.size // 8

    def unet_config(self) -> dict:
        from dev.support.tiny_models import TINY_UNET_CONFIG

        return dict(TINY_UNET_CONFIG, model_channels=self.model_channels, channel_mult=list(self.channel_mult),
                    num_heads=self.num_heads, transformer_depth=list(self.transformer_depth),
                    transformer_depth_output=list(self.transformer_depth_output))

    def record(self) -> dict:
        return dataclasses.asdict(self)


NO_ATTENTION_AT_LEVEL_0 = dict(transformer_depth=(0, 0, 1, 1, 1, 1, 0, 0),
                               transformer_depth_output=(0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0))

CPU = Profile(
    name="cpu", size=256, model_channels=32, channel_mult=(1, 2, 2, 2), num_heads=4, **NO_ATTENTION_AT_LEVEL_0,
    vae_steps=300, vae_batch=8, vae_crop=48,
    image_steps=300, image_scenes=16, image_frames=1,
    video_steps=2900, videos=2, lr=1e-3, ema=0.995, warmup=100, train_budget_s=None,
    eval_seeds=20, gate_samples=40, eval_budget_s=None,
)

GPU = Profile(
    name="gpu", size=512, model_channels=64, channel_mult=(1, 2, 2, 4), num_heads=4, **NO_ATTENTION_AT_LEVEL_0,
    vae_steps=1500, vae_batch=32, vae_crop=96,
    image_steps=600, image_scenes=32, image_frames=4,
    video_steps=4800, videos=16, lr=1e-3, ema=0.998, warmup=200, train_budget_s=480.0,
    eval_seeds=20, gate_samples=40, eval_budget_s=180.0,
)

PROFILES = {p.name: p for p in (CPU, GPU)}


def get(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got '{name}'")
    return PROFILES[name]


def smoke(profile: Profile) -> Profile:
    """The profile's shapes (resolution, widths, frames) with 2 steps of each training phase and one sample
    per step: it runs every line of the training on any device, in seconds on a GPU and minutes on a CPU."""
    return dataclasses.replace(profile, name=profile.name, vae_steps=2, vae_batch=2, image_steps=2, image_scenes=2,
                               image_frames=1, video_steps=2, videos=1, warmup=2, train_budget_s=None,
                               eval_seeds=1, gate_samples=1, eval_budget_s=None)
