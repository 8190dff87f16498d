"""AnyI2V inside AnimateDiff-Evolved's sampling contract (the stand-in reproduces it; see dev/standin_ade).

ADE replaces comfy.samplers.sampling_function while it samples and does its per-step set-up there (ad_params,
keyframes, special model features); the optimisation's gradient forward must go through that entry point."""

import pytest
import torch

from tests.host import prompts
from tests.host.test_sampler import run_sampler

pytestmark = pytest.mark.host


def test_standin_windows_are_ades(host):
    """The stand-in's window lists, as ADE 1.5.7's create_windows_static_standard / create_windows_uniform_standard
    give them (read off ADE's own functions; the stand-in matched them on 465k cases when written)."""
    from dev.standin_ade.context import static_windows, uniform_windows

    span = lambda ws: [(w[0], w[-1]) for w in ws]  # noqa: E731
    assert span(static_windows(24, 16, 4)) == [(0, 15), (8, 23)]
    assert span(static_windows(32, 16, 4)) == [(0, 15), (12, 27), (16, 31)]
    assert [span(uniform_windows(24, 16, 4, 1, step)) for step in range(3)] == [
        [(0, 15), (8, 23)], [(8, 23), (0, 15)], [(6, 21), (8, 23), (0, 15)]]
    assert uniform_windows(40, 16, 4, 2, 3) == [  # stride 2: windows of every other frame too
        list(range(24, 40)), list(range(16)), list(range(2, 18)), list(range(14, 30)), list(range(9, 40, 2)), list(range(1, 17))]


def effect_prompt(effect: bool, motion: bool = True):
    """The AnyI2V prompt with an explicit AnimateDiff schedule; optionally an all-zero per-frame effect mask on the
    motion model (ADE_MultivalDynamic with mask_optional), or no motion model at all."""
    p = prompts.full()
    p["ade"]["inputs"]["beta_schedule"] = "sqrt_linear (AnimateDiff)"
    if not motion:
        del p["ade"]["inputs"]["m_models"], p["mm"], p["apply"]
    elif effect:
        p["zero"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
        p["effect"] = {"class_type": "ADE_MultivalDynamic", "inputs": {"float_val": 1.0, "mask_optional": ["zero", 0]}}
        p["apply"]["inputs"]["effect_multival"] = ["effect", 0]
    return p


def test_features_that_read_ad_params_in_the_model_call_act_in_the_gradient_forward(host):
    """A per-frame effect mask is prepared in the model call from ad_params (as ADE prepares AnimateLCM-I2V,
    CameraCtrl and MotionCtrl inputs): the optimisation's forward gets it too. An all-zero effect turns the
    motion modules off, so every alignment loss equals that of the same prompt without motion modules."""
    _, zero_effect = run_sampler(host, effect_prompt(effect=True), iterations=2)
    _, no_motion = run_sampler(host, effect_prompt(effect=False, motion=False), iterations=2)
    _, with_motion = run_sampler(host, effect_prompt(effect=False), iterations=2)
    values = lambda losses: torch.tensor([v for _, _, v in losses])  # noqa: E731
    assert len(zero_effect) == len(no_motion) == len(with_motion) > 0
    assert torch.allclose(values(zero_effect), values(no_motion), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(values(with_motion), values(no_motion), rtol=1e-3)


def order_prompt(inject_first: bool, end_percent=0.16):
    """AnyI2V on 6 steps of ADE's schedule (normal scheduler): end_percent 0.16 covers 1 step there, 2 on the
    checkpoint's own schedule. Inject Features placed after Use Evolved Sampling (the usual order) or before it."""
    p = prompts.full(steps=6, opt_percent=0.16, iterations=1)
    p["inj"]["inputs"]["end_percent"] = end_percent
    if inject_first:
        p["inj"]["inputs"]["model"] = ["ckpt", 0]
        p["ade"]["inputs"]["model"] = ["inj", 0]
        p["aks"]["inputs"]["model"] = ["ade", 0]
    return p


def test_node_order_does_not_change_the_result(host):
    """Use Evolved Sampling patches model_sampling; Inject Features reads end_percent on the schedule of the
    sampling run, so both orders inject the same steps (reading it on its input MODEL injected 2 steps instead
    of 1 when placed first)."""
    after = host.node_output(order_prompt(inject_first=False), "aks")[0]["samples"].clone()
    before = host.node_output(order_prompt(inject_first=True), "aks")[0]["samples"].clone()
    assert torch.equal(after, before)
    two_steps = host.node_output(order_prompt(inject_first=False, end_percent=0.3), "aks")[0]["samples"]
    assert not torch.allclose(after, two_steps)  # the step window matters at this size
