"""The AnyI2V sampler through the real executor (tiny model, ADE stand-in temporal module)."""

import re

import pytest
import torch

from dev.support.comfy_run import PromptError
from dev.support.host import pack_module
from tests.host import prompts

pytestmark = pytest.mark.host


def samples(host, p, node="aks"):
    return host.node_output(p, node)[0]["samples"].clone()


def run_sampler(host, p, progress=None, model=None, steps=4, scheduler="normal", **settings):
    """Sample with the executor-loaded models and an AnyI2V SAMPLER; return (samples, losses)."""
    import comfy.sample
    import comfy.samplers

    sampler_mod = pack_module("nodes.sampler")
    found = host.node_outputs(p, ["inj", "traj", "pos", "neg"])
    model = model or found[0][0]
    traj, pos, neg = (out[0] for out in found[1:])
    values = dict(prompts.SETTINGS, **settings)
    sampler = sampler_mod.TrajectorySampler(sampler_mod.base_ksampler("ddim"), sampler_mod.Settings(**values), traj,
                                        progress=progress)
    latent = torch.zeros(4, 4, 8, 8)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    with torch.inference_mode():
        out = comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 3), 4.0, sampler, sigmas, pos, neg,
                                         latent, seed=3)
    return out, sampler.losses


@pytest.mark.parametrize("lr", [0.01, 0.003])
def test_adamw_fresh_moves_z_t_by_lr_per_element_per_iteration(host, lr):
    """The reference optimises diffusers' z_t with a fresh AdamW each iteration: a sign step of lr per element.
    The UNet's input IS z_t = x / sqrt(1 + sigma^2) (ComfyUI's own input scaling), so between the gradient
    forwards of one step its mean |change| per element must be lr, at every sigma of the window (the pack used
    to step x by lr: 0.04 lr in z_t at the first step here)."""
    import comfy.patcher_extension

    seen: dict[float, list[torch.Tensor]] = {}

    def record(executor, *args, **kwargs):
        if torch.is_grad_enabled():  # the optimisation's forwards (the CFG steps run without gradient)
            seen.setdefault(round(float(args[5]["sigmas"].max()), 6), []).append(args[0].detach().clone())
        return executor(*args, **kwargs)

    p = prompts.full()
    model = host.node_output(p, "inj")[0].clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_record_z", record)
    run_sampler(host, p, model=model, steps=8, iterations=5, lr=lr)
    assert len(seen) >= 2, f"the window should hold at least two sigmas, got {sorted(seen)}"
    for sigma, inputs in seen.items():
        assert len(inputs) == 5
        steps = [float((b - a).abs().mean()) for a, b in zip(inputs[:-1], inputs[1:], strict=True)]
        assert all(abs(s - lr) <= 0.03 * lr for s in steps), (sigma, [s / lr for s in steps])


def test_loss_decreases_over_the_iterations_of_a_step(host):
    _, losses = run_sampler(host, prompts.full(), iterations=6, lr=0.05)
    step0 = [v for s, _, v in losses if s == 0]
    assert len(step0) == 6
    assert step0[-1] < step0[0]


def test_lr_zero_equals_the_base_sampler_bit_for_bit(host):
    p = prompts.full(lr=0.0)
    anyi2v = samples(host, p)
    plain = prompts.ksampler(dict(p), ("inj", 0), seed=3, steps=4, cfg=4.0, sampler="ddim", scheduler="normal")
    assert torch.equal(anyi2v, samples(host, plain, "ks"))


