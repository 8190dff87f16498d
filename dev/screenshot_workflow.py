"""Render example workflow 1 in the real frontend (headless Chromium) to docs/workflow-01.png, with
the condition image behind the trajectory editor's boxes (computed from its image chain, no run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dev.support.browser import ARGS, CHROMIUM  # noqa: E402
from dev.support.examples import copy_inputs  # noqa: E402
from dev.support.server import STANDIN_ADE, TINY_MODELS_PACK, ComfyServer  # noqa: E402


def main(out: Path = REPO / "docs" / "workflow-01.png"):
    from playwright.sync_api import sync_playwright

    workflow = json.loads((REPO / "example_workflows" / "01_canny_car_one_box.json").read_text())
    with ComfyServer(extra_nodes=[STANDIN_ADE, TINY_MODELS_PACK]) as server, sync_playwright() as pw:
        server.post_raw("/settings/Comfy.TutorialCompleted", b"true")
        copy_inputs(server.base / "input")
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 2400, "height": 1300})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
        page.goto(server.url)
        page.wait_for_function("() => !!(window.app && window.app.graph)", timeout=60000)
        page.wait_for_timeout(1000)
        page.evaluate("""async (wf) => { await app.loadGraphData(wf); app.canvas.ds.scale = 0.72;
            app.canvas.ds.offset = [40, 90]; app.graph.setDirtyCanvas(true, true); }""", workflow)
        page.wait_for_function("""() => { const n = app.graph._nodes.find(n => n.type === 'AnyI2VTrajectory');
            const b = n?.anyi2vEditor?.background; return !!(b && b.image && !b.note); }""", timeout=60000)
        page.wait_for_timeout(1000)
        out.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()
    print(out)


if __name__ == "__main__":
    main()
