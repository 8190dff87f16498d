"""Every base sampler the AnyI2V nodes offer, against ComfyUI's own (tiny models, ADE stand-in).

The list is read from the nodes, so a sampler added to it is tested here without touching this file. The
nodes are called directly (their execute) on MODEL, conditioning and trajectory made once by the executor:
the sampling itself is the real ComfyUI's."""

import gc
import weakref

import pytest
import torch

from dev.support.host import host_available, pack_module
from tests.host import prompts

pytestmark = pytest.mark.host

SEED, CFG, SCHEDULER = 3, 4.0, "normal"
OLD_NAMES = ["ddim", "euler", "euler_ancestral", "heun", "dpm_2", "lcm", "dpmpp_2m", "uni_pc"]  # before issue 21


def offered(node) -> list[str]:
    schema = node.define_schema()
    return list(next(i for i in schema.inputs if i.id == "sampler_name").options)


# 25 steps for these (the list before issue 21 and one sampler of each other kind: two-step history with a
# Brownian tree, CFG++ with history and noise, a second evaluation of the corrected latent, coefficients
# tabulated over the whole schedule, three-stage history), 4 and 8 for every offered sampler
LONG_RUNS = OLD_NAMES + ["dpmpp_3m_sde", "res_multistep_ancestral_cfg_pp", "sa_solver_pece", "deis", "er_sde"]


def pytest_generate_tests(metafunc):
    if "sampler_name" not in metafunc.fixturenames:
        return
    names = offered(pack_module("nodes.sampler").AnyI2VKSampler) if host_available() else ["(no host)"]
    if "steps" in metafunc.fixturenames:
        metafunc.parametrize("sampler_name, steps", [(n, s) for n in names for s in (4, 8, 25)
                                                     if s < 25 or n in LONG_RUNS])
    else:
        metafunc.parametrize("sampler_name", names)


class Graph:
    def __init__(self, host):
        p = prompts.full(frames=2)
        (model,), (pos,), (neg,), (lat,), (traj,) = host.node_outputs(p, ["inj", "pos", "neg", "lat", "traj"])
        self.model, self.pos, self.neg, self.latent, self.traj = model, pos, neg, lat, traj


@pytest.fixture(scope="module")
def graph(host):
    return Graph(host)


def settings(**changes):
    return dict(prompts.SETTINGS, **dict({"iterations": 1, "lr": 0.0, "opt_percent": 0.5, "pca_dim": 8}, **changes))


def core_ksampler(g, name, steps):
    import nodes

    with torch.inference_mode():
        return nodes.KSampler().sample(g.model, SEED, steps, CFG, name, SCHEDULER, g.pos, g.neg, g.latent)[0]["samples"]


def anyi2v_ksampler(g, name, steps, **changes):
    node = pack_module("nodes.sampler").AnyI2VKSampler
    with torch.inference_mode():
        out = node.execute(g.model, SEED, steps, CFG, name, SCHEDULER, g.pos, g.neg, g.latent, g.traj, 1.0,
                           **settings(**changes))
    return out.result[0]["samples"]


def sampler_custom(g, sampler, steps):
    from comfy_extras.nodes_custom_sampler import BasicScheduler, SamplerCustom

    with torch.inference_mode():
        sigmas = BasicScheduler.execute(g.model, SCHEDULER, steps, 1.0).result[0]
        return SamplerCustom.execute(g.model, True, SEED, CFG, g.pos, g.neg, sampler, sigmas, g.latent).result[0]["samples"]


def core_sampler(name):
    from comfy_extras.nodes_custom_sampler import KSamplerSelect

    return KSamplerSelect.execute(name).result[0]


def anyi2v_sampler(g, name, **changes):
    node = pack_module("nodes.sampler").AnyI2VSampler
    return node.execute(g.traj, name, **settings(**changes)).result[0]


def test_both_nodes_offer_the_same_list(host):
    """ddim (the default) first, every name of the list before (workflows keep working), the rest of ComfyUI's
    list but for the excluded samplers, whose reasons the README gives."""
    from pathlib import Path

    import comfy.samplers

    sampler_mod = pack_module("nodes.sampler")
    names = offered(sampler_mod.AnyI2VKSampler)
    assert names == offered(sampler_mod.AnyI2VSampler) == sampler_mod.BASE_SAMPLERS
    assert names[0] == "ddim" and set(OLD_NAMES) <= set(names) and set(LONG_RUNS) <= set(names)
    left_out = [n for n in comfy.samplers.KSampler.SAMPLERS if n not in names]
    assert sorted(left_out) == sorted(sampler_mod.EXCLUDED_SAMPLERS) == ["dpm_adaptive", "dpm_fast"]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert all(f"`{n}`" in readme for n in left_out)


_core_runs: dict[tuple[str, int], torch.Tensor] = {}


def core_custom(g, name, steps):
    """Core KSamplerSelect in SamplerCustom, run once per sampler and step count in this module."""
    if (name, steps) not in _core_runs:
        _core_runs[name, steps] = sampler_custom(g, core_sampler(name), steps)
    return _core_runs[name, steps]