def test_optimisation_moves_box_features_towards_frame_one(host):
    """In the last optimised step, the alignment distance (Eq. 8) is lower than without updates."""
    _, off = run_sampler(host, prompts.full(), iterations=5, lr=0.0)
    _, on = run_sampler(host, prompts.full(), iterations=5, lr=0.1)
    last = max(s for s, _, _ in on)
    assert last >= 1, "the window should hold at least two steps"
    final_on = [v for s, _, v in on if s == last][-1]
    final_off = [v for s, _, v in off if s == last][-1]
    assert final_on < 0.95 * final_off, (final_on, final_off)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_samplercustomadvanced_form_and_cfg(host, cfg):
    p = prompts.trajectory(prompts.inject(prompts.invert(prompts.base())))
    p["sampler"] = {"class_type": "AnyI2VSampler", "inputs": dict({"trajectory": ["traj", 0], "sampler_name": "euler"}, **prompts.SETTINGS)}
    p["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
    p["guider"] = {"class_type": "CFGGuider", "inputs": {"model": ["inj", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": cfg}}
    p["sched"] = {"class_type": "BasicScheduler", "inputs": {"model": ["inj", 0], "scheduler": "normal", "steps": 4, "denoise": 1.0}}
    p["sca"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0],
                                                                 "sigmas": ["sched", 0], "latent_image": ["lat", 0]}}
    a = host.node_output(p, "sca")[0]["samples"].clone()
    b = host.node_output(dict(p), "sca")[0]["samples"]
    assert a.shape == (4, 4, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_deterministic_and_model_unchanged(host):
    plain = prompts.ksampler(prompts.base(), ("ade", 0), node="ks")
    before = samples(host, plain, "ks")
    a = samples(host, prompts.full())
    b = samples(host, prompts.full(seed=3))
    assert torch.equal(a, b)
    after = samples(host, dict(plain, ks=dict(plain["ks"], inputs=dict(plain["ks"]["inputs"]))), "ks")
    assert torch.equal(before, after)
    unet = host.node_output(plain, "ckpt")[0].model.diffusion_model
    assert all(not p.requires_grad or p.is_inference() for p in unet.parameters())
    assert not any(m._forward_hooks for m in unet.modules())
    assert not any("forward" in vars(m) for m in unet.modules())


def test_gradients_flow_through_loaded_weights_without_copying_them(host):
    """The executor loads weights as inference tensors; the optimisation aliases them, then puts them back."""
    grad = pack_module("nodes.grad")
    unet = host.node_output(prompts.base(), "ckpt")[0].model.diffusion_model
    originals = {name: p for name, p in unet.named_parameters()}
    assert all(p.is_inference() for p in originals.values())
    with torch.inference_mode(False), torch.enable_grad(), grad.trainable_weights([unet]) as swapped:
        assert swapped == len(originals)
        for name, p in unet.named_parameters():
            assert not p.is_inference() and p.data_ptr() == originals[name].data_ptr(), name
        x = torch.randn(1, 4, 8, 8, requires_grad=True)
        (g,) = torch.autograd.grad(unet.input_blocks[0][0](x).square().sum(), x)
    assert g.abs().sum() > 0
    assert all(p is originals[name] for name, p in unet.named_parameters())


def test_low_memory_gives_the_same_result(host):
    a = samples(host, prompts.full(low_memory=False))
    b = samples(host, prompts.full(low_memory=True))
    assert torch.allclose(a, b, atol=1e-5)


def test_feature_view_and_loss_masks(host):
    out = host.node_output(prompts.full(), "aks")
    view, masks = out[2], out[3]
    assert view.shape == (4, 64, 128, 3) and 0 <= float(view.min()) and float(view.max()) <= 1  # two blocks
    assert view[..., :64, :].std() > 0.05 and view[..., 64:, :].std() > 0.05
    assert not torch.equal(view[..., :64, :], view[..., 64:, :])
    assert masks.shape == (4, 64, 64) and all(masks[f].sum() > 0 for f in range(4))
    outside = masks[0].clone()
    outside[20:44, 16:44] = 0  # frame 0's box in image pixels (prompts.TRAJ)
    assert outside.sum() == 0
    off = host.node_output(prompts.full(iterations=0), "aks")
    assert off[2].abs().sum() == 0 and off[3].sum() == 0


@pytest.mark.parametrize("low_memory", [False, True])
def test_iterations_free_their_graphs(host, monkeypatch, low_memory):
    """Checkpointed layers keep their transformer_options (and so the query sink) in the graph: a sink still
    holding graph tensors made a cycle through C++ that gc never frees, one graph per iteration. Shown on the
    bench's model built outside inference mode (where it showed), at a small size."""
    import gc
    import warnings

    import comfy.sample
    import comfy.samplers

    from dev.support.bench_model import build_model

    patcher, video, pos, neg, vae = build_model(channels=32)
    invert, inject, sampler_mod = pack_module("nodes.invert"), pack_module("nodes.inject"), pack_module("nodes.sampler")
    traj = pack_module("core.trajectory").Trajectory.from_reference_json(
        {"bounding_box": [[16, 16, 40, 48]], "center_traj": [[[28, 32], [36, 32]]], "width": 64, "height": 64})
    counts = []

    def probe():
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            counts.append(sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor)))

    latent = torch.zeros(4, 4, 8, 8)
    with torch.inference_mode():
        image = torch.zeros(1, 64, 64, 3)
        image[:, 16:48, 16:48] = 1.0
        (features,) = invert.InvertCondition.execute(patcher, vae, image, pos, 21, 5, "sqrt_linear (AnimateDiff)",
                                                     invert.DEFAULT_QUERY_NAMES, invert.DEFAULT_RES_NAMES).result
        model = video.clone()
        inject.apply_injection(model, features)
        settings = sampler_mod.Settings(**dict(prompts.SETTINGS, iterations=5, low_memory=low_memory))
        sampler = sampler_mod.TrajectorySampler(sampler_mod.base_ksampler("ddim"), settings, traj, progress=probe)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 4)[:2]
        comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 3), 4.0, sampler, sigmas, pos, neg, latent, seed=3)
    assert len(counts) == 5 and counts[-1] <= counts[1], counts


