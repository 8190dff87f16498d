"""AnyI2V Inject Features inside real sampling (tiny model, ADE stand-in, real executor)."""

import pytest
import torch

from dev.support.host import pack_module
from tests.host import prompts

pytestmark = pytest.mark.host


def sampling_prompt(inject=True, cfg=4.0, frames=3, steps=3, **extra):
    p = prompts.invert(prompts.base(frames=frames))
    model = ("ade", 0)
    if inject:
        prompts.inject(p, **extra)
        model = ("inj", 0)
    return prompts.ksampler(p, model, cfg=cfg, steps=steps)


class AttnRecorder:
    """Test instrumentation: wraps the attention the injection calls, recording q, k, v per block."""

    def __init__(self, inject_module):
        self.calls = []
        self.original = inject_module.optimized_attention

    def __call__(self, q, k, v, heads, **kw):
        self.calls.append((q.clone(), k.clone(), v.clone()))
        return self.original(q, k, v, heads, **kw)


@pytest.fixture
def attn_recorder(monkeypatch, host):
    inject = pack_module("nodes.inject")
    rec = AttnRecorder(inject)
    monkeypatch.setattr(inject, "optimized_attention", rec)
    return rec


def test_attn1_replaces_frame0_query_shares_kv_and_leaves_uncond_alone(host):
    inject = pack_module("nodes.inject")
    feats = host.node_output(prompts.invert(prompts.base()), "inv")[0]
    state = inject.InjectionState(feats, [4], [], [6], end_sigma=0.0)
    attn1 = inject.make_attn1(state)
    g = torch.Generator().manual_seed(0)
    f, hw, c = 3, 4, feats.queries[4].shape[-1]
    q, k, v = (torch.randn(2 * f, hw, c, generator=g) for _ in range(3))
    seen = {}
    orig = inject.optimized_attention
    try:
        inject.optimized_attention = lambda q_, k_, v_, heads, **kw: seen.update(q=q_, k=k_, v=v_) or orig(q_, k_, v_, heads, **kw)
        opts = {"block": ("output", 4), "cond_or_uncond": [1, 0], "sigmas": torch.tensor([5.0]), "n_heads": 4,
                "original_shape": [2 * f, 4, 8, 8]}
        attn1(q, k, v, opts)
    finally:
        inject.optimized_attention = orig
    assert torch.equal(seen["q"][:f], q[:f]) and torch.equal(seen["k"][:f], k[:f]) and torch.equal(seen["v"][:f], v[:f])
    assert torch.equal(seen["q"][f], feats.queries[4][0]) and torch.equal(seen["q"][f + 1:], q[f + 1:])
    for j in range(f, 2 * f):
        assert torch.equal(seen["k"][j], k[f]) and torch.equal(seen["v"][j], v[f])


def test_injection_inside_sampling(host, attn_recorder):
    host.run(sampling_prompt())
    feats = host.node_output(prompts.invert(prompts.base()), "inv")[0]
    first = attn_recorder.calls[0]  # first step, first injected block (output 3), cond+uncond batched
    q, k, v = first
    f = 3
    cond = [s for s in (0, f) if torch.equal(q[s], feats.queries[3][0].to(q))]
    assert len(cond) == 1, "exactly one chunk (the conditional one) carries the captured query in frame 0"
    s = cond[0]
    for j in range(s, s + f):
        assert torch.equal(k[j], k[s]) and torch.equal(v[j], v[s])
    u = f - s  # the unconditional chunk
    assert not torch.equal(k[u + 1], k[u])


def test_uncond_branch_is_bit_identical_to_sampling_without_injection(host, attn_recorder):
    host.run(sampling_prompt(inject=True))
    with_inj = list(attn_recorder.calls)
    attn_recorder.calls.clear()
    plain = sampling_prompt(inject=False)
    # the same blocks, without injection: use a pass-through replace to record them (same attention maths)
    inject = pack_module("nodes.inject")
    model = host.node_output(plain, "ade")[0].clone()
    feats = host.node_output(prompts.invert(prompts.base()), "inv")[0]
    inject.apply_injection(model, feats, inject_query=False, inject_residual=False, share_kv=False)
    import comfy.sample
    latent = torch.zeros(3, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 3)
    pos, neg = host.node_output(plain, "pos")[0], host.node_output(plain, "neg")[0]
    with torch.inference_mode():
        comfy.sample.sample(model, noise, 3, 4.0, "ddim", "normal", pos, neg, latent, denoise=1.0, seed=3)
    without = list(attn_recorder.calls)
    f = 3
    cond_first = torch.equal(with_inj[0][0][0], feats.queries[3][0].to(with_inj[0][0]))
    cond, unc = (slice(0, f), slice(f, 2 * f)) if cond_first else (slice(f, 2 * f), slice(0, f))
    first_step = len(feats.queries)  # one call per injected block in the first UNet evaluation
    for a, b in zip(with_inj[:first_step], without[:first_step], strict=True):
        assert all(torch.equal(x[unc], y[unc]) for x, y in zip(a, b, strict=True))
        assert not torch.equal(a[0][cond], b[0][cond])


