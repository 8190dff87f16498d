"""Reliability through a real ComfyUI server: bad inputs, interrupts, leaks, determinism, load."""

import json
import math
import time

import pytest

from dev.support.host import cache_dir
from dev.support.images import edge_image
from dev.support.server import STANDIN_ADE, TINY_MODELS_PACK, ComfyServer, error_message
from dev.support.tiny_models import OTHER_CHECKPOINT_NAME, ensure_models
from tests.host import prompts

pytestmark = pytest.mark.host


def write_png(server, name, array):
    from PIL import Image

    Image.fromarray(array).save(server.base / "input" / name)
    return name


@pytest.fixture(scope="module")
def server():
    ensure_models(cache_dir())
    with ComfyServer(extra_nodes=[STANDIN_ADE, TINY_MODELS_PACK], models_dir=cache_dir()) as s:
        write_png(s, "cond.png", edge_image(64, 64))
        write_png(s, "wide.png", edge_image(96, 64, box=(20, 16, 70, 48)))
        yield s


def good(seed=3, frames=4, iterations=2, prefix="good", image="cond.png", **settings):
    p = prompts.full(frames=frames, image_name=image, iterations=iterations, seed=seed, **settings)
    p["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["aks", 0], "vae": ["ckpt", 2]}}
    p["save"] = {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": prefix}}
    return p


def plain(seed=5, prefix="plain"):
    p = prompts.ksampler(prompts.base(image_name="cond.png"), ("ade", 0), seed=seed, node="ks")
    p["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}}
    p["save"] = {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": prefix}}
    return p


def images(server, entry):
    return [server.view(img) for out in entry["outputs"].values() for img in out.get("images", [])]


def succeeded(entry):
    return entry["status"]["status_str"] == "success"


def with_traj(text, **kw):
    p = good(**kw)
    p["traj"]["inputs"]["trajectory"] = text
    return p


REF = json.loads(prompts.TRAJ)


def bad_prompts():
    nan = json.dumps(dict(REF, bounding_box=[[16, 20, math.nan, 44]]))
    other = good()
    other["ckpt2"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": OTHER_CHECKPOINT_NAME}}
    other["inj"]["inputs"]["model"] = ["ckpt2", 0]
    batch = good()
    batch["rep"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["img", 0], "amount": 2}}
    batch["inv"]["inputs"]["image"] = ["rep", 0]
    blocks = good()
    blocks["inv"]["inputs"]["query_blocks"] = "up_blocks.0.attentions.0"
    return {
        "malformed trajectory": (with_traj("{not json"), "malformed"),
        "empty trajectory": (with_traj(""), "empty"),
        "box outside the image": (with_traj(json.dumps(dict(REF, bounding_box=[[200, 200, 260, 260]]))), "outside"),
        "NaN in a box": (with_traj(nan), "NaN"),
        "zero-size box": (with_traj(json.dumps(dict(REF, bounding_box=[[16, 20, 16, 44]]))), "zero or negative"),
        "condition image batch": (batch, "exactly one condition image"),
        "features from another model": (other, "channels at output block"),
        "MODEL without the blocks": (blocks, "has no attention"),
        "absurd path point": (with_traj(json.dumps(dict(REF, center_traj=[[[30, 32], [1e300, 32]]]))), "outside the allowed area"),
        "1-frame latent": (good(frames=1), "at least 2 frames"),
    }


BAD = ["malformed trajectory", "empty trajectory", "box outside the image", "NaN in a box", "zero-size box",
       "condition image batch", "features from another model", "MODEL without the blocks",
       "absurd path point", "1-frame latent"]


def test_the_bad_cases_are_all_listed():
    assert list(bad_prompts()) == BAD


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_a_clear_error_and_the_server_keeps_serving(server, name):
    prompt, message = bad_prompts()[name]
    status, body = server.queue(prompt)
    if status != 200:  # refused at validation: the message names the input
        assert message.lower() in json.dumps(body).lower() or body.get("node_errors"), body
    else:
        entry = server.wait(body["prompt_id"])
        assert not succeeded(entry)
        assert message.lower() in error_message(entry).lower(), error_message(entry)
    assert succeeded(server.run(good(prefix="after_bad")))


def test_handled_differences_are_not_errors(server):
    """A trajectory laid out for another frame count is resampled; a condition image of another size
    than the latent has its features resized; opt_percent 0 still optimises the first step (issue 12)."""
    frames = json.dumps(dict(REF, frames=9))
    assert succeeded(server.run(with_traj(frames)))
    assert succeeded(server.run(good(image="wide.png")))
    entry = server.run(good(opt_percent=0.0, prefix="opt0"))
    assert succeeded(entry) and "optimising the latent before steps 0 of" in server.log_tail(400)


def test_determinism_interrupt_and_no_leak(server):
    first_plain = images(server, server.run(plain()))
    a = images(server, server.run(good(seed=1)))
    server.run(good(seed=2))
    assert images(server, server.run(good(seed=1))) == a  # re-executed (seed 2 ran in between), identical

    # an interrupt inside the optimisation stops within an iteration
    status, body = server.queue(good(seed=4, iterations=60, opt_percent=0.9, steps=6))
    assert status == 200
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not server.get("/queue")["queue_running"]:
        time.sleep(0.05)
    time.sleep(2.0)  # well inside the 60 iterations
    server.interrupt()
    t0 = time.monotonic()
    entry = server.wait(body["prompt_id"], timeout=60)
    assert time.monotonic() - t0 < 10
    assert not succeeded(entry)
    assert any(ev == "execution_interrupted" for ev, _ in entry["status"]["messages"])

    assert images(server, server.run(good(seed=1))) == a
    server.queue(with_traj("{broken"))
    assert images(server, server.run(plain())) == first_plain


def test_load_of_twenty_mixed_prompts(server):
    server.run(good(seed=10))
    assert server.queue(with_traj("{warmup error"))[0] == 400  # refused at validation, before anything runs
    before = server.rss_mb()
    bad = list(bad_prompts().values())
    queued = []
    for i in range(20):
        if i % 2:
            prompt, _ = bad[i % len(bad)]
            queued.append(("bad", server.queue(prompt)))
        else:
            queued.append(("good", server.queue(good(seed=20 + i % 4, prefix=f"load{i}"))))
    for kind, (status, body) in queued:
        if status != 200:
            assert kind == "bad", body
            continue
        entry = server.wait(body["prompt_id"], timeout=600)
        assert succeeded(entry) == (kind == "good"), error_message(entry)
    after = server.rss_mb()
    assert after <= before * 1.10, (before, after)