def test_lr_zero_gives_the_core_sampler_bit_for_bit(graph, sampler_name, steps):
    """With nothing moved (lr 0; the optimisation runs its forward and backward: iterations 1), both forms give
    the core sampler's latent bit for bit: AnyI2V KSampler as KSampler (the same schedule, with the penultimate
    sigma KSampler drops for dpm_2 and uni_pc), AnyI2V Sampler in SamplerCustom as KSamplerSelect in
    SamplerCustom. Every offered sampler at 4 and 8 steps, the samplers of LONG_RUNS at 25 too (all 40 were
    measured exact at 25 steps when this was written). Before issue 21 the sampler's noise and multistep
    history restarted at every optimised step (8 steps: euler_ancestral 0.31, lcm 0.35, uni_pc 0.92, dpmpp_2m
    1.1e-3 relative L2) and dpm_2 missed KSampler's schedule (6.9e-4). 25 steps optimise the first two only."""
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import BasicScheduler

    opt_percent = 0.08 if steps == 25 else 0.5
    core = core_ksampler(graph, sampler_name, steps)
    ours = anyi2v_ksampler(graph, sampler_name, steps, opt_percent=opt_percent)
    assert torch.equal(ours, core), ("AnyI2V KSampler", float((ours - core).norm() / core.norm()))
    # SamplerCustom with KSamplerSelect runs KSampler's computation when BasicScheduler gives KSampler's sigmas
    # (the same noise, guider and sampler object): its result is run only where the schedules differ
    custom_sigmas = BasicScheduler.execute(graph.model, SCHEDULER, steps, 1.0).result[0]
    ksampler_sigmas = comfy.samplers.KSampler(graph.model, steps, "cpu", sampler=sampler_name, scheduler=SCHEDULER).sigmas
    if torch.equal(custom_sigmas, ksampler_sigmas):
        _core_runs[sampler_name, steps] = core
    else:
        assert sampler_name in comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    core = core_custom(graph, sampler_name, steps)
    sampler = anyi2v_sampler(graph, sampler_name, opt_percent=opt_percent)
    ours = sampler_custom(graph, sampler, steps)
    assert torch.equal(ours, core), ("AnyI2V Sampler", float((ours - core).norm() / core.norm()))
    assert len({s for s, _, _ in sampler.losses}) >= 2, sampler.losses  # optimised after the first step too


CALLBACK_GIVES_FIRST_LATENT = {"ipndm", "ipndm_v", "deis"}  # ComfyUI 0.3.75 calls back with the run's first x


def test_the_sampler_steps_from_the_optimised_latent(graph, sampler_name, monkeypatch):
    """With lr > 0 the result moves away from the core sampler's, and in the samplers that hand the model their
    own latent, the latent the sampler holds at each optimised step (what its callback reports, right after
    the model call) is the optimised one: the update starts from it. (UniPC and SA-Solver hand the model a
    copy or a prediction: their own latent is replaced at the first step only, later steps' predictions are
    taken at the optimised latent.)"""
    import comfy.sample

    sampler_mod, optimizer = pack_module("nodes.sampler"), pack_module("nodes.optimizer")
    optimised = {}
    original = optimizer.Optimizer.optimize

    def spy(self, x, sigma, step, model_options, progress):
        out = original(self, x, sigma, step, model_options, progress)
        optimised[step] = out.clone()
        return out

    monkeypatch.setattr(optimizer.Optimizer, "optimize", spy)
    seen = {}

    def callback(step, x0, x, total):
        seen.setdefault(step, x.clone())

    from comfy_extras.nodes_custom_sampler import BasicScheduler

    sampler = anyi2v_sampler(graph, sampler_name, lr=0.05)
    with torch.inference_mode():
        sigmas = BasicScheduler.execute(graph.model, SCHEDULER, 4, 1.0).result[0]
        latent = graph.latent["samples"]
        noise = comfy.sample.prepare_noise(latent, SEED)
        ours = comfy.sample.sample_custom(graph.model, noise, CFG, sampler, sigmas, graph.pos, graph.neg, latent,
                                          callback=callback, seed=SEED)
    assert sorted(optimised) == [0, 1], sorted(optimised)
    core = core_custom(graph, sampler_name, 4)
    assert (ours - core).norm() > 1e-3 * core.norm()
    if not sampler_mod.replaces_latent(sampler.base):
        assert sampler_name in {"uni_pc", "uni_pc_bh2", "sa_solver", "sa_solver_pece"}
        return
    for step, x in optimised.items():
        if sampler_name in CALLBACK_GIVES_FIRST_LATENT:
            assert torch.equal(seen[step], optimised[0]), step
        else:
            assert torch.equal(seen[step], x), step


