"""The miniature's latent space, defined analytically; the TAESD-format VAE is trained to it.

Each latent pixel describes an 8 x 8 patch of the image: its mean brightness, two mean colour-opponent
values (red - green, yellow - blue), and the mean brightness of the 8 x 8 window centred on the patch's
top-left corner (a second, diagonally offset sampling of the brightness, which places edges twice as
finely; zero outside the image). All four are linear in the image: the TAESD-format encoder computes them
exactly from its initialisation (average pooling by its stride-2 convolutions), and only the decoder is
trained, to draw the image back (dev/miniature/train.py). The values are offset and scaled so that the
diffusion model sees roughly unit-scale data, as SD1.5's scaled latents are. A video model trained on
these latents learns a near-pixel-space distribution that a CPU can learn in minutes. The colour channels
are scaled up (objects are saturated, backgrounds grey): the objects stand out of the noise earlier in
the schedule, and a small error of the model tints a grey background less.

ComfyUI's conventions (SD1.5 latent format, TAESD):
- the "raw" latent a VAE returns is ``model_latent / SCALE`` (ComfyUI multiplies by SCALE, SD1.5's
  0.18215, before the UNet);
- TAESD.encode returns ``taesd_encoder(image) / vae_scale + vae_shift`` and TAESD.decode runs
  ``taesd_decoder((raw - vae_shift) * vae_scale)``; with ``vae_scale = SCALE * NET_GAIN`` and
  ``vae_shift = 0`` the networks see ``NET_GAIN * model_latent``, well inside the decoder's input
  soft clamp (tanh(x / 3) * 3).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

SCALE = 0.18215  # SD1.5's latent scale factor (comfy.latent_formats.SD15)
NET_GAIN = 0.3  # what the TAESD networks see: NET_GAIN * model-space latent
PATCH = 8
OFFSET = torch.tensor([0.5, 0.0, 0.0, 0.5])
SPREAD = torch.tensor([0.15, 0.12, 0.12, 0.15])  # colour is loud: objects reach +-6, grey backgrounds stay near 0


def patch_features(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in 0..1 -> (N, 4, H/8, W/8): mean brightness, mean R-G, mean (R+G)/2-B, and the mean
    brightness of the window offset by half a patch up and left (zero outside the image)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (N, 3, H, W), got {tuple(images.shape)}")
    r, g, b = images.float().unbind(1)
    y = (r + g + b) / 3
    means = F.avg_pool2d(torch.stack([y, r - g, (r + g) / 2 - b], 1), PATCH)
    half = PATCH // 2
    shifted = F.avg_pool2d(F.pad(y[:, None], (half, 0, half, 0)), PATCH)[..., : means.shape[-2], : means.shape[-1]]
    return torch.cat([means, shifted], 1)


@functools.cache
def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """OFFSET and SPREAD on a device, copied once (a copy per batch would make a GPU wait for the CPU)."""
    return OFFSET.view(1, 4, 1, 1).to(device), SPREAD.view(1, 4, 1, 1).to(device)


def encode(images: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in 0..1 -> model-space latents (N, 4, H/8, W/8) (what the UNet sees)."""
    f = patch_features(images)
    offset, spread = _constants(f.device)
    return (f - offset) / spread


def patch_colours(latents: torch.Tensor) -> torch.Tensor:
    """Model-space latents -> the (N, 3, h, w) mean RGB of each patch (the exact inverse of the colour channels)."""
    f = latents.float() * SPREAD.view(1, 4, 1, 1).to(latents.device) + OFFSET.view(1, 4, 1, 1).to(latents.device)
    y, rg, yb = f[:, 0], f[:, 1], f[:, 2]
    # y = (r+g+b)/3, rg = r-g, yb = (r+g)/2-b  =>  b = y - 2/3 yb, r+g = 2(y + yb/3)
    b = y - 2 * yb / 3
    s = 2 * (y + yb / 3)
    return torch.stack([(s + rg) / 2, (s - rg) / 2, b], 1).clamp(0, 1)
