"""The weight dtypes users run: the UNet stored in fp16, bf16 or fp8_e4m3fn (ComfyUI's weight_dtype choices,
loaded by comfy.sd.load_diffusion_model with model_options["dtype"], as UNETLoader loads), the motion module
(the ADE stand-in) stored in fp16 as ADE stores it on an fp16 GPU. On this CPU host ComfyUI computes all of
them in fp32 through its manual-cast ops. Inversion, injection, the optimisation with gradients and sampling
run; their outputs and gradients are finite and act; the weights are unchanged and aliased, never copied."""

import contextlib
import json
import math
import sys

import pytest
import torch

from dev.support.host import pack_module
from tests.host import prompts

pytestmark = pytest.mark.host

WEIGHT_DTYPES = ["float16", "bfloat16", "float8_e4m3fn"]


def stored_bytes(modules):
    """{(module, name): raw bytes} of every parameter and buffer (fp8 has no equality kernel). Keyed by module,
    not by state-dict name: inserted motion modules shift the names of the layers after them."""
    return {(id(m), name): t.detach().reshape(-1).view(torch.uint8).clone() for top in modules for m in top.modules()
            for name, t in [*m._parameters.items(), *m._buffers.items()] if t is not None}


@pytest.fixture(scope="module")
def parts(host):
    p = prompts.base()
    _, clip, vae = host.node_output(p, "ckpt")
    pos, neg = host.node_output(p, "pos")[0], host.node_output(p, "neg")[0]
    image = host.node_output(p, "img")[0]
    return {"vae": vae, "pos": pos, "neg": neg, "image": image, "ckpt": host.files["checkpoint"]}


def load_unet(path, dtype):
    import comfy.sd

    with torch.inference_mode():  # the executor runs every node so
        return comfy.sd.load_diffusion_model(str(path), model_options={"dtype": dtype})


def load_motion_fp16(monkeypatch, host):
    """The stand-in's Load AnimateDiff Model as on an fp16 GPU, where ComfyUI's unet_dtype() is fp16."""
    import comfy.model_management

    ade = next(m for name, m in sys.modules.items() if name.endswith("standin_ade"))
    with monkeypatch.context() as m:
        m.setattr(comfy.model_management, "unet_dtype", lambda *a, **k: torch.float16)
        with torch.inference_mode():
            (motion,) = ade.LoadAnimateDiffModel().load(prompts.MOTION)
    return ade, motion


def parameters_of(modules):
    """{(module, name): parameter} over `modules` and their children."""
    return {(id(m), name): p for top in modules for m in top.modules() for name, p in m._parameters.items() if p is not None}


@contextlib.contextmanager
def watched_aliases(monkeypatch, modules, seen):
    """Record, inside every optimisation, how the weights of `modules` (the UNet and its motion modules) are
    held: (is an inference tensor, shares the original's memory, dtype) of each swapped parameter."""
    optimizer = pack_module("nodes.optimizer")
    real = optimizer.trainable_weights
    originals = parameters_of(modules)

    @contextlib.contextmanager
    def watching(truncated):
        with real(truncated) as count:
            for key, p in parameters_of(modules).items():
                if p is not originals[key]:
                    seen.append((p.is_inference(), p.data_ptr() == originals[key].data_ptr(), p.dtype))
            yield count

    monkeypatch.setattr(optimizer, "trainable_weights", watching)
    yield originals


@pytest.mark.parametrize("weight_dtype", WEIGHT_DTYPES)
def test_anyi2v_with_unet_weights_in(host, parts, monkeypatch, weight_dtype):
    import comfy.sample
    import comfy.samplers

    dtype = getattr(torch, weight_dtype)
    invert, inject, sampler_mod = pack_module("nodes.invert"), pack_module("nodes.inject"), pack_module("nodes.sampler")
    unet_model = load_unet(parts["ckpt"], dtype)
    unet = unet_model.model.diffusion_model
    assert unet_model.model.get_dtype() == dtype and unet_model.model.manual_cast_dtype == torch.float32
    ade, motion = load_motion_fp16(monkeypatch, host)
    assert motion.dtype == torch.float16
    before = stored_bytes([unet])
    with torch.inference_mode():
        (features,) = invert.InvertCondition.execute(unet_model, parts["vae"], parts["image"], parts["pos"], 21, 5,
                                                     "sqrt_linear (AnimateDiff)", invert.DEFAULT_QUERY_NAMES,
                                                     invert.DEFAULT_RES_NAMES).result
        (m_models,) = ade.ApplyAnimateDiffModelSimple().apply(motion)
        (video,) = ade.UseEvolvedSampling().use(unet_model, "autoselect", m_models=m_models)
        (model,) = inject.InjectFeatures.execute(video, features, True, True, True, 4, 0.5).result
    assert all(torch.isfinite(t).all() for t in [*features.queries.values(), *features.residuals.values()])
    assert {p.dtype for m in video.get_attachment("standin_ade_modules") for p in m.parameters()} == {torch.float16}
    traj = pack_module("core.trajectory").Trajectory.from_reference_json(json.loads(prompts.TRAJ))
    latent = torch.zeros(4, 4, 8, 8)
    seen = []

    def sample(lr):
        settings = sampler_mod.Settings(**dict(prompts.SETTINGS, lr=lr))  # the optimisation in the first 2 of 4 steps
        sampler = sampler_mod.TrajectorySampler(sampler_mod.base_ksampler("ddim"), settings, traj)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 4)
        with torch.inference_mode():
            out = comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 3), 4.0, sampler, sigmas,
                                             parts["pos"], parts["neg"], latent, seed=3)
        return out, sampler.losses

    motion_modules = list(video.get_attachment("standin_ade_modules"))
    motion_before = stored_bytes(motion_modules)
    with watched_aliases(monkeypatch, [unet, *motion_modules], seen) as originals:
        out, losses = sample(0.05)
    assert torch.isfinite(out).all()
    first_step = [v for step, _, v in losses if step == 0]
    assert len(first_step) == prompts.SETTINGS["iterations"] and all(map(math.isfinite, first_step))
    assert max(first_step) - min(first_step) > 1e-6 * abs(first_step[0]), "the gradients did not move the latent"
    assert seen, "the optimisation did not run"
    assert set(seen) == {(False, True, dtype), (False, True, torch.float16)}, sorted(set(seen), key=str)
    assert all(p is originals[key] and p.is_inference() for key, p in parameters_of([unet, *motion_modules]).items())
    after = stored_bytes([unet, *motion_modules])  # (the motion modules may stay inserted after sampling, as ADE's do)
    before.update(motion_before)
    assert before.keys() <= after.keys() and all(torch.equal(after[k], before[k]) for k in before)
