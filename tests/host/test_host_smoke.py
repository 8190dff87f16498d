"""The real host runs: tiny models load through ComfyUI's real loaders and a prompt runs end to end."""

import pytest
import torch

pytestmark = pytest.mark.host


def plain_prompt(frames=2, steps=2, seed=7, motion=True):
    p = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "anyi2v_tiny_sd15.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a horse running", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": frames}},
        "ks": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["ade", 0] if motion else ["ckpt", 0],
                "seed": seed, "steps": steps, "cfg": 4.0, "sampler_name": "ddim", "scheduler": "ddim_uniform",
                "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["lat", 0], "denoise": 1.0,
            },
        },
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}},
    }
    if motion:
        p["mm"] = {"class_type": "ADE_LoadAnimateDiffModel", "inputs": {"model_name": "anyi2v_tiny_motion.safetensors"}}
        p["apply"] = {"class_type": "ADE_ApplyAnimateDiffModelSimple", "inputs": {"motion_model": ["mm", 0]}}
        p["ade"] = {"class_type": "ADE_UseEvolvedSampling", "inputs": {"model": ["ckpt", 0], "beta_schedule": "autoselect", "m_models": ["apply", 0]}}
    return p


def test_tiny_checkpoint_loads_with_sd15_layout(host):
    model, clip, vae = host.node_output(plain_prompt(), "ckpt")
    unet = model.model.diffusion_model
    names = [[type(m).__name__ for m in block] for block in unet.output_blocks]
    for n in (3, 4, 6, 7):
        assert names[n][:2] == ["ResBlock", "SpatialTransformer"], names
    assert type(vae.first_stage_model).__name__ == "TAESD"


def test_prompt_runs_through_real_executor_and_is_deterministic(host):
    a = host.node_output(plain_prompt(frames=3), "ks")[0]["samples"].clone()
    b = host.node_output(plain_prompt(frames=3), "ks")[0]["samples"].clone()
    assert a.shape == (3, 4, 8, 8)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_standin_motion_module_couples_frames(host):
    """Changing one frame's noise changes the other frames only when the temporal module is on."""
    with_mm = host.node_output(plain_prompt(frames=3, seed=1), "ks")[0]["samples"].clone()
    without = host.node_output(plain_prompt(frames=3, seed=1, motion=False), "ks")[0]["samples"].clone()
    assert not torch.allclose(with_mm, without)
