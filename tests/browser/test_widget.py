"""The trajectory box editor in the real ComfyUI frontend, in headless Chromium."""

import json

import numpy as np
import pytest

from core.trajectory import Trajectory
from tests.browser.conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.host]

ADD_NODE = """() => {
  const n = LiteGraph.createNode('AnyI2VTrajectory');
  n.pos = [60, 60];
  app.graph.add(n);
  n.widgets.find(w => w.name === 'trajectory').value = '';
  n.widgets.find(w => w.name === 'width').value = 256;
  n.widgets.find(w => w.name === 'height').value = 128;
  n.widgets.find(w => w.name === 'frames').value = 8;
  n.setSize([520, 620]);
  app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1;
  app.graph.setDirtyCanvas(true, true);
  window.__node = n;
  return n.id;
}"""
VALUE = "() => window.__node.widgets.find(w => w.name === 'trajectory').value"


def canvas_point(page, x, y):
    """Screen position of image pixel (x, y) in the editor canvas, from the editor's own view transform."""
    return page.evaluate("""([x, y]) => {
      const ed = window.__node.anyi2vEditor; ed.draw();
      const v = ed.view(); const r = ed.canvas.getBoundingClientRect();
      return [r.left + (v.ox + x * v.scale) * r.width / ed.canvas.width, r.top + (v.oy + y * v.scale) * r.height / ed.canvas.height];
    }""", [x, y])


def drag(page, a, b, steps=6):
    page.mouse.move(*canvas_point(page, *a))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, *b), steps=steps)
    page.mouse.up()


def click(page, p):
    page.mouse.click(*canvas_point(page, *p))


def draw_two_boxes(page):
    page.evaluate(ADD_NODE)
    page.wait_for_selector(".anyi2v-canvas")
    page.wait_for_timeout(300)
    drag(page, (20, 20), (80, 70))  # box 0
    page.click(".anyi2v-mode-path")
    click(page, (120, 45))
    click(page, (200, 45))
    page.click(".anyi2v-mode-box")
    drag(page, (150, 80), (190, 120))  # box 1 (selected)
    page.click(".anyi2v-mode-path")
    click(page, (170, 40))
    page.click(".anyi2v-mode-points")
    click(page, (165, 95))
    return json.loads(page.evaluate(VALUE))


def test_draw_save_reload_resize_and_queue(page, server):
    value = draw_two_boxes(page)
    assert value["width"] == 256 and value["height"] == 128
    assert len(value["bounding_box"]) == 2
    b0, b1 = np.array(value["bounding_box"])
    assert np.allclose(b0, [20, 20, 80, 70], atol=2) and np.allclose(b1, [150, 80, 190, 120], atol=2)
    assert np.allclose(value["center_traj"][0], [[50, 45], [120, 45], [200, 45]], atol=2)
    assert np.allclose(value["center_traj"][1], [[170, 100], [170, 40]], atol=2)
    assert np.allclose(value["query_point"][1], [[165, 95]], atol=2)
    screenshot(page, f"widget-{server.frontend.split()[0]}.png")

    # save and reload the workflow: the JSON survives exactly
    text = page.evaluate(VALUE)
    page.evaluate("""async () => { const wf = JSON.parse(JSON.stringify(app.graph.serialize()));
        await app.loadGraphData(wf); window.__node = app.graph._nodes.find(n => n.type === 'AnyI2VTrajectory'); }""")
    page.wait_for_timeout(300)
    assert page.evaluate(VALUE) == text

    # resize the node: same JSON, and clicks still land on the right image pixel
    page.evaluate("() => { window.__node.setSize([900, 900]); app.graph.setDirtyCanvas(true, true); }")
    page.wait_for_timeout(300)
    assert page.evaluate(VALUE) == text
    page.click(".anyi2v-mode-points")
    click(page, (40, 30))
    after = json.loads(page.evaluate(VALUE))
    assert np.allclose(after["query_point"][0], [[40, 30]], atol=2)

    # queue the prompt (with an output node): the Python side gets the same boxes
    page.evaluate("""async () => { const p = LiteGraph.createNode('PreviewAny'); app.graph.add(p);
        window.__node.connect(0, p, 0); await app.queuePrompt(0, 1); }""")
    entry = None
    for _ in range(100):
        page.wait_for_timeout(200)
        history = server.get("/history")
        if history:
            entry = next(iter(history.values()))
            if entry.get("status", {}).get("completed") is not None:
                break
    assert entry and entry["status"]["status_str"] == "success", entry
    sent = next(n for n in entry["prompt"][2].values() if n["class_type"] == "AnyI2VTrajectory")
    received = Trajectory.from_reference_json(sent["inputs"]["trajectory"])
    assert np.allclose(received.boxes(8), Trajectory.from_reference_json(after).boxes(8))
    assert not [e for e in page.console_errors if "anyi2v" in e.lower()]


def test_markup_in_a_workflow_runs_no_script(page):
    evil = json.dumps({"bounding_box": [[10, 10, 50, 50]], "center_traj": [[[30, 30], [40, 30]]],
                       "note": "<img src=x onerror=\"window.__pwned=1\">", "width": 128, "height": 128})
    page.evaluate(ADD_NODE)
    page.evaluate("""(v) => { const w = window.__node.widgets.find(w => w.name === 'trajectory');
        w.value = v; w.callback?.(v); }""", evil)
    page.evaluate("""async () => { const wf = JSON.parse(JSON.stringify(app.graph.serialize())); await app.loadGraphData(wf); }""")
    bad = "<img src=x onerror=\"window.__pwned=2\"> {"
    page.evaluate("""(v) => { const n = app.graph._nodes.find(n => n.type === 'AnyI2VTrajectory');
        const w = n.widgets.find(w => w.name === 'trajectory'); w.value = v; n.anyi2vEditor.draw(); window.__node = n; }""", bad)
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__pwned") is None
    assert page.evaluate("() => document.querySelectorAll('.anyi2v-editor img').length") == 0
    assert "malformed" in page.evaluate("() => window.__node.anyi2vEditor.status.textContent")
