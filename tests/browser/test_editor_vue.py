"""The box editor with "Nodes 2.0" (the frontend's Vue node renderer) switched on: draw, resize the
node, save and reload, run, the picture behind the boxes and its Compute picture button, with real
mouse and keyboard."""

import numpy as np
import pytest

from core.trajectory import Trajectory
from tests.browser.conftest import fresh
from tests.browser.editor import (
    add_graph,
    boxes,
    click,
    drag,
    editor_state,
    find_node,
    mode,
    our_deprecations,
    queue_and_wait,
    value,
)

pytestmark = [pytest.mark.browser, pytest.mark.host]

def test_nodes_2_draw_resize_save_reload_run(vue_page, server):
    page = vue_page
    add_graph(page, "anyi2v_canny_car.png")
    assert page.evaluate("() => !!document.querySelector(`[data-node-id='${window.__node.id}'] .anyi2v-canvas`)")
    page.wait_for_function("() => { const b = window.__node.anyi2vEditor.background; return !!(b.image && !b.note); }", timeout=30000)

    drag(page, (300, 60), (420, 160))  # a second box next to the example box
    assert np.allclose(boxes(page)[-1], [300, 60, 420, 160], atol=3)
    mode(page, "path")
    click(page, (470, 120))
    assert np.allclose(value(page)["center_traj"][-1], [[360, 110], [470, 120]], atol=3)

    # resize the node by its corner handle: the drawing area follows and clicks still land right
    before = editor_state(page, "[n.size[0], n.size[1], ed.canvas.getBoundingClientRect().width]")
    corner = page.locator(f"[data-node-id='{page.evaluate('() => window.__node.id')}'] [aria-label='Resize from bottom-right corner']")
    box = corner.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 60, steps=8)
    page.mouse.up()
    page.wait_for_timeout(400)
    after = editor_state(page, "[n.size[0], n.size[1], ed.canvas.getBoundingClientRect().width]")
    assert after[0] > before[0] + 100 and after[2] > before[2] + 100, (before, after)
    mode(page, "points")
    click(page, (330, 80))
    assert np.allclose(value(page)["query_point"][-1], [[330, 80]], atol=3)

    # save and reload the workflow: the JSON survives exactly and the editor works on
    text = page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value")
    page.evaluate("async () => { const wf = JSON.parse(JSON.stringify(app.graph.serialize())); await app.loadGraphData(wf); }")
    find_node(page)
    page.wait_for_selector(".anyi2v-canvas")
    assert page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value") == text
    page.wait_for_function("() => !!window.__node.anyi2vEditor.background.image", timeout=30000)
    mode(page, "box")
    drag(page, (40, 400), (100, 470))
    assert len(boxes(page)) == 3

    # run: the frontend's Queue shortcut from the editor; the server gets the editor's boxes
    sent_text = page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value")
    entry = queue_and_wait(page, server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    sent = next(n for n in entry["prompt"][2].values() if n["class_type"] == "AnyI2VTrajectory")
    assert np.allclose(Trajectory.from_reference_json(sent["inputs"]["trajectory"]).boxes(4),
                       Trajectory.from_reference_json(sent_text).boxes(4))
    assert our_deprecations(page) == []

    # a chain the editor does not run by itself: its button, pressed inside the Vue node, computes it
    fresh(page)
    add_graph(page, "anyi2v_two_balls.png", middle="FluxKontextImageScale")
    button = page.locator(f"[data-node-id='{page.evaluate('() => window.__node.id')}'] .anyi2v-compute")
    button.wait_for(state="visible", timeout=20000)
    assert button.inner_text() == "Compute picture: runs Load Image, FluxKontextImageScale"
    button.click()
    page.wait_for_function("() => { const b = window.__node.anyi2vEditor.background; return !!(b.image && !b.note); }", timeout=30000)
    assert editor_state(page, "ed.background.image.naturalWidth") == 1024 and button.is_hidden()
    assert our_deprecations(page) == []