def test_sixteen_frames(host):
    p = prompts.full(frames=16, iterations=1, steps=2)
    out = host.node_output(p, "aks")
    assert out[0]["samples"].shape == (16, 4, 8, 8)
    assert out[1].shape[-1] == 3  # the loss plot


@pytest.mark.parametrize("change, message", [
    ({"frames": 1}, "at least 2 frames"),
    ({"query_blocks": "Query 0.1"}, "has no attention"),
])
def test_bad_inputs_fail_clearly(host, change, message):
    frames = change.pop("frames", 4)
    p = prompts.full(frames=frames, **change)
    with pytest.raises(PromptError, match=message):
        host.run(p)


def test_first_box_outside_is_a_clear_error(host):
    text = prompts.TRAJ.replace("[[16, 20, 44, 44]]", "[[16, 20, 44, 44]]")
    p = prompts.full()
    p["traj"]["inputs"]["trajectory"] = text.replace('"width": 64', '"width": 640').replace('"height": 64', '"height": 640')
    # scaled 10x down to the 64 px image the box stays inside; move it out instead
    p["traj"]["inputs"]["trajectory"] = text.replace("[[16, 20, 44, 44]]", "[[-90, -90, -70, -70]]")
    with pytest.raises(PromptError, match="outside"):
        host.run(p)


def test_cond_and_uncond_run_apart(host, monkeypatch):
    """A negative prompt too long to batch with the positive (over 4x its tokens) makes ComfyUI run the
    two CFG branches in separate UNet calls: injection acts in the conditional call only."""
    from tests.host.test_inject import AttnRecorder

    inject = pack_module("nodes.inject")
    recorder = AttnRecorder(inject)
    monkeypatch.setattr(inject, "optimized_attention", recorder)
    p = prompts.full(steps=2, iterations=0)  # only the CFG passes call attention here
    p["neg"]["inputs"]["text"] = "blurry, low quality, " * 120
    host.run(p)
    feats = host.node_output(p, "inv")[0]
    first_step = recorder.calls[:8]  # step 0: two UNet calls (one per branch) x 4 injected blocks
    assert all(c[0].shape[0] == 4 for c in recorder.calls)  # never batched together
    carries = [torch.equal(q[0], feats.queries[b][0].to(q)) for (q, _, _), b in zip(first_step, [3, 4, 6, 7] * 2, strict=True)]
    assert carries.count(True) == 4 and carries.count(False) == 4  # the cond call's 4 blocks, not the uncond's


def test_sampler_with_features_input_and_a_plain_model(host):
    """AnyI2V Sampler given the features installs the injection for the run only."""
    p = prompts.trajectory(prompts.invert(prompts.base()))
    p["sampler"] = {"class_type": "AnyI2VSampler", "inputs": dict({"trajectory": ["traj", 0], "sampler_name": "ddim",
                                                                   "features": ["inv", 0]}, **prompts.SETTINGS)}
    p["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}}
    p["guider"] = {"class_type": "CFGGuider", "inputs": {"model": ["ade", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 4.0}}
    p["sched"] = {"class_type": "BasicScheduler", "inputs": {"model": ["ade", 0], "scheduler": "normal", "steps": 4, "denoise": 1.0}}
    p["sca"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0],
                                                                 "sigmas": ["sched", 0], "latent_image": ["lat", 0]}}
    via_features = host.node_output(p, "sca")[0]["samples"].clone()
    injected = prompts.inject(dict(p))
    injected["guider"] = dict(p["guider"], inputs=dict(p["guider"]["inputs"], model=["inj", 0]))
    injected["sampler"] = dict(p["sampler"], inputs={k: v for k, v in p["sampler"]["inputs"].items() if k != "features"})
    via_model = host.node_output(injected, "sca")[0]["samples"]
    assert torch.allclose(via_features, via_model, atol=1e-5)
    model = host.node_output(p, "ade")[0]
    assert pack_module("nodes.inject").injection_state(model) is None  # the MODEL itself was not patched


