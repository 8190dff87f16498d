"""Write example_workflows/*.json (UI format, loadable from ComfyUI's template browser).

The graphs are described below by node id, class and inputs (widget values by name, links as
(node, output)); the UI JSON (widget order, sockets, layout) is generated from a real server's
/object_info, so it matches what the frontend itself saves. Run: python dev/make_examples.py
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dev.support.server import STANDIN_ADE, ComfyServer  # noqa: E402
from dev.support.workflow_api import _extra_widget_values, _is_widget, _ordered_inputs  # noqa: E402

OUT = REPO / "example_workflows"
CKPT = "v1-5-pruned-emaonly.safetensors"
MOTION = "v3_sd15_mm.ckpt"
NEGATIVE = "blurry, low quality, deformed, watermark, text"
# Where the frontend's missing-models dialog downloads each model from (a loader node's properties.models):
# the files at their official homes, in the ComfyUI models folder their loader reads.
MODELS = {
    CKPT: {"name": CKPT, "directory": "checkpoints",
           "url": "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors"},
    MOTION: {"name": MOTION, "directory": "animatediff_models",
             "url": "https://huggingface.co/guoyww/animatediff/resolve/main/v3_sd15_mm.ckpt"},
}
STYLE_LORA = "your_sd15_style_lora.safetensors"
STYLE_LORA_TITLE = "Your SD1.5 style LoRA: put its .safetensors in ComfyUI/models/loras and pick it here"


def traj_json(groups, width=512, height=512):
    return json.dumps({
        "bounding_box": [g["box"] for g in groups],
        "target_box": [g.get("target", g["box"]) for g in groups],
        "center_traj": [g["path"] for g in groups],
        "query_point": [g.get("points", []) for g in groups],
        "width": width, "height": height,
    })


CAR = traj_json([{"box": [110, 190, 400, 362], "path": [[255, 276], [300, 276], [345, 278], [390, 276]],
                  "points": [[250, 290], [180, 330], [330, 330]]}])
BIRD = traj_json([{"box": [80, 100, 330, 250], "target": [0, 0, 200, 120],
                   "path": [[205, 175], [260, 140], [330, 120], [400, 130]], "points": [[200, 190], [265, 150]]}])
TORUS = traj_json([{"box": [124, 172, 388, 360], "path": [[256, 266], [296, 270], [336, 276], [372, 280]],
                    "points": [[256, 200], [160, 266]]}])
BALLS = traj_json([
    {"box": [70, 200, 200, 330], "path": [[135, 265], [200, 262], [260, 265]], "points": [[135, 265]]},
    {"box": [310, 180, 450, 320], "path": [[380, 250], [330, 200], [280, 150]], "points": [[380, 250]]},
])


def common(image, prompt, trajectory, model_src=("ckpt", 0), clip_src=("ckpt", 1), condition=("scale", 0), seed=8):
    """Checkpoint, prompts, condition image, inversion, AnimateDiff (ADE), injection, trajectory, KSampler, outputs."""
    return {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "pos": ("CLIPTextEncode", {"text": prompt, "clip": clip_src}),
        "neg": ("CLIPTextEncode", {"text": NEGATIVE, "clip": clip_src}),
        "img": ("LoadImage", {"image": image}),
        "scale": ("ImageScale", {"image": ("img", 0), "upscale_method": "bilinear", "width": 512, "height": 512, "crop": "center"}),
        "inv": ("AnyI2VInvertCondition", {"model": model_src, "vae": ("ckpt", 2), "image": condition, "positive": ("pos", 0),
                                          "t_alpha": 201, "stride": 1}),
        "mm": ("ADE_LoadAnimateDiffModel", {"model_name": MOTION}),
        "apply": ("ADE_ApplyAnimateDiffModelSimple", {"motion_model": ("mm", 0)}),
        "ade": ("ADE_UseEvolvedSampling", {"model": model_src, "beta_schedule": "autoselect", "m_models": ("apply", 0)}),
        "inj": ("AnyI2VInjectFeatures", {"model": ("ade", 0), "features": ("inv", 0)}),
        "traj": ("AnyI2VTrajectory", {"trajectory": trajectory, "frames": 16, "width": 512, "height": 512, "image": condition}),
        "lat": ("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 16}),
        "aks": ("AnyI2VKSampler", {"model": ("inj", 0), "seed": seed, "steps": 25, "cfg": 8.0, "sampler_name": "ddim",
                                   "scheduler": "ddim_uniform", "positive": ("pos", 0), "negative": ("neg", 0),
                                   "latent_image": ("lat", 0), "trajectory": ("traj", 0),
                                   "low_memory": "auto"}),  # checkpointing only where the card needs it
        "dec": ("VAEDecode", {"samples": ("aks", 0), "vae": ("ckpt", 2)}),
        "save": ("SaveAnimatedWEBP", {"images": ("dec", 0), "filename_prefix": "AnyI2V/video", "fps": 8.0}),
        "draw": ("AnyI2VDrawTrajectory", {"images": ("dec", 0), "trajectory": ("traj", 0)}),
        "sheet": ("SaveImage", {"images": ("draw", 1), "filename_prefix": "AnyI2V/overlay_sheet"}),
    }


def workflows():
    w1 = common("anyi2v_canny_car.png", "a red sports car driving on a country road, sunny day, best quality", CAR)

    w2 = common("anyi2v_depth_scene.png", "a small blue bird flying over a garden with a stone ball, best quality", BIRD,
                condition=("mix", 0))
    w2["sketch"] = ("LoadImage", {"image": "anyi2v_sketch_bird.png"})
    w2["mix"] = ("AnyI2VMixConditions", {"base": ("scale", 0), "overlay": ("sketch", 0), "mode": "inside box",
                                         "x1": 60, "y1": 80, "x2": 340, "y2": 270, "feather": 0})

    w3 = common("anyi2v_two_balls.png", "two billiard balls rolling on green felt, studio light, best quality", BALLS)

    w4 = common("anyi2v_canny_car.png", "a red sports car driving on a country road, watercolor painting", CAR,
                model_src=("lora", 0), clip_src=("lora", 1))
    w4["lora"] = ("LoraLoader", {"model": ("ckpt", 0), "clip": ("ckpt", 1), "lora_name": STYLE_LORA,
                                 "strength_model": 0.8, "strength_clip": 0.8}, {"title": STYLE_LORA_TITLE})

    w5 = common("anyi2v_canny_car.png", "a red sports car driving on a country road, sunny day, best quality", CAR)
    del w5["aks"]
    w5.update({
        "sampler": ("AnyI2VSampler", {"trajectory": ("traj", 0), "sampler_name": "ddim", "low_memory": "auto"}),
        "noise": ("RandomNoise", {"noise_seed": 8}),
        "guider": ("CFGGuider", {"model": ("inj", 0), "positive": ("pos", 0), "negative": ("neg", 0), "cfg": 8.0}),
        "sched": ("BasicScheduler", {"model": ("inj", 0), "scheduler": "ddim_uniform", "steps": 25, "denoise": 1.0}),
        "sca": ("SamplerCustomAdvanced", {"noise": ("noise", 0), "guider": ("guider", 0), "sampler": ("sampler", 0),
                                          "sigmas": ("sched", 0), "latent_image": ("lat", 0)}),
    })
    w5["dec"] = ("VAEDecode", {"samples": ("sca", 0), "vae": ("ckpt", 2)})
    w6 = common(None, "a glazed donut rolling across a wooden kitchen table, warm light, best quality", TORUS,
                condition=("mesh", 0))
    del w6["img"], w6["scale"]
    w6["mesh"] = ("AnyI2VRenderMesh", {"mesh_file": "3d/anyi2v_torus.obj", "mode": "depth", "width": 512, "height": 512,
                                       "azimuth": 20.0, "elevation": 35.0, "distance": 5.0, "fov": 45.0})
    w6["ctx"] = ("ADE_StandardStaticContextOptions", {"context_length": 16, "context_overlap": 4})
    w6["ade"][1]["context_options"] = ("ctx", 0)
    w6["lat"][1]["batch_size"] = 32
    w6["traj"][1]["frames"] = 32
    return {
        "01_canny_car_one_box": w1,
        "02_depth_plus_sketch_composite": w2,
        "03_two_objects_two_trajectories": w3,
        "04_style_lora": w4,
        "05_sampler_custom_advanced": w5,
        "06_mesh_depth_long_video": w6,
    }


def depth_order(graph):
    depth = {}

    def d(k):
        if k not in depth:
            links = [v[0] for v in graph[k][1].values() if isinstance(v, tuple)]
            depth[k] = 1 + max((d(s) for s in links), default=-1)
        return depth[k]

    for k in graph:
        d(k)
    return depth


def widget_values(spec, value) -> list:
    """The values a frontend stores for one widget input (plus its companion widgets)."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if value is None:
        value = opts.get("default")
    if value is None and isinstance(spec[0], list) and spec[0]:
        value = spec[0][0]
    if value is None and spec[0] == "COMBO":
        value = (opts.get("options") or [None])[0]
    out = [value]
    if opts.get("control_after_generate"):
        out.append("fixed")
    if opts.get("image_upload"):
        out.append("image")
    assert len(out) == 1 + _extra_widget_values(spec)
    return out


