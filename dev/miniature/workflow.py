"""ComfyUI prompts (API format) that run the miniature through the pack's real nodes, as a user's graph would:
CheckpointLoaderSimple -> CLIPTextEncode; LoadImage (-> AnyI2V Mix Conditions) -> AnyI2V Invert Condition;
ADE Load/Apply/Use Evolved Sampling -> AnyI2V Inject Features -> AnyI2V KSampler (or core KSampler) -> VAE Decode.

Variants (docs/eval.md): ``plain`` (AnimateDiff sampling, no AnyI2V), ``injection_only`` (Inject Features,
core KSampler), ``full`` (the paper's defaults: every widget at the node's default), and the paper's
ablations ``no_kv`` (share_kv off), ``no_pca`` (pca_dim at its maximum: every component kept),
``static_mask`` and ``no_mask``. Widget values not given are read from the nodes' own defaults, so
"the paper's defaults" are whatever the pack's nodes declare.
"""

from __future__ import annotations

from . import model as M

PAPER = {"steps": 25, "cfg": 8.0, "sampler_name": "ddim", "scheduler": "ddim_uniform", "t_alpha": 201, "stride": 1}
NEGATIVE = ""
VARIANTS = {
    "plain": {"anyi2v": False},
    "injection_only": {"anyi2v": True, "optimise": False},
    "full": {"anyi2v": True},
    "no_kv": {"anyi2v": True, "inject": {"share_kv": False}},
    "no_pca": {"anyi2v": True, "sampler": {"pca_dim": "max"}},
    "static_mask": {"anyi2v": True, "sampler": {"mask_mode": "static"}},
    "no_mask": {"anyi2v": True, "sampler": {"mask_mode": "off"}},
}


def node_defaults(class_type: str) -> dict:
    """Every widget's default of a registered node ({name: value}); "max" entries resolved by the caller."""
    import nodes

    spec = nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()
    out = {}
    for section in ("required", "optional"):
        for name, s in (spec.get(section) or {}).items():
            opts = s[1] if len(s) > 1 and isinstance(s[1], dict) else {}
            if "default" in opts:
                out[name] = opts["default"]
    return out


def node_max(class_type: str, name: str) -> float:
    import nodes

    spec = nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()
    s = (spec.get("required") or {}).get(name) or (spec.get("optional") or {}).get(name)
    return s[1]["max"]


def condition_nodes(images: dict[str, str], boxes) -> tuple[dict, list]:
    """LoadImage nodes for the condition; for a mixed condition (depth + edges) one AnyI2V Mix Conditions per
    object, the edges inside each object's first box. Returns (nodes, the IMAGE link)."""
    if "image" in images:
        return {"img": {"class_type": "LoadImage", "inputs": {"image": images["image"]}}}, ["img", 0]
    out = {"depth": {"class_type": "LoadImage", "inputs": {"image": images["depth"]}},
           "edges": {"class_type": "LoadImage", "inputs": {"image": images["edges"]}}}
    link = ["depth", 0]
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        out[f"mix{i}"] = {"class_type": "AnyI2VMixConditions", "inputs": {
            "base": link, "overlay": ["edges", 0], "mode": "inside box", "position": 0.5,
            "x1": max(0, x1), "y1": max(0, y1), "x2": x2, "y2": y2, "feather": 0}}
        link = [f"mix{i}", 0]
    return out, link


def build(variant: str, prompt_text: str, images: dict[str, str], trajectory_json: str, first_boxes, seed: int,
          frames: int, size: int, sampler_overrides: dict | None = None, inject_overrides: dict | None = None,
          paper_overrides: dict | None = None) -> dict:
    """The API prompt of one run; the decoded frames are the output of node "dec". first_boxes in pixels of the
    condition images; the trajectory JSON in its own (the Trajectory node scales it to size x size).
    paper_overrides: other steps, t_alpha or stride than PAPER's (only the plumbing check uses them)."""
    spec = VARIANTS[variant]
    paper = dict(PAPER, **(paper_overrides or {}))
    p = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": M.CHECKPOINT_NAME}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt_text, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["ckpt", 1]}},
        "mm": {"class_type": "ADE_LoadAnimateDiffModel", "inputs": {"model_name": M.MOTION_NAME}},
        "apply": {"class_type": "ADE_ApplyAnimateDiffModelSimple", "inputs": {"motion_model": ["mm", 0]}},
        "ade": {"class_type": "ADE_UseEvolvedSampling",
                "inputs": {"model": ["ckpt", 0], "beta_schedule": "autoselect", "m_models": ["apply", 0]}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": frames}},
    }
    common = {"seed": seed, "steps": paper["steps"], "cfg": paper["cfg"], "sampler_name": paper["sampler_name"],
              "scheduler": paper["scheduler"], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["lat", 0],
              "denoise": 1.0}
    model = ["ade", 0]
    if spec["anyi2v"]:
        cond, link = condition_nodes(images, first_boxes)
        p.update(cond)
        inv = node_defaults("AnyI2VInvertCondition")
        inv.update({"model": ["ckpt", 0], "vae": ["ckpt", 2], "image": link, "positive": ["pos", 0],
                    "t_alpha": paper["t_alpha"], "stride": paper["stride"]})
        p["inv"] = {"class_type": "AnyI2VInvertCondition", "inputs": inv}
        inj = node_defaults("AnyI2VInjectFeatures")
        inj.update(spec.get("inject", {}), **(inject_overrides or {}))
        inj.update({"model": ["ade", 0], "features": ["inv", 0]})
        p["inj"] = {"class_type": "AnyI2VInjectFeatures", "inputs": inj}
        model = ["inj", 0]
    if spec["anyi2v"] and spec.get("optimise", True):
        p["traj"] = {"class_type": "AnyI2VTrajectory",
                     "inputs": {"trajectory": trajectory_json, "frames": frames, "width": size, "height": size}}
        ks = node_defaults("AnyI2VKSampler")
        ks.update(spec.get("sampler", {}), **(sampler_overrides or {}))
        ks = {k: (node_max("AnyI2VKSampler", k) if v == "max" else v) for k, v in ks.items()}
        ks.update(common, model=model, trajectory=["traj", 0])
        p["ks"] = {"class_type": "AnyI2VKSampler", "inputs": ks}
    else:
        p["ks"] = {"class_type": "KSampler", "inputs": dict(common, model=model)}
    p["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}}
    return p
