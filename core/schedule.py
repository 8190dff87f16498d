"""Noise-schedule arithmetic for DDIM inversion (a 1000-step discrete schedule). Schedules are float64 CPU
tensors; what touches the latent on its device is float32 or wider, never float64."""

from __future__ import annotations

import math

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


def first_alpha(alphas_cumprod: torch.Tensor, stride: int) -> float:
    """alpha_bar of the clean latent the first inversion step starts from: the reference's inverse DDIM schedule
    (999 steps for stride 1) takes alphas_cumprod[t - 1] for its step at t, i.e. alpha_bar_0 before t = 1; with
    coarser strides it starts from 1."""
    return float(alphas_cumprod[0]) if int(stride) == 1 else 1.0


def ddim_inversion_step(x_prev: torch.Tensor, eps: torch.Tensor, a_prev: float, a_next: float) -> torch.Tensor:
    """Deterministic DDIM step from alpha_bar a_prev to a_next given the predicted noise eps:
    x0 = (x_prev - sqrt(1 - a_prev) eps) / sqrt(a_prev), x_next = sqrt(a_next) x0 + sqrt(1 - a_next) eps,
    as x_next = c_x x_prev + c_eps eps with both coefficients computed in float64 on the CPU (Python floats) and the
    tensors combined in at least float32 on their own device (no float64 there: MPS and DirectML have none)."""
    a_prev, a_next = float(a_prev), float(a_next)
    c_x = math.sqrt(a_next / a_prev)
    c_eps = math.sqrt(1.0 - a_next) - math.sqrt(a_next) * math.sqrt(1.0 - a_prev) / math.sqrt(a_prev)
    dtype = torch.promote_types(x_prev.dtype, torch.float32)
    return (c_x * x_prev.to(dtype) + c_eps * eps.to(dtype)).to(x_prev.dtype)