def interval_by_interval(name, settings_, trajectory, noise):
    """The reference for single-step samplers: the way the pack drove them before issue 21, one call of the
    base sampler per optimised step, the latent optimised before it, then one call for the rest; `noise`
    ("default" or "brownian") builds the run's noise sampler once, as the sampler would in one call, and hands
    it to every call. Exact for samplers without history (each step depends on its latent and noise only)."""
    import comfy.k_diffusion.sampling as k_sampling
    import comfy.model_patcher
    import comfy.samplers

    optimizer, inject = pack_module("nodes.optimizer"), pack_module("nodes.inject")
    base = comfy.samplers.sampler_object(name)

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = dict(extra_args)
        options = comfy.model_patcher.create_model_options_clone(extra_args["model_options"])
        state = inject.state_from_options(options)
        opt = optimizer.Optimizer(model.inner_model, settings_, trajectory, state, tuple(x.shape), extra_args.get("seed"))
        window = opt.steps(sigmas)
        to = options.setdefault("transformer_options", {})
        to[inject.RUN_END_KEY] = min(to.get(inject.RUN_END_KEY, state.end_sigma), float(sigmas[0]))
        extra_args["model_options"] = options
        kwargs = dict(base.extra_options)
        if noise == "default":
            kwargs["noise_sampler"] = k_sampling.default_noise_sampler(x, seed=extra_args.get("seed"))
        elif noise == "brownian":
            kwargs["noise_sampler"] = k_sampling.BrownianTreeNoiseSampler(
                x, sigmas[sigmas > 0].min(), sigmas.max(), seed=extra_args.get("seed"), cpu=True)
        i = 0
        while i < len(sigmas) - 1:
            if i not in window:
                return base.sampler_function(model, x, sigmas[i:], extra_args=extra_args, disable=True, **kwargs)
            x = opt.optimize(x, sigmas[i], i, options, lambda: None)
            x = base.sampler_function(model, x, sigmas[i:i + 2], extra_args=extra_args, disable=True, **kwargs)
            i += 1
        return x

    return comfy.samplers.KSAMPLER(sample, {}, base.inpaint_options)


@pytest.mark.parametrize("name, noise", [("ddim", None), ("heun", None), ("dpm_2", None), ("euler_ancestral", "default"),
                                         ("lcm", "default"), ("dpmpp_sde", "brownian")])
def test_single_step_samplers_match_the_interval_by_interval_run(graph, name, noise):
    """With lr > 0, a single-step sampler (deterministic, ancestral with its noise sampler built once, SDE with
    its Brownian tree over the whole schedule) gives bit for bit what driving it interval by interval gives: the
    optimised latent replaces the sampler's own in place before its model call and the update starts from it."""
    sampler_mod = pack_module("nodes.sampler")
    changes = {"lr": 0.05}
    ours = anyi2v_sampler(graph, name, **changes)
    reference = interval_by_interval(name, sampler_mod.Settings(**settings(**changes)), graph.traj, noise)
    a, b = sampler_custom(graph, ours, 4), sampler_custom(graph, reference, 4)
    assert sorted({s for s, _, _ in ours.losses}) == [0, 1]
    assert torch.equal(a, b), float((a - b).norm() / b.norm())
    assert not torch.equal(a, core_custom(graph, name, 4))


def test_a_run_keeps_no_model(host):
    """The SAMPLER node's output is cached by ComfyUI: after a run it holds the losses, the backward time and the
    feature view's CPU maps and boxes, not the Optimizer (guider, UNet): the MODEL is collectable once the
    caller drops it (a switched checkpoint is freed)."""
    import comfy.sample
    import comfy.samplers

    from dev.support.bench_model import build_model

    patcher, video, pos, neg, vae = build_model(channels=32)
    invert, inject, sampler_mod = pack_module("nodes.invert"), pack_module("nodes.inject"), pack_module("nodes.sampler")
    traj = pack_module("core.trajectory").Trajectory.from_reference_json(
        {"bounding_box": [[16, 16, 40, 48]], "center_traj": [[[28, 32], [36, 32]]], "width": 64, "height": 64})
    latent = torch.zeros(2, 4, 8, 8)
    with torch.inference_mode():
        image = torch.zeros(1, 64, 64, 3)
        image[:, 16:48, 16:48] = 1.0
        (features,) = invert.InvertCondition.execute(patcher, vae, image, pos, 21, 5, "sqrt_linear (AnimateDiff)",
                                                     invert.DEFAULT_QUERY_NAMES, invert.DEFAULT_RES_NAMES).result
        model = video.clone()
        inject.apply_injection(model, features)
        (sampler,) = sampler_mod.AnyI2VSampler.execute(traj, "dpmpp_2m", **settings(lr=0.05)).result
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 4)
        comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 3), 4.0, sampler, sigmas, pos, neg, latent, seed=3)
    unet, base = weakref.ref(patcher.model.diffusion_model), weakref.ref(patcher.model)
    del patcher, video, model, vae, features
    gc.collect()
    assert unet() is None and base() is None, [type(r).__name__ for r in gc.get_referrers(base())][:8] if base() else "unet"
    assert len({s for s, _, _ in sampler.losses}) == 2 and sampler.fn.result.backward_seconds > 0
    view, masks = sampler.feature_view((64, 64), 2)
    assert view.shape == (2, 64, 128, 3) and view.std() > 0.05 and masks.sum() > 0
