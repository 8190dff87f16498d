"""The condition image behind the boxes, on both frontends: computed from the editor's own image
chain without models and without running the graph, kept across a page reload, following the Load
Image choice; a chain with a node the editor does not know runs only from its button (or a run); a
chain with a model or an API node is never run by the editor; a bypassed editor or muted source does
not make it read the graph again and again; a run does not squeeze the editor."""

import io
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dev.support.examples import INPUTS
from tests.browser.editor import (
    add_graph,
    editor_state,
    find_node,
    load_workflow,
    our_deprecations,
    queue_and_wait,
)

pytestmark = [pytest.mark.browser, pytest.mark.host]
EXAMPLE_1 = json.loads((Path(__file__).parents[2] / "example_workflows" / "01_canny_car_one_box.json").read_text())
WAIT_PICTURE = """(old) => { const b = window.__node?.anyi2vEditor?.background;
  return !!(b && b.image && b.image.src !== old && !b.note); }"""


def count_prompts(page):
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith("/prompt") else None)
    return posts


def posted_prompts(page):
    """The bodies of the /prompt requests the page sends from now on."""
    bodies = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data))
            if r.method == "POST" and r.url.endswith("/prompt") else None)
    return bodies


def posted_types(body):
    return sorted(entry["class_type"] for entry in body["prompt"].values())


def load(page, workflow):
    load_workflow(page, workflow)
    find_node(page)
    show_editor(page)


def show_editor(page):
    page.evaluate("""() => { const n = window.__node; app.canvas.ds.scale = 1;
      app.canvas.ds.offset = [-n.pos[0] + 80, -n.pos[1] + 20]; app.graph.setDirtyCanvas(true, true); }""")


def wait_picture(page, old=None, timeout=60000):
    page.wait_for_function(WAIT_PICTURE, arg=old, timeout=timeout)
    return page.evaluate("() => window.__node.anyi2vEditor.background.image.src")


