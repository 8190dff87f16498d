"""AnyI2V Invert Condition against an independent DDIM inversion of the tiny model."""

import pytest
import torch

from dev.support.comfy_run import PromptError
from dev.support.images import write_input_image
from tests.host import prompts

pytestmark = pytest.mark.host


def independent_features(model, vae, image, context, t_alpha, stride):
    """Plain-torch DDIM inversion with the UNet called directly (alpha space), hooks of our own. As the reference's
    inverse scheduler: with stride 1 its 999-step schedule starts the step at t = 1 from alpha_bar_0; with coarser
    strides from 1."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model])
    unet = model.model.diffusion_model
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)  # AnimateDiff's schedule, the node's default
    alphas = torch.cumprod(1 - betas, 0)
    x = model.model.process_latent_in(vae.encode(image[:, :, :, :3])).double()
    ts = list(range(1, t_alpha + 1, stride))
    ts += [t_alpha] if ts[-1] != t_alpha else []
    got = {}
    a_prev = alphas[0] if stride == 1 else torch.tensor(1.0, dtype=torch.float64)
    for i, t in enumerate(ts):
        hooks = []
        if i == len(ts) - 1:
            for b in (3, 4, 6, 7):
                hooks.append(unet.output_blocks[b][1].transformer_blocks[0].attn1.to_q.register_forward_hook(
                    lambda m, a, o, b=b: got.__setitem__(("q", b), o.clone())))
                hooks.append(unet.output_blocks[b][0].out_layers.register_forward_hook(
                    lambda m, a, o, b=b: got.__setitem__(("r", b), o.clone())))
        eps = unet(x.float(), torch.tensor([float(t)]), context=context,
                   transformer_options={"cond_or_uncond": [0]}).double()
        for h in hooks:
            h.remove()
        a_t = alphas[t]
        x = a_t.sqrt() * (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt() + (1 - a_t).sqrt() * eps
        a_prev = a_t
    return got


@pytest.mark.parametrize("t_alpha, stride", [(21, 5), (9, 1)])
def test_captured_features_equal_an_independent_forward(host, t_alpha, stride):
    p = prompts.invert(prompts.base(motion=False), t_alpha=t_alpha, stride=stride)
    (feats,) = host.node_output(p, "inv")
    model, clip, vae = host.node_output(p, "ckpt")
    (image, _) = host.node_output(p, "img")
    (cond,) = host.node_output(p, "pos")
    with torch.inference_mode():
        ref = independent_features(model, vae, image, cond[0][0], t_alpha, stride)
    assert sorted(feats.queries) == [3, 4, 6, 7] and sorted(feats.residuals) == [3, 4, 6, 7]
    for b in (3, 4, 6, 7):
        for got, want in ((feats.queries[b], ref[("q", b)]), (feats.residuals[b], ref[("r", b)])):
            rel = float((got.double() - want.double()).norm() / want.double().norm())
            assert rel < 2e-5, (b, rel)  # float rounding (starting stride 1 from alpha_bar = 1 instead: ~1e-4)
    assert feats.latent_hw == (8, 8) and feats.query_hw[4] == (2, 2) and feats.query_hw[7] == (4, 4)


def test_motion_modules_are_left_out_and_nothing_leaks(host):
    plain = host.node_output(prompts.invert(prompts.base(motion=False)), "inv")[0]
    with_ade = host.node_output(prompts.invert(prompts.base(), model=("ade", 0)), "inv")[0]
    for b in plain.queries:
        assert torch.allclose(plain.queries[b], with_ade.queries[b], atol=1e-5)
    model = host.node_output(prompts.base(motion=False), "ckpt")[0]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.model.diffusion_model.modules())


def test_aspect_is_kept(host):
    name = write_input_image("wide.png", torch.zeros(48, 96, 3).numpy())
    (feats,) = host.node_output(prompts.invert(prompts.base(motion=False, image_name=name)), "inv")
    assert feats.latent_hw == (6, 12) and feats.image_hw == (48, 96)


@pytest.mark.parametrize("change, message", [
    ({"query_blocks": "up_blocks.0.attentions.0"}, "has no attention"),
    ({"t_alpha": 0}, "t_alpha"),
])
def test_bad_settings_are_clear_errors(host, change, message):
    p = prompts.invert(prompts.base(motion=False))
    p["inv"]["inputs"].update(change)
    with pytest.raises(PromptError, match=message):
        host.run(p)


def test_a_batch_of_images_is_refused(host):
    p = prompts.invert(prompts.base(motion=False))
    p["rep"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["img", 0], "amount": 2}}
    p["inv"]["inputs"]["image"] = ["rep", 0]
    with pytest.raises(PromptError, match="exactly one condition image"):
        host.run(p)