def to_ui(graph: dict, info: dict) -> dict:
    ids = {k: i + 1 for i, k in enumerate(graph)}
    depth = depth_order(graph)
    column = defaultdict(int)
    links, nodes = [], []
    outgoing = defaultdict(list)
    for key, (_kind, inputs, *_) in graph.items():
        for name, value in inputs.items():
            if isinstance(value, tuple):
                links.append([len(links) + 1, ids[value[0]], value[1], ids[key], name, None])
    for link in links:
        outgoing[(link[1], link[2])].append(link[0])
    for order, (key, (kind, inputs, *extra)) in enumerate(sorted(graph.items(), key=lambda kv: depth[kv[0]])):
        spec = info[kind]
        node_inputs, widgets = [], []
        for name, s in _ordered_inputs(spec):
            linked = next((lk for lk in links if lk[3] == ids[key] and lk[4] == name), None)
            if _is_widget(s):
                widgets += widget_values(s, inputs.get(name))
            elif linked is not None or name in (spec.get("input", {}).get("required") or {}):
                node_inputs.append({"name": name, "type": s[0] if isinstance(s[0], str) else "COMBO", "link": linked[0] if linked else None})
            if linked is not None and _is_widget(s):
                node_inputs.append({"name": name, "type": s[0] if isinstance(s[0], str) else "COMBO", "link": linked[0],
                                    "widget": {"name": name}})
        outputs = [{"name": n, "type": t, "links": outgoing.get((ids[key], i), []), "slot_index": i}
                   for i, (n, t) in enumerate(zip(spec.get("output_name", spec["output"]), spec["output"], strict=True))]
        col = depth[key]
        pos = [40 + col * 460, 40 + column[col]]
        column[col] += 780 if kind == "AnyI2VTrajectory" else 260
        size = [440, 740] if kind == "AnyI2VTrajectory" else [340, 200]
        properties = {"Node name for S&R": kind}
        models = [MODELS[v] for v in widgets if isinstance(v, str) and v in MODELS]
        if models:
            properties["models"] = models
        node = {"id": ids[key], "type": kind, "pos": pos, "size": size, "flags": {}, "order": order, "mode": 0,
                "inputs": node_inputs, "outputs": outputs, "properties": properties, "widgets_values": widgets}
        nodes.append(dict(node, **(extra[0] if extra else {})))
    for link in links:  # slot indices and types as the frontend stores them
        target = next(n for n in nodes if n["id"] == link[3])
        link[4] = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == link[4])
        link[5] = info[graph[[k for k, v in ids.items() if v == link[1]][0]][0]]["output"][link[2]]
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": sorted(nodes, key=lambda n: n["id"]),
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}}, "version": 0.4}


def main():
    with ComfyServer(extra_nodes=[STANDIN_ADE]) as server:
        info = server.object_info()
    for name, graph in workflows().items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(to_ui(graph, info), indent=1) + "\n")
        print(path)


if __name__ == "__main__":
    main()
