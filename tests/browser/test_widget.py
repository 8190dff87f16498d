"""The trajectory box editor in the real ComfyUI frontend, in headless Chromium."""

import json

import numpy as np
import pytest

from core.trajectory import Trajectory
from tests.browser.conftest import screenshot
from tests.browser.editor import ADD_NODE, VALUE, add_editor, click, drag, queue_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.host]

def draw_two_boxes(page):
    add_editor(page)
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
    page.evaluate("() => { const p = LiteGraph.createNode('PreviewAny'); app.graph.add(p); window.__node.connect(0, p, 0); }")
    entry = queue_and_wait(page, server, queue="script")
    assert entry["status"]["status_str"] == "success", entry
    sent = next(n for n in entry["prompt"][2].values() if n["class_type"] == "AnyI2VTrajectory")
    received = Trajectory.from_reference_json(sent["inputs"]["trajectory"])
    assert np.allclose(received.boxes(8), Trajectory.from_reference_json(after).boxes(8))
    assert not [e for e in page.console_errors if "anyi2v" in e.lower()]


def test_markup_in_a_workflow_runs_no_script(page):
    evil = json.dumps({"bounding_box": [[10, 10, 50, 50]], "center_traj": [[[30, 30], [40, 30]]],
                       "note": "<img src=x onerror=\"window.__pwned=1\">", "width": 128, "height": 128})
    page.evaluate(ADD_NODE, [256, 128, 8])
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
