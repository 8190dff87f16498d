import numpy as np
import pytest
import torch

from core.schedule import (
    alphas_cumprod_from_betas,
    alphas_cumprod_from_sigmas,
    ddim_inversion_step,
    first_alpha,
    inversion_timesteps,
)


def test_schedules_match_closed_forms():
    lin = alphas_cumprod_from_betas("linear").numpy()
    betas = np.linspace(0.00085, 0.012, 1000)
    assert np.allclose(lin, np.cumprod(1 - betas))
    scaled = alphas_cumprod_from_betas("scaled_linear").numpy()
    assert np.allclose(scaled, np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2))
    sig = np.sqrt((1 - lin) / lin)
    assert np.allclose(alphas_cumprod_from_sigmas(torch.tensor(sig)).numpy(), lin)


def test_inversion_timesteps():
    steps = inversion_timesteps(201, 1)
    assert steps == list(range(1, 202)) and len(steps) == 201
    assert inversion_timesteps(201, 10)[-2:] == [191, 201]
    assert inversion_timesteps(201, 500) == [1, 201]
    for bad in [(0, 1), (1000, 1), (201, 0), (20.5, 1)]:
        with pytest.raises(ValueError, match="t_alpha|stride"):
            inversion_timesteps(*bad)


def test_inversion_step_is_undone_by_the_ddim_step_with_the_same_noise():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    a = alphas_cumprod_from_betas()
    x = x0
    path = [0] + inversion_timesteps(201, 25)
    for t_prev, t in zip(path[:-1], path[1:], strict=True):
        x = ddim_inversion_step(x, eps, 1.0 if t_prev == 0 else a[t_prev], a[t])
    assert torch.allclose(x, a[201].sqrt() * x0 + (1 - a[201]).sqrt() * eps)  # closed form for constant eps
    back = x
    for t_prev, t in zip(path[::-1][:-1], path[::-1][1:], strict=True):
        back = ddim_inversion_step(back, eps, a[t_prev], 1.0 if t == 0 else a[t])
    assert torch.allclose(back, x0)


def test_first_inversion_step_starts_as_the_reference_schedule():
    """Stride 1 (the reference's 999-step inverse schedule): from alpha_bar_0 = 0.99915; coarser: from 1."""
    a = alphas_cumprod_from_betas()
    assert float(first_alpha(a, 1)) == pytest.approx(1 - 0.00085) and float(first_alpha(a, 1)) == float(a[0])
    assert float(first_alpha(a, 2)) == 1.0 and float(first_alpha(a, 10)) == 1.0