def test_debiased_residual_replaces_frame0_in_the_cond_branch(host):
    inject = pack_module("nodes.inject")
    debias = pack_module("core.debias")
    p = sampling_prompt(steps=1)
    model = host.node_output(p, "inj")[0]
    feats = host.node_output(p, "inv")[0]
    res = model.model.diffusion_model.output_blocks[4][0]
    seen = {}
    h1 = res.out_layers.register_forward_hook(lambda m, i, o: seen.setdefault("cur", o.clone()))
    h2 = res.register_forward_hook(lambda m, i, o: seen.setdefault("out", o.clone()))
    h3 = res.skip_connection.register_forward_hook(lambda m, i, o: seen.setdefault("skip", o.clone()))
    try:
        host.run(p)
    finally:
        for h in (h1, h2, h3):
            h.remove()
    branch = seen["out"] - seen["skip"]
    f = 3
    rows = [s for s in (0, f) if not torch.allclose(branch[s], seen["cur"][s], atol=1e-6)]  # (skip + cur) - skip: rounding
    assert len(rows) == 1
    s = rows[0]
    expected = debias.patch_adain(feats.residuals[4].to(branch), seen["cur"][s:s + 1], 4)
    assert torch.allclose(branch[s:s + 1], expected, atol=1e-5)
    assert torch.allclose(branch[s + 1:s + f], seen["cur"][s + 1:s + f], atol=1e-6)
    assert isinstance(inject.injection_state(model), inject.InjectionState)


@pytest.mark.parametrize("scheduler", ["ddim_uniform", "normal", "simple"])
def test_active_in_steps_0_to_3_of_25(host, scheduler):
    import comfy.samplers

    model = host.node_output(sampling_prompt(), "inj")[0]
    state = pack_module("nodes.inject").injection_state(model)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, 25)
    active = [i for i in range(25) if state.active({"sigmas": sigmas[i:i + 1]})]
    assert active == [0, 1, 2, 3]
    assert state.active({"anyi2v_force": True, "sigmas": sigmas[20:21]})


def test_nothing_leaks_after_success_and_error(host):
    plain = prompts.ksampler(prompts.base(), ("ade", 0), node="ks")
    before = host.node_output(plain, "ks")[0]["samples"].clone()
    host.run(sampling_prompt())
    bad = sampling_prompt()
    bad["inj"]["inputs"]["patch_size"] = 0  # invalid -> validation error, nothing runs
    with pytest.raises(Exception, match="patch_size"):
        host.run(bad)
    after = host.node_output(dict(plain, ks=dict(plain["ks"], inputs=dict(plain["ks"]["inputs"], seed=3))), "ks")[0]["samples"]
    assert torch.equal(before, after)
    unet = host.node_output(plain, "ckpt")[0].model.diffusion_model
    assert not any(m._forward_hooks for m in unet.modules())


def test_features_from_another_model_are_refused(host):
    inject = pack_module("nodes.inject")
    p = sampling_prompt()
    feats = host.node_output(p, "inv")[0]
    model = host.node_output(p, "ade")[0].clone()
    sig = dict(feats.model_signature, attn=[None if c is None else c * 2 for c in feats.model_signature["attn"]])
    import dataclasses

    other = dataclasses.replace(feats, model_signature=sig)
    with pytest.raises(ValueError, match="channels at output block 3"):
        inject.apply_injection(model, other)
    assert inject.injection_state(model) is None  # nothing was installed


def test_composes_with_other_attn1_patches_and_loras(host, attn_recorder):
    """Perturbed-Attention Guidance (core; an attn1 replace on the middle block) and a LoRA on the injected blocks."""
    p = prompts.invert(prompts.base(frames=3))
    p["lora"] = {"class_type": "LoraLoader", "inputs": {"model": ["ade", 0], "clip": ["ckpt", 1],
                                                        "lora_name": "anyi2v_tiny_lora.safetensors",
                                                        "strength_model": 1.0, "strength_clip": 0.0}}
    prompts.inject(p, model=("lora", 0))
    p["sag"] = {"class_type": "PerturbedAttentionGuidance", "inputs": {"model": ["inj", 0], "scale": 1.0}}
    prompts.ksampler(p, ("sag", 0), steps=2)
    out = host.node_output(p, "ks")[0]["samples"]
    assert torch.isfinite(out).all()
    feats = host.node_output(p, "inv")[0]
    q = attn_recorder.calls[0][0]
    assert any(torch.equal(q[s], feats.queries[3][0].to(q)) for s in (0, 3))  # injection still acts
    model = host.node_output(p, "sag")[0]  # PAG adds its ("middle", 0) replace per CFG step next to ours
    assert model.model_options.get("sampler_post_cfg_function")
    assert ("output", 3, 0) in model.model_options["transformer_options"]["patches_replace"]["attn1"]


def test_attn1_honours_an_attention_override(host):
    """ComfyUI lets a sampling run choose its attention through transformer_options["optimized_attention_override"]
    (attention-switching nodes use it; `make scale` picks the GPU's kernel with it): the injected blocks use it too."""
    inject = pack_module("nodes.inject")
    feats = host.node_output(prompts.invert(prompts.base()), "inv")[0]
    attn1 = inject.make_attn1(inject.InjectionState(feats, [4], [], [6], end_sigma=0.0))
    calls = []

    def override(func, q, k, v, heads, *args, **kwargs):
        calls.append((q.shape, heads))
        return func(q, k, v, heads, *args, **kwargs)

    g = torch.Generator().manual_seed(0)
    c = feats.queries[4].shape[-1]
    q, k, v = (torch.randn(6, 4, c, generator=g) for _ in range(3))
    opts = {"block": ("output", 4), "cond_or_uncond": [1, 0], "sigmas": torch.tensor([5.0]), "n_heads": 4,
            "original_shape": [6, 4, 8, 8], "optimized_attention_override": override}
    out = attn1(q, k, v, opts)
    assert calls == [(q.shape, 4)] and out.shape == q.shape
