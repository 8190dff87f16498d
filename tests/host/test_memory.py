"""The optimisation's memory (nodes/memory.py): low_memory's automatic choice, what ComfyUI is told before
sampling, the estimate against what a run holds, old workflows' boolean low_memory, out-of-memory errors."""

import asyncio
from types import SimpleNamespace

import pytest
import torch

from dev.support.comfy_run import PromptError, with_leaf_sinks
from dev.support.host import pack_module
from tests.host import prompts

pytestmark = pytest.mark.host


def validate(host, p):
    return asyncio.run(host._execution.validate_prompt("test-validate", with_leaf_sinks(p), None))


def test_old_boolean_low_memory_still_validates_and_means_on_or_auto(host):
    """Workflows and API prompts saved when low_memory was a boolean pass ComfyUI's validation (a combo rejects
    values outside its options unless the node validates them itself); true means on, false (the old default)
    auto. Anything else is refused at validation, naming the input."""
    memory = pack_module("nodes.memory")
    for value in (True, False, "auto", "on", "off"):
        assert validate(host, prompts.full(low_memory=value))[0], value
    assert [memory.memory_mode(v) for v in (True, False, "off")] == ["on", "auto", "off"]
    p = prompts.full(low_memory="maybe")
    p["sampler"] = {"class_type": "AnyI2VSampler", "inputs": dict(prompts.SETTINGS, trajectory=["traj", 0],
                                                                 sampler_name="ddim", low_memory=1)}
    ok, error, _, node_errors = validate(host, p)
    assert not ok
    text = str(node_errors)
    assert "low_memory" in text and "'maybe'" in text and "auto, on, off" in text and "aks" in node_errors
    assert "sampler" in node_errors and "got 1" in str(node_errors["sampler"])


def sample(host, monkeypatch, free, measure=False, **settings):
    """AnyI2V sampling with low_memory auto while the device has `free` bytes free; (samples, the optimiser,
    [(estimate, measured peak)] of the first gradient pass when `measure`)."""
    import comfy.sample
    import comfy.samplers

    from dev.support.tensor_meter import LiveBytes

    memory, optimizer, sampler_mod = pack_module("nodes.memory"), pack_module("nodes.optimizer"), pack_module("nodes.sampler")
    monkeypatch.setattr(memory.MemoryPlan, "free", lambda self: free)
    peaks, optimisers = [], []
    real = optimizer.Optimizer.gradient

    def metered(self, z, *args, **kwargs):
        optimisers.append(self)
        if not measure or peaks:
            return real(self, z, *args, **kwargs)
        meter = LiveBytes()
        with meter:
            out = real(self, z, *args, **kwargs)
        frames, hw, checkpoint = self.forward_size
        peaks.append((self.memory.need(frames, hw, checkpoint), meter.peak, checkpoint))
        return out

    monkeypatch.setattr(optimizer.Optimizer, "gradient", metered)
    p = prompts.full(frames=8)
    model, traj, pos, neg = (out[0] for out in host.node_outputs(p, ["inj", "traj", "pos", "neg"]))
    values = dict(prompts.SETTINGS, iterations=2, low_memory="auto", **settings)
    sampler = sampler_mod.TrajectorySampler(sampler_mod.base_ksampler("ddim"), sampler_mod.Settings(**values), traj)
    latent = torch.zeros(8, 4, 8, 8)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 3)
    with torch.inference_mode():
        out = comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 3), 4.0, sampler, sigmas, pos, neg,
                                         latent, seed=3)
    assert optimisers and all(o is optimisers[0] for o in optimisers)  # one optimiser per run
    return out, optimisers[0], peaks


