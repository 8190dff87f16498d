"""The model `make bench` measures (dev/bench.py), also run by tests: an SD1.5-layout UNet of a chosen width with
the AnimateDiff-Evolved stand-in's temporal modules, random text conditioning and a TAESD VAE."""

from __future__ import annotations


def build_model(channels: int = 64):
    """The `make bench` MODEL at base width `channels` (with the stand-in temporal module, as ADE would add it), conditioning and a TAESD VAE."""
    import torch

    from dev.support.host import load_pack
    from dev.support.tiny_models import TINY_UNET_CONFIG, fill_deterministic, tiny_classes

    load_pack()
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops
    import comfy.sd
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from dev.standin_ade import AppliedMotionModel, MotionModel, UseEvolvedSampling
    from dev.standin_ade.motion import motion_slots
    from dev.support.standin_ade_weights import motion_module_state_dict
    from dev.support.tiny_models import tiny_taesd_state_dict

    config = dict(TINY_UNET_CONFIG, model_channels=channels, channel_mult=[1, 2, 4, 4], num_heads=8)
    cls = tiny_classes()
    cls.unet_config = dict(cls.unet_config, model_channels=channels)
    model_config = cls(config)
    model_config.set_inference_dtype(torch.float32, None)
    base = model_config.get_model({})
    with torch.device("meta"):
        shapes = UNetModel(**config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init).state_dict()
    sd = fill_deterministic({k: torch.empty(v.shape) for k, v in shapes.items()}, 11)
    base.diffusion_model.load_state_dict(sd)
    patcher = comfy.model_patcher.ModelPatcher(base, comfy.model_management.get_torch_device(), comfy.model_management.unet_offload_device())
    slots = [(k, b, c) for k, b, _, c in motion_slots(base.diffusion_model)]
    motion = MotionModel("bench", motion_module_state_dict(slots=slots))
    (video,) = UseEvolvedSampling().use(patcher, "autoselect", m_models=[AppliedMotionModel(motion)])
    g = torch.Generator().manual_seed(0)
    pos = [[torch.randn(1, 77, 64, generator=g), {}]]
    neg = [[torch.randn(1, 77, 64, generator=g), {}]]
    vae = comfy.sd.VAE(sd=tiny_taesd_state_dict())
    return patcher, video, pos, neg, vae
