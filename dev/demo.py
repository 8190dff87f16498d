"""`make demo`: run example workflow 1 headless through a real ComfyUI server and write the video.

Models: with MODELS_DIR pointing at a ComfyUI-style models folder (checkpoints/, animatediff_models/,
loras/) the real files are used; otherwise tiny generated models prove that the whole pipeline runs
(the output is then noise-like, not a real animation). AnimateDiff-Evolved: the real pack when it is
installed in the host's custom_nodes, otherwise the test stand-in (announced loudly).
Outputs (animated WebP + a trajectory overlay sheet) are copied into ./output and their paths printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dev.support.examples import copy_inputs, example_prompt  # noqa: E402
from dev.support.host import cache_dir, comfy_dir  # noqa: E402
from dev.support.server import STANDIN_ADE, TINY_MODELS_PACK, ComfyServer, error_message  # noqa: E402

WORKFLOW = REPO / "example_workflows" / "01_canny_car_one_box.json"
OUTPUT = Path(os.environ.get("ANYI2V_DEMO_OUTPUT", Path.cwd() / "output"))


def find_real_ade() -> Path | None:
    """The real AnimateDiff-Evolved, when it is installed in the host's custom_nodes."""
    nodes = comfy_dir() / "custom_nodes"
    for p in sorted(nodes.iterdir()) if nodes.is_dir() else []:
        if "animatediff-evolved" in p.name.lower() and (p / "__init__.py").is_file():
            return p.resolve()
    return None


async def follow(server: ComfyServer, prompt_id: str, titles: dict) -> None:
    """Print ComfyUI's progress messages for our prompt until it finishes."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={server.client_id}") as ws:
            started = time.monotonic()
            while True:
                entry = server.history(prompt_id)
                if entry and entry.get("status", {}).get("completed") is not None:
                    print(file=sys.stderr)
                    return
                try:
                    msg = await ws.receive(timeout=1.0)
                except asyncio.TimeoutError:
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data.get("type") == "progress" and data["data"].get("prompt_id") == prompt_id:
                    d = data["data"]
                    title = titles.get(str(d.get("node")), d.get("node"))
                    bar = "#" * int(30 * d["value"] / max(1, d["max"]))
                    print(f"\r[{time.monotonic() - started:6.1f}s] {title:<28} [{bar:<30}] {d['value']}/{d['max']}",
                          end="", file=sys.stderr, flush=True)


def main() -> int:
    models_dir = os.environ.get("MODELS_DIR")
    extra = []
    if models_dir:
        models = Path(models_dir).resolve()
        print(f"[demo] real models from {models}", file=sys.stderr)
    else:
        from dev.support.tiny_models import ensure_models

        models = cache_dir()
        ensure_models(models)
        extra.append(TINY_MODELS_PACK)
        print("[demo] MODELS_DIR not set: tiny generated models (proves the pipeline; the video is not a real animation)",
              file=sys.stderr)
    ade = find_real_ade()
    if ade is None:
        print("[demo] AnimateDiff-Evolved is not installed in the host: using the TEST STAND-IN motion module",
              file=sys.stderr)
        extra.append(STANDIN_ADE)
    else:
        extra.append(ade)
    base = cache_dir().parent / "demo-server"
    shutil.rmtree(base / "output", ignore_errors=True)
    with ComfyServer(extra_nodes=extra, models_dir=models, base_dir=base) as server:
        copy_inputs(base / "input")
        prompt = example_prompt(WORKFLOW, server.object_info(), tiny=not models_dir)
        status, body = server.queue(prompt)
        if status != 200:
            print(f"[demo] the server refused the workflow: {json.dumps(body, indent=1)[:3000]}", file=sys.stderr)
            return 1
        print(f"[demo] running {WORKFLOW.name} on {server.url}", file=sys.stderr)
        asyncio.run(follow(server, body["prompt_id"], {k: v["_meta"]["title"] for k, v in prompt.items()}))
        entry = server.wait(body["prompt_id"])
        if entry["status"].get("status_str") != "success":
            print(f"[demo] the workflow failed: {error_message(entry)}\n{server.log_tail(30)}", file=sys.stderr)
            return 1
        OUTPUT.mkdir(parents=True, exist_ok=True)
        written = []
        for node_output in entry["outputs"].values():
            for image in node_output.get("images", []):
                if image.get("type") != "output":
                    continue
                target = OUTPUT / image["filename"]
                target.write_bytes(server.view(image))
                written.append(target)
    if not written:
        print("[demo] the workflow wrote no output files", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