def test_auto_checkpoints_exactly_when_the_estimate_does_not_fit(host, monkeypatch):
    """auto: the estimate of a gradient pass over the latent's 8 frames against the free memory; checkpointing
    when it does not fit, off when it does, the same video either way. The estimate against the live tensor
    bytes the pass holds (this CPU's attention keeps its attention matrices; the stand-in motion module is
    smaller than AnimateDiff's, which the estimate assumes)."""
    roomy, opt_off, off = sample(host, monkeypatch, free=1 << 40, measure=True)
    need = opt_off.memory.need(8, (8, 8), False)
    tight, opt_on, on = sample(host, monkeypatch, free=need, measure=True)  # with the margins it does not fit
    assert opt_off.forward_size == (8, (8, 8), False) and opt_on.forward_size == (8, (8, 8), True)
    assert torch.allclose(roomy, tight, atol=1e-5)
    for estimate, measured, checkpoint in off + on:
        print(f"\ncheckpointing {checkpoint}: estimate {estimate / 2**20:.2f} MiB, measured {measured / 2**20:.2f} MiB "
              f"({estimate / measured - 1:+.0%})")
        assert 0.7 * measured <= estimate <= 1.6 * measured
    assert on[0][1] < 0.7 * off[0][1]  # what checkpointing saves here


def test_comfyui_frees_other_models_before_sampling(host, monkeypatch):
    """The PREPARE_SAMPLING wrapper runs after ComfyUI loaded the models for plain sampling and before the first
    optimisation; when the device lacks what the chosen variant needs it unloads other models (never the sampled
    ones): here a GPU faked around a real plan, with 8 frames at 64x64."""
    import comfy.model_management as mm

    memory, optimizer = pack_module("nodes.memory"), pack_module("nodes.optimizer")
    order = []
    real_room, real_optimize = memory.MemoryPlan.make_room, optimizer.Optimizer.optimize
    monkeypatch.setattr(memory.MemoryPlan, "make_room",
                        lambda self, model, models, shape: order.append(("room", tuple(shape), self.mode)) or
                        real_room(self, model, models, shape))
    monkeypatch.setattr(optimizer.Optimizer, "optimize",
                        lambda self, *a, **k: order.append(("optimise", self.memory.mode)) or real_optimize(self, *a, **k))
    host.node_output(prompts.full(iterations=1, steps=2, low_memory="on"), "aks")
    assert order[0] == ("room", (4, 4, 8, 8), "on") and order[1] == ("optimise", "on"), order

    plan = memory.MemoryPlan("auto", host.node_output(prompts.full(), "inj")[0], [4, 6], 16)
    default, low = plan.need(8, (64, 64), False), plan.need(8, (64, 64), True)
    assert low < default
    ours = SimpleNamespace(load_device=torch.device("cuda"), model_size=lambda: 1000)
    other = SimpleNamespace(model=SimpleNamespace(), device=torch.device("cuda"))
    loaded = SimpleNamespace(model=ours, device=torch.device("cuda"))
    freed = []
    monkeypatch.setattr(mm, "current_loaded_models", [loaded, other])
    monkeypatch.setattr(mm, "free_memory", lambda need, device, keep_loaded=(): freed.append((need, keep_loaded)))
    monkeypatch.setattr(mm, "extra_reserved_memory", lambda: 0)
    for total, free, want in ((10 * default, 0, default), (default, 0, low), (10 * default, 10 * default, None)):
        monkeypatch.setattr(mm, "get_total_memory", lambda device, total=total: total + 1000)
        monkeypatch.setattr(memory.MemoryPlan, "free", lambda self, free=free: free)
        freed.clear()
        plan.make_room(ours, [], (8, 4, 64, 64))
        if want is None:
            assert freed == []  # enough is free: nothing unloaded
        else:
            assert freed == [(int(want * memory.SAFETY), [loaded])]


@pytest.mark.parametrize("low_memory, advice", [("off", "set low_memory to auto or on"),
                                                ("on", "context options")])
def test_out_of_memory_in_the_optimisation_names_what_would_help(host, monkeypatch, low_memory, advice):
    """ComfyUI sees the same exception type (it reports out-of-memory errors as such) with what would help."""
    optimizer = pack_module("nodes.optimizer")
    monkeypatch.setattr(optimizer.Optimizer, "queries", lambda *a, **k: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")))
    with pytest.raises(PromptError) as caught:
        host.node_output(prompts.full(low_memory=low_memory), "aks")
    assert caught.value.error["exception_type"].endswith("OutOfMemoryError")
    message = caught.value.error["exception_message"]
    assert "out of memory in the latent optimisation over 4 frames" in message and advice in message, message
    assert "Tried to allocate 9.00 GiB" in message
