"""SDXL-layout UNets get a clear refusal (tested on a tiny SDXL-layout UNet built by ComfyUI's own classes)."""

import pytest
import torch

from dev.support.host import pack_module
from tests.host import prompts

pytestmark = pytest.mark.host

TINY_SDXL = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
             "num_classes": "sequential", "adm_in_channels": 64, "in_channels": 4, "model_channels": 32,
             "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
             "channel_mult": [1, 2, 2], "transformer_depth_middle": 1, "use_linear_in_transformer": True, "context_dim": 64,
             "num_head_channels": 16, "use_temporal_resblock": False, "use_temporal_attention": False}


@pytest.fixture
def sdxl(host):
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SDXL(dict(TINY_SDXL))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(), comfy.model_management.unet_offload_device())


def test_inversion_and_injection_refuse_sdxl_clearly(host, sdxl):
    invert = pack_module("nodes.invert")
    inject = pack_module("nodes.inject")
    p = prompts.invert(prompts.base(motion=False))
    _, _, vae = host.node_output(p, "ckpt")
    image = host.node_output(p, "img")[0]
    cond = host.node_output(p, "pos")[0]
    feats = host.node_output(p, "inv")[0]
    with pytest.raises(ValueError, match="SDXL-layout UNets"):
        invert.InvertCondition.execute(sdxl, vae, image, cond, 21, 5, "sqrt_linear (AnimateDiff)",
                                       invert.DEFAULT_QUERY_NAMES, invert.DEFAULT_RES_NAMES)
    clone = sdxl.clone()
    with pytest.raises(ValueError, match="SDXL-layout UNets"):
        inject.apply_injection(clone, feats)
    assert inject.injection_state(clone) is None
