"""Noise-schedule arithmetic for DDIM inversion (a 1000-step discrete schedule)."""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


def alphas_cumprod_from_betas(kind: str = "linear", beta_start: float = 0.00085, beta_end: float = 0.012,
                              n: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """diffusers' meanings: linear = linspace of betas (AnimateDiff); scaled_linear = linspace of sqrt(beta), squared (SD1.5)."""
    if kind == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"kind: expected linear or scaled_linear, got '{kind}'")
    return torch.cumprod(1.0 - betas, 0)


def alphas_cumprod_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """k-diffusion sigmas (sqrt((1 - a) / a)) -> alphas_cumprod a = 1 / (1 + sigma^2)."""
    s = torch.as_tensor(sigmas, dtype=torch.float64)
    return 1.0 / (1.0 + s * s)


def inversion_timesteps(t_alpha: int = 201, stride: int = 1) -> list[int]:
    """UNet-call timesteps of DDIM inversion: 1, 1 + stride, ..., ending exactly at t_alpha.

    The call at t takes x at the previous timestep (0 before the first call) and moves it to t; the
    features are captured in the last call (t = t_alpha, input x_{t_alpha - stride})."""
    if int(t_alpha) != t_alpha or not 1 <= t_alpha < NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"t_alpha: must be an integer in 1..{NUM_TRAIN_TIMESTEPS - 1}, got {t_alpha}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride: must be an integer >= 1, got {stride}")
    steps = list(range(1, int(t_alpha) + 1, int(stride)))
    if steps[-1] != t_alpha:
        steps.append(int(t_alpha))
    return steps


def first_alpha(alphas_cumprod: torch.Tensor, stride: int) -> torch.Tensor:
    """alpha_bar of the clean latent the first inversion step starts from: the reference's inverse DDIM schedule
    (999 steps for stride 1) takes alphas_cumprod[t - 1] for its step at t, i.e. alpha_bar_0 before t = 1; with
    coarser strides it starts from 1."""
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return a[0].clone() if int(stride) == 1 else torch.ones((), dtype=torch.float64, device=a.device)


def ddim_inversion_step(x_prev: torch.Tensor, eps: torch.Tensor, a_prev, a_next) -> torch.Tensor:
    """Deterministic DDIM step from alpha_bar a_prev to a_next given the predicted noise eps."""
    a_prev = torch.as_tensor(a_prev, dtype=torch.float64)
    a_next = torch.as_tensor(a_next, dtype=torch.float64)
    x0 = (x_prev.double() - (1 - a_prev).sqrt() * eps.double()) / a_prev.sqrt()
    return (a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps.double()).to(x_prev.dtype)
