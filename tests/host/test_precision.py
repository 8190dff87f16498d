"""The optimisation where users compute: a non-finite loss or gradient never becomes a step, and fp16's loss scale
is handled in fp32 (halved and recomputed when the gradient overflows)."""

import logging
import math

import pytest
import torch

from dev.support.host import pack_module
from tests.host import prompts
from tests.host.test_sampler import run_sampler

pytestmark = pytest.mark.host


class _Backward(torch.autograd.Function):
    """Identity forward; backward through `fn(incoming gradient)`."""

    @staticmethod
    def forward(ctx, t, fn):
        ctx.fn = fn
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return ctx.fn(g), None


def tampered_loss(monkeypatch, tamper):
    """The optimiser's loss with `tamper(call index, loss) -> loss`; returns the list of call indices seen."""
    optimizer = pack_module("nodes.optimizer")
    real = optimizer.alignment_loss
    calls = []

    def loss(*args, **kwargs):
        calls.append(len(calls))
        return tamper(calls[-1], real(*args, **kwargs))

    monkeypatch.setattr(optimizer, "alignment_loss", loss)
    return calls


def latents_seen(model):
    """A clone of `model` recording the latent of every gradient forward (the optimisation's), in order."""
    import comfy.patcher_extension

    seen = []

    def record(executor, *args, **kwargs):
        if torch.is_grad_enabled():
            seen.append(args[0].detach().clone())
        return executor(*args, **kwargs)

    model = model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_latents", record)
    return model, seen


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_a_non_finite_loss_or_gradient_is_skipped_with_a_log_line(host, monkeypatch, caplog, what):
    nan = float("nan")

    def tamper(call, loss):
        if call != 1:  # the second iteration of the first optimised step
            return loss
        return loss * nan if what == "loss" else _Backward.apply(loss, lambda g: g * nan)

    tampered_loss(monkeypatch, tamper)
    p = prompts.full()
    model, seen = latents_seen(host.node_output(p, "inj")[0])
    with caplog.at_level(logging.INFO, logger="AnyI2V"):
        out, losses = run_sampler(host, p, model=model, iterations=3, lr=0.05)
    assert torch.isfinite(out).all()
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped == [f"AnyI2V: step 0 iteration 1 skipped: the {'alignment loss is nan' if what == 'loss' else 'gradient is not finite'} "
                       "(the UNet computes in fp32)"], skipped
    assert torch.equal(seen[1], seen[2]), "the skipped iteration moved the latent"
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[2], seen[3]), "the other iterations step"
    assert math.isnan(losses[1][2]) == (what == "loss")


def test_an_fp16_gradient_that_overflows_is_computed_again_at_half_the_loss_scale(host, monkeypatch, caplog):
    """As on an fp16 GPU (the compute dtype reported as fp16): the backward starts at a loss scale of 2^16; where the
    scaled gradient overflows (here: any gradient entering the loss above 1000 becomes inf, as fp16 would past
    65504), the scale is halved and the gradient computed again, until it fits: no iteration is lost, and the
    step is the unscaled one (the same latents as an fp32 run, whose scale is 1)."""
    optimizer = pack_module("nodes.optimizer")
    p = prompts.full()
    model, reference = latents_seen(host.node_output(p, "inj")[0])
    run_sampler(host, p, model=model, iterations=3, lr=0.05)

    monkeypatch.setattr(optimizer, "compute_dtype", lambda base: torch.float16)
    tampered_loss(monkeypatch, lambda call, loss: _Backward.apply(loss, lambda g: torch.where(g.abs() > 1000, math.inf, g)))
    model, seen = latents_seen(host.node_output(p, "inj")[0])
    with caplog.at_level(logging.INFO, logger="AnyI2V"):
        run_sampler(host, p, model=model, iterations=3, lr=0.05)
    scales = [r.getMessage() for r in caplog.records if "loss scale now" in r.getMessage()]
    assert scales[-1].endswith("loss scale now 512") and len(scales) == 7, scales  # 2^16 -> 2^9, once
    assert not any("skipped" in r.getMessage() for r in caplog.records)
    # the first iteration's forward runs 8 times (2^16 ... 2^9), at the same latent; then all as in fp32 (scale 1):
    # a scale that is a power of two is divided out exactly
    assert len(seen) == len(reference) + 7 and all(torch.equal(z, reference[0]) for z in seen[:8])
    assert all(torch.equal(a, b) for a, b in zip(seen[7:], reference, strict=True))


@pytest.fixture(scope="module")
def half_vs_fp32(host):
    """The optimisation in fp16 and bf16 against fp32, a GPU's half-precision compute emulated on this CPU
    (dev/support/half_precision.py; 4 frames, 8 steps, 4 optimised steps x 5 iterations, lr 0.01)."""
    from dev.support import half_precision

    result = half_precision.compare(host, frames=4, steps=8, opt_percent=0.5, iterations=5, lr=0.01, controls=False)
    print("\nhalf precision against fp32:", result)
    return result


def test_fp16_reaches_the_loss_fp32_reaches(half_vs_fp32):
    """Evaluated in fp32 on the fp16 run's latent, the loss each optimised step reaches is within 5 % of the fp32
    run's (measured: 2.0 % at the worst step), every loss and gradient finite, the first gradient's signs as fp32's
    on >= 95 % of the elements (measured 97.9 %)."""
    fp16 = half_vs_fp32["fp16"]
    assert fp16["finite"]
    assert fp16["loss_ratio"] <= 1.05, fp16["ratios"]
    assert fp16["sign_agreement"] >= 0.95


def test_bf16_optimises_without_a_nan_and_nearly_as_far(half_vs_fp32):
    """bf16 computes the same steps without a non-finite loss or gradient, within 15 % of fp32's loss at every
    optimised step (measured: 8.0 % at the worst) and with the first gradient's signs as fp32's on >= 90 % of the
    elements (measured 96.2 %)."""
    bf16 = half_vs_fp32["bf16"]
    assert bf16["finite"]
    assert bf16["loss_ratio"] <= 1.15, bf16["ratios"]
    assert bf16["sign_agreement"] >= 0.90


@pytest.mark.xfail(strict=True, reason="bf16 reaches fp32's loss within 8 %, not 5 %: its 8-bit mantissa inside the "
                                       "UNet costs that (README, Half precision); this turns red once it is reached")
def test_bf16_reaches_the_loss_fp32_reaches_within_5_percent(half_vs_fp32):
    assert half_vs_fp32["bf16"]["loss_ratio"] <= 1.05, half_vs_fp32["bf16"]["ratios"]