def picture(server, src) -> np.ndarray:
    """The image the editor draws, fetched from the server like the browser did."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(src).query))
    return np.asarray(Image.open(io.BytesIO(server.view(query))).convert("RGB"))


def input_image(name) -> np.ndarray:
    return np.asarray(Image.open(INPUTS / name).convert("RGB"))


def white_on_canvas(page):
    """Pixels of the editor canvas that are white-ish (the edge maps' lines; boxes are coloured)."""
    return page.evaluate("""() => { const ed = window.__node.anyi2vEditor; ed.draw(); const c = ed.canvas;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 1] > 150 && d[i + 2] > 150) n++; return n; }""")


def test_example_1_shows_the_car_before_anything_runs_and_after_a_reload(page, server):
    posts = count_prompts(page)
    history = set(server.get("/history"))
    load(page, EXAMPLE_1)  # Load Image -> Upscale Image -> editor; the models of the graph are not even installed
    src = wait_picture(page)
    assert np.abs(picture(server, src).astype(int) - input_image("anyi2v_canny_car.png")).max() <= 1
    assert white_on_canvas(page) > 300
    assert len(posts) <= 1  # at most one job (none if an earlier test of this page computed the same chain)
    assert editor_state(page, "ed.computeButton.style.display") == "none"  # Load Image, Upscale Image: allowlisted
    assert set(server.get("/history")) == history  # the job ran alone and left the user's history as it was
    jobs = len(posts)
    page.reload()
    page.wait_for_function("() => !!(window.app && window.app.graph && app.graph._nodes.some(n => n.type === 'AnyI2VTrajectory'))", timeout=60000)
    find_node(page)
    show_editor(page)
    assert wait_picture(page) == src  # the same picture, remembered: nothing was run again
    assert len(posts) == jobs
    assert white_on_canvas(page) > 300
    assert our_deprecations(page) == []


def test_picking_another_image_in_load_image_updates_the_picture(page, server):
    load(page, EXAMPLE_1)
    old = wait_picture(page)
    trajectory = page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value")
    at = page.evaluate("""() => { const n = app.graph._nodes.find(n => n.type === 'LoadImage'); app.canvas.ds.scale = 1;
      app.canvas.ds.offset = [-n.pos[0] + 300, -n.pos[1] + 200]; app.graph.setDirtyCanvas(true, true);
      const w = n.widgets.find(w => w.name === 'image'); const r = app.canvas.canvas.getBoundingClientRect();
      return [r.left + 300 + n.size[0] / 2, r.top + 200 + w.y + 10]; }""")
    page.wait_for_timeout(300)
    page.mouse.click(*at)  # the Load Image's file list, as a user opens it
    page.locator(".litecontextmenu .litemenu-entry", has_text="anyi2v_two_balls.png").click()
    src = wait_picture(page, old)
    assert np.abs(picture(server, src).astype(int) - input_image("anyi2v_two_balls.png")).max() <= 1
    # the boxes are untouched, and the new picture put nothing into the undo history:
    # one Ctrl+Z gives back the car, picture included (remembered, not computed again)
    assert page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value") == trajectory
    posts = count_prompts(page)
    # the frontend records the pick in its undo history after the click's events; a loaded machine gets
    # here first, so wait for it as a user's next action would come after it
    page.wait_for_function("() => JSON.stringify(app.extensionManager.workflow.activeWorkflow.changeTracker.activeState)"
                           ".includes('anyi2v_two_balls.png')")
    page.locator(".anyi2v-canvas").focus()
    page.keyboard.press("Control+z")
    page.wait_for_function("() => app.graph._nodes.find(n => n.type === 'LoadImage').widgets[0].value === 'anyi2v_canny_car.png'")
    find_node(page)
    assert wait_picture(page) == old and posts == []
    assert our_deprecations(page) == []


def test_a_chain_with_a_model_says_so_instead_of_running_it(page):
    posts = count_prompts(page)
    add_graph(page)
    show_editor(page)
    page.wait_for_function("() => window.__node.anyi2vEditor.background.note.includes('after a run')", timeout=20000)
    note = editor_state(page, "ed.background.note")
    assert note.startswith("the picture appears after a run (VAE Decode takes a"), note
    assert posts == [] and editor_state(page, "ed.background.image") is None


def test_a_run_keeps_the_editor_its_size_and_picture(page, server):
    add_graph(page, "anyi2v_two_balls.png")
    show_editor(page)
    src = wait_picture(page)
    before = editor_state(page, "[ed.canvas.getBoundingClientRect().width, ed.canvas.getBoundingClientRect().height]")
    entry = queue_and_wait(page, server)  # Ctrl+Enter, the frontend's Queue shortcut
    assert entry["status"]["status_str"] == "success", entry["status"]
    out = next(v for k, v in entry["outputs"].items() if entry["prompt"][2][k]["class_type"] == "AnyI2VTrajectory")
    assert list(out) == ["anyi2v_background"]
    page.wait_for_timeout(800)
    after = editor_state(page, "[ed.canvas.getBoundingClientRect().width, ed.canvas.getBoundingClientRect().height]")
    assert after == before, (before, after)  # no preview image below the editor
    assert editor_state(page, "(n.imgs ?? []).length") == 0
    assert np.abs(picture(server, editor_state(page, "ed.background.image.src")).astype(int)
                  - picture(server, src)).max() <= 1
    assert our_deprecations(page) == []


COMPUTE = ".anyi2v-compute"


def test_a_chain_with_a_node_the_editor_does_not_know_runs_only_from_its_button(page, server):
    bodies = posted_prompts(page)
    add_graph(page, "anyi2v_canny_car.png", middle="FluxKontextImageScale")  # plain types, but not on the allowlist
    show_editor(page)
    page.wait_for_selector(COMPUTE, state="visible", timeout=20000)
    assert page.locator(COMPUTE).inner_text() == "Compute picture: runs Load Image, FluxKontextImageScale"
    assert "only when asked" in editor_state(page, "ed.background.note")
    assert bodies == [] and editor_state(page, "ed.background.image") is None  # decided, and nothing was sent
    page.locator(COMPUTE).click()
    src = wait_picture(page)
    assert len(bodies) == 1 and posted_types(bodies[0]) == ["FluxKontextImageScale", "LoadImage", "PreviewImage"]
    shown = picture(server, src)
    assert shown.shape == (1024, 1024, 3)  # the node's Kontext size for a square image: it did run
    small = np.asarray(Image.fromarray(shown).resize((512, 512), Image.BILINEAR)).astype(int)
    assert np.abs(small - input_image("anyi2v_canny_car.png")).mean() < 4
    assert page.locator(COMPUTE).is_hidden()

    # another image: the button again; a normal run of the graph brings the picture without it
    page.evaluate("""() => { const n = app.graph._nodes.find(n => n.type === 'LoadImage');
      n.widgets.find(w => w.name === 'image').value = 'anyi2v_two_balls.png'; app.graph.setDirtyCanvas(true, true); }""")
    page.wait_for_function("() => window.__node.anyi2vEditor.background.offer !== null", timeout=20000)
    assert len(bodies) == 1
    entry = queue_and_wait(page, server, queue="script")
    assert entry["status"]["status_str"] == "success", entry["status"]
    src = wait_picture(page, src)
    assert picture(server, src).shape == (1024, 1024, 3)
    assert page.locator(COMPUTE).is_hidden() and len(bodies) == 2  # the run, nothing of the editor's own
    assert our_deprecations(page) == []


def test_an_api_node_in_the_chain_is_never_run_by_the_editor(page):
    posts = count_prompts(page)
    add_graph(page, "anyi2v_canny_car.png", middle="FluxProExpandNode")  # text and numbers in, an image out: a paid API
    show_editor(page)
    page.wait_for_function("() => window.__node.anyi2vEditor.background.note.includes('after a run')", timeout=20000)
    assert editor_state(page, "ed.background.note") == "the picture appears after a run (Flux.1 Expand Image calls a paid web API)"
    assert page.locator(COMPUTE).is_hidden() and posts == []
    assert editor_state(page, "ed.background.image") is None


COUNT_READS = """() => { window.__reads = []; if (!app.__countingReads) { app.__countingReads = true;
  const original = app.graphToPrompt.bind(app);
  app.graphToPrompt = (...a) => { window.__reads.push(new Error().stack); return original(...a); }; } }"""


def reads_over(page, seconds):
    """The editor's graphToPrompt calls (serialisations of the whole graph; the frontend's own are not
    counted) during `seconds` of doing nothing."""
    page.evaluate("() => { window.__reads = []; }")
    page.wait_for_timeout(seconds * 1000)  # an absence can only be seen over time: several polls (500 ms)
    stacks = page.evaluate("() => window.__reads")
    ours = [s for s in stacks if "/extensions/ComfyUI-AnyI2V/" in s]
    return len(ours)


def test_a_bypassed_editor_or_muted_or_bypassed_source_is_not_polled_and_comes_back(page):
    add_graph(page, "anyi2v_canny_car.png")
    show_editor(page)
    src = wait_picture(page)
    page.evaluate(COUNT_READS)
    assert reads_over(page, 2) == 0  # nothing changed: the graph is not read
    set_mode = "([type, mode]) => { app.graph._nodes.find(n => n.type === type).mode = mode; app.graph.setDirtyCanvas(true, true); }"
    page.evaluate(set_mode, ["AnyI2VTrajectory", 4])  # bypassed: the editor's chain is out of the prompt
    page.wait_for_function("() => window.__node.anyi2vEditor.background.note.includes('bypassed')", timeout=10000)
    assert editor_state(page, "ed.background.note") == "the picture is not updated: the editor is bypassed"
    assert reads_over(page, 2) == 0
    page.evaluate(set_mode, ["AnyI2VTrajectory", 0])
    assert wait_picture(page) == src  # back, from memory
    page.evaluate(set_mode, ["LoadImage", 2])  # muted source
    page.wait_for_function("() => window.__node.anyi2vEditor.background.note.includes('muted')", timeout=10000)
    assert editor_state(page, "ed.background.note") == "the picture is not updated: Load Image is muted"
    assert reads_over(page, 2) == 0
    page.evaluate(set_mode, ["LoadImage", 0])
    assert wait_picture(page) == src
    page.evaluate(set_mode, ["LoadImage", 4])  # a bypassed source with nothing to pass on
    page.wait_for_function("() => window.__node.anyi2vEditor.background.note.includes('Load Image is bypassed')", timeout=10000)
    assert editor_state(page, "ed.background.note") == "the picture is not updated: Load Image is bypassed"
    assert reads_over(page, 2) == 0
    page.evaluate(set_mode, ["LoadImage", 0])
    assert wait_picture(page) == src
    assert editor_state(page, "ed.background.stale") is False