@pytest.mark.parametrize("steps, opt_percent", [(4, 0.24), (8, 0.24), (6, 0.0)])
def test_the_first_step_is_always_optimised_and_injected(host, monkeypatch, caplog, steps, opt_percent):
    """AnimateLCM-style few-step schedules: on ADE's schedule with ddim_uniform, 4 steps have no step inside
    opt_percent 0.24 or end_percent 0.16 (the first is at t = 751); the first step is optimised anyway, and its
    ordinary CFG pass is injected (frame 0's query is the condition's); the next step's is not."""
    from tests.host.test_inject import AttnRecorder

    inject, sampler_mod = pack_module("nodes.inject"), pack_module("nodes.sampler")
    recorder = AttnRecorder(inject)
    monkeypatch.setattr(inject, "optimized_attention", recorder)
    p = prompts.full()
    feats = host.node_output(p, "inv")[0]
    recorder.calls.clear()
    caplog.set_level("INFO", logger="AnyI2V")
    _, losses = run_sampler(host, p, steps=steps, scheduler="ddim_uniform", opt_percent=opt_percent, iterations=2)
    assert sorted({s for s, _, _ in losses}) == [0] and len(losses) == 2
    assert re.search(r"optimising the latent before steps 0 of \d+ \(2 iterations each\)", caplog.text), caplog.text
    assert sampler_mod.loss_title(losses).startswith("optimised steps 0: ")
    cfg_passes = [q for q, _, _ in recorder.calls if q.shape[0] == 8]  # cond + uncond of 4 frames; 4 blocks a pass
    injected = [any(torch.equal(q[row], feats.queries[b][0].to(q)) for row in (0, 4))
                for q, b in zip(cfg_passes, [3, 4, 6, 7] * (len(cfg_passes) // 4), strict=True)]
    assert injected[:4] == [True] * 4 and not any(injected[4:]), injected


def test_loss_plot_names_the_optimised_steps(host):
    sampler_mod = pack_module("nodes.sampler")
    losses = [(0, 0, 2.0), (0, 1, 1.5), (1, 0, 1.4), (1, 1, 1.0), (2, 0, 0.9)]
    assert sampler_mod.loss_title(losses) == "optimised steps 0, 1, 2: alignment loss 2 -> 0.9"
    assert sampler_mod.loss_title([]) == "no optimisation ran"
    plot = sampler_mod.loss_plot(losses)
    assert plot.shape == (1, 192, 384, 3) and not torch.equal(plot, sampler_mod.loss_plot(losses[:2]))


def progress_prompt(form, steps=8, iterations=2):
    """AnyI2V on 8 ddim_uniform steps (ADE's schedule: only the first lies in opt_percent 0.24), in the one-node
    form or as a SAMPLER in SamplerCustomAdvanced."""
    settings = dict(prompts.SETTINGS, opt_percent=0.24, iterations=iterations)
    if form == "ksampler":
        return prompts.full(steps=steps, scheduler="ddim_uniform", **settings), "aks"
    p = prompts.trajectory(prompts.inject(prompts.invert(prompts.base())))
    p["sampler"] = {"class_type": "AnyI2VSampler", "inputs": dict(settings, trajectory=["traj", 0], sampler_name="ddim")}
    p["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
    p["guider"] = {"class_type": "CFGGuider", "inputs": {"model": ["inj", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 4.0}}
    p["sched"] = {"class_type": "BasicScheduler", "inputs": {"model": ["inj", 0], "scheduler": "ddim_uniform", "steps": steps, "denoise": 1.0}}
    p["sca"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0],
                                                                 "sigmas": ["sched", 0], "latent_image": ["lat", 0]}}
    return p, "sca"


@pytest.mark.parametrize("form", ["ksampler", "samplercustomadvanced"])
def test_progress_counts_every_step_and_iteration(host, monkeypatch, capsys, form):
    """What the UI gets (ComfyUI's progress hook, per node) and the console bar: 8 steps end at 8/8 (the console
    showed 7/7 when the first step was driven apart); the one-node form counts 8 + 2 iterations as 10 units, the
    SAMPLER form moves its step bar by a third of a step per iteration before step 0."""
    import comfy.utils
    from comfy_execution.utils import get_executing_context

    seen = []

    def hook(value, total, preview, node_id=None, prompt_id=None):
        context = get_executing_context()
        seen.append((context.node_id if context else node_id, value, total))

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_ENABLED", True)
    p, node = progress_prompt(form)
    capsys.readouterr()
    host.node_output(p, node)
    mine = [(v, t) for n, v, t in seen if n == node]
    values = [v for v, _ in mine]
    assert values == sorted(values) and mine[-1][0] == mine[-1][1]
    if form == "ksampler":
        assert {t for _, t in mine} == {10} and values == list(range(1, 11))
    else:
        assert {t for _, t in mine} == {8} and values[-1] == 8
        assert [round(v, 3) for v in values if v < 1] == [0.333, 0.667]
    console = capsys.readouterr().err
    assert "8/8" in console and "7/7" not in console, console[-400:]
