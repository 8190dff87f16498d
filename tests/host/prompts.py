"""API-format prompt pieces shared by the host tests (tiny checkpoint, ADE stand-in)."""

from dev.support.images import edge_image, write_input_image

CKPT = "anyi2v_tiny_sd15.safetensors"
MOTION = "anyi2v_tiny_motion.safetensors"


def base(prompt_text="a red car driving", negative="blurry", width=64, height=64, frames=4, motion=True,
         image_name=None):
    """Checkpoint, text, a condition image and an empty latent (+ the ADE stand-in chain)."""
    image_name = image_name or write_input_image("cond_edges.png", edge_image(width, height))
    p = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt_text, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["ckpt", 1]}},
        "img": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": frames}},
    }
    if motion:
        p["mm"] = {"class_type": "ADE_LoadAnimateDiffModel", "inputs": {"model_name": MOTION}}
        p["apply"] = {"class_type": "ADE_ApplyAnimateDiffModelSimple", "inputs": {"motion_model": ["mm", 0]}}
        p["ade"] = {"class_type": "ADE_UseEvolvedSampling",
                    "inputs": {"model": ["ckpt", 0], "beta_schedule": "autoselect", "m_models": ["apply", 0]}}
    return p


def invert(p, t_alpha=21, stride=5, model=("ckpt", 0), **extra):
    p["inv"] = {"class_type": "AnyI2VInvertCondition",
                "inputs": dict({"model": list(model), "vae": ["ckpt", 2], "image": ["img", 0], "positive": ["pos", 0],
                                "t_alpha": t_alpha, "stride": stride, "schedule": "sqrt_linear (AnimateDiff)",
                                "query_blocks": "up_blocks.1.attentions.0, up_blocks.1.attentions.1, up_blocks.2.attentions.0, up_blocks.2.attentions.1",
                                "residual_blocks": "up_blocks.1.resnets.0, up_blocks.1.resnets.1, up_blocks.2.resnets.0, up_blocks.2.resnets.1"},
                               **extra)}
    return p


def ksampler(p, model, seed=3, steps=4, cfg=4.0, sampler="ddim", scheduler="normal", node="ks"):
    p[node] = {"class_type": "KSampler", "inputs": {
        "model": list(model), "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["lat", 0], "denoise": 1.0}}
    return p


def inject(p, model=("ade", 0), node="inj", **extra):
    p[node] = {"class_type": "AnyI2VInjectFeatures", "inputs": dict(
        {"model": list(model), "features": ["inv", 0], "inject_query": True, "inject_residual": True, "share_kv": True,
         "patch_size": 4, "end_percent": 0.16}, **extra)}
    return p


TRAJ = ('{"bounding_box": [[16, 20, 44, 44]], "target_box": [[0, 0, 28, 24]], '
        '"center_traj": [[[30, 32], [38, 32], [46, 32]]], "query_point": [[[24, 30]]], "width": 64, "height": 64}')

SETTINGS = {"opt_percent": 0.5, "iterations": 3, "lr": 0.05, "update_rule": "adamw_fresh", "pca_dim": 16,
            "query_blocks": "Query 1.1, Query 2.0", "mask_mode": "semantic", "low_memory": "off"}


def trajectory(p, frames=4, text=TRAJ):
    p["traj"] = {"class_type": "AnyI2VTrajectory", "inputs": {"trajectory": text, "frames": frames, "width": 64, "height": 64}}
    return p


def anyi2v_ksampler(p, model=("inj", 0), seed=3, steps=4, cfg=4.0, sampler="ddim", scheduler="normal", node="aks", **settings):
    p[node] = {"class_type": "AnyI2VKSampler", "inputs": dict(
        {"model": list(model), "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
         "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["lat", 0], "trajectory": ["traj", 0],
         "denoise": 1.0}, **dict(SETTINGS, **settings))}
    return p


def full(frames=4, image_name=None, **settings):
    """Condition inversion -> ADE stand-in -> injection -> AnyI2V KSampler."""
    p = inject(invert(base(frames=frames, image_name=image_name)))
    return anyi2v_ksampler(trajectory(p, frames), **settings)
