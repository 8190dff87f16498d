"""Editing in the box editor on both frontends with real mouse and keyboard: one undo history with
ComfyUI, path extension, the empty and error states, limits, freehand sampling, the drawing area."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.browser.editor import (
    add_editor,
    add_editor_from_search,
    band,
    boxes,
    canvas_point,
    click,
    drag,
    editor_state,
    find_node,
    mode,
    our_deprecations,
    pixel,
    value,
)

pytestmark = [pytest.mark.browser, pytest.mark.host]
REFUSED = json.loads((Path(__file__).parents[1] / "fixtures" / "trajectory_refused.json").read_text())


def test_one_undo_history_with_comfyui(page):
    add_editor(page)
    drag(page, (20, 20), (80, 70))
    drag(page, (150, 60), (200, 110))
    assert len(boxes(page)) == 2
    page.locator(".anyi2v-canvas").focus()
    page.keyboard.press("Control+z")  # one step back, not two (the editor keeps no history of its own)
    page.wait_for_timeout(600)
    assert len(boxes(page)) == 1
    page.click(".anyi2v-undo")  # the button after ComfyUI rebuilt the node: still ComfyUI's undo
    page.wait_for_timeout(600)
    assert boxes(page) == []
    page.click(".anyi2v-redo")
    page.wait_for_timeout(600)
    assert len(boxes(page)) == 1
    page.locator(".anyi2v-canvas").focus()
    page.keyboard.press("Control+y")
    page.wait_for_timeout(600)
    assert np.allclose(boxes(page), [[20, 20, 80, 70], [150, 60, 200, 110]], atol=2)
    # ComfyUI's undo from the graph (its canvas focused) steps through the editor's edits too
    page.mouse.click(900, 500)
    page.keyboard.press("Control+z")
    page.wait_for_timeout(600)
    assert len(boxes(page)) == 1
    # and the editor keeps working on the rebuilt node; Delete removes the selected box, not the node
    drag(page, (100, 90), (140, 120))
    assert len(boxes(page)) == 2
    page.locator(".anyi2v-canvas").focus()
    page.keyboard.press("Delete")
    page.wait_for_timeout(300)
    assert len(boxes(page)) == 1 and page.evaluate("() => app.graph._nodes.length") == 1
    assert our_deprecations(page) == []


def test_path_mode_extends_the_path_and_freehand_is_fine(page):
    add_editor(page)
    # switching modes at the old default width moves nothing (a bold label used to wrap the bar)
    page.evaluate("() => { window.__node.setSize([420, 620]); app.graph.setDirtyCanvas(true, true); }")
    page.wait_for_timeout(200)
    tops = []
    for name in ("box", "path", "points", "box"):
        mode(page, name)
        tops.append(editor_state(page, "ed.canvas.getBoundingClientRect().top"))
    assert max(tops) - min(tops) < 0.5, tops
    page.evaluate("() => { window.__node.setSize([520, 620]); app.graph.setDirtyCanvas(true, true); }")
    page.wait_for_timeout(200)
    drag(page, (20, 20), (80, 70))  # box 0, centre (50, 45)
    mode(page, "path")
    click(page, (120, 45))
    click(page, (200, 45))
    mode(page, "box")
    drag(page, (150, 80), (190, 120))  # box 1 is selected now
    click(page, (30, 30))  # select box 0 again
    mode(page, "path")
    click(page, (220, 100))  # extends box 0's path: the points clicked before stay
    assert np.allclose(value(page)["center_traj"][0], [[50, 45], [120, 45], [200, 45], [220, 100]], atol=2)
    click(page, (100, 20), modifiers=["Shift"])  # Shift+click starts it over from the centre
    assert np.allclose(value(page)["center_traj"][0], [[50, 45], [100, 20]], atol=2)
    # freehand: a drag records a point every few screen pixels
    a, b = canvas_point(page, 100, 20), canvas_point(page, 240, 100)
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=80)
    page.mouse.up()
    path = np.array(value(page)["center_traj"][0])
    scale = editor_state(page, "ed.view().scale / (ed.canvas.width / ed.canvas.getBoundingClientRect().width)")
    gaps = np.linalg.norm(np.diff(path[2:], axis=0), axis=1) * scale  # screen px between freehand points
    stroke = np.hypot(b[0] - a[0], b[1] - a[1])
    assert len(path) >= 2 + stroke / 8, (len(path), stroke)
    assert gaps.max() <= 8, gaps
    assert np.allclose(path[-1], [240, 100], atol=2)
    assert our_deprecations(page) == []


def textarea(page):
    """The trajectory JSON box (the widget's own textarea), marked for a locator."""
    page.evaluate("""() => { const n = window.__node; const w = n.widgets.find(w => w.name === 'trajectory');
      const el = w.element ?? w.inputEl; el.dataset.anyi2vText = '1'; }""")
    return page.locator("textarea[data-anyi2v-text='1']")


def test_empty_is_neutral_and_an_error_keeps_the_boxes_drawn(page):
    add_editor(page)
    status = editor_state(page, "[ed.status.textContent, ed.status.style.color]")
    assert status[0].startswith("empty") and "error" not in status[0] and "JSON" not in status[0]
    drag(page, (40, 30), (120, 100))
    page.click(".anyi2v-clear")
    assert value(page) is None
    status = editor_state(page, "[ed.status.textContent, ed.status.style.color]")
    assert status[0].startswith("empty") and "error" not in status[0] and status[1] != "rgb(255, 128, 128)"

    drag(page, (40, 30), (120, 100))
    good = page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value")
    box_colour = pixel(page, 40, 65)  # the box's left edge
    assert box_colour[0] > 200 and box_colour[1] < 150, box_colour
    text = textarea(page)
    text.click()
    page.keyboard.press("Control+a")
    page.keyboard.type('{"bounding_box": [[40, 30')
    page.wait_for_timeout(700)
    status = editor_state(page, "[ed.status.textContent, ed.status.style.color]")
    assert status[0].startswith("error: trajectory: malformed JSON") and status[1] == "rgb(255, 128, 128)", status
    edge = pixel(page, 40, 65)
    assert edge[0] > 120 and edge[0] > edge[1] + 40, edge  # the last valid box is still drawn (dimmed)
    top = band(page, top=True)
    assert top[0] > 110 and top[0] > 3 * top[1], top  # the red error banner across the top of the canvas
    drag(page, (150, 20), (200, 60))  # drawing is refused while the text is broken: nothing is lost
    assert page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value") == '{"bounding_box": [[40, 30'
    text.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(good)
    page.wait_for_timeout(700)
    assert editor_state(page, "ed.status.textContent").startswith("1 box")
    assert our_deprecations(page) == []


def test_the_editor_refuses_absurd_values_and_huge_pastes(page):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    add_editor(page, width=128, height=96)
    drag(page, (10, 20), (50, 60))
    before = page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value")
    for case in REFUSED:  # the cases core/trajectory.py refuses too
        page.evaluate("(t) => navigator.clipboard.writeText(t)", json.dumps(case["trajectory"]))
        page.click(".anyi2v-paste")
        page.wait_for_timeout(150)
        status = editor_state(page, "ed.status.textContent")
        assert status.startswith(f"paste refused: {case['field']}: "), (case["name"], status)
        assert page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value") == before
    # a valid paste goes in
    page.evaluate("(t) => navigator.clipboard.writeText(t)", json.dumps(dict(REFUSED[0]["trajectory"], bounding_box=[[5, 5, 40, 40]])))
    page.click(".anyi2v-paste")
    page.wait_for_timeout(150)
    assert np.allclose(boxes(page), [[5, 5, 40, 40]])
    # 10 MB pasted into the JSON box with Ctrl+V: refused at once, the box keeps its text
    after_paste = page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value")
    page.evaluate("(n) => navigator.clipboard.writeText('[' + '1,'.repeat(n) + '1]')", 5_000_000)
    text = textarea(page)
    text.click()
    page.keyboard.press("End")
    start = time.perf_counter()
    page.keyboard.press("Control+v")
    page.wait_for_function("() => window.__node.anyi2vEditor.status.textContent.startsWith('paste refused')", timeout=10000)
    print(f"10 MB paste refused after {time.perf_counter() - start:.2f} s")
    assert text.input_value() == after_paste
    assert page.evaluate("() => window.__node.widgets.find(w => w.name === 'trajectory').value") == after_paste
    assert our_deprecations(page) == []


def test_a_new_node_has_a_large_drawing_area(page):
    add_editor_from_search(page)
    size = editor_state(page, "[n.size[0], n.size[1], ed.canvas.getBoundingClientRect().width, ed.canvas.getBoundingClientRect().height, app.canvas.ds.scale]")
    print(f"new node {size[0]:.0f}x{size[1]:.0f}: drawing area {size[2]:.0f}x{size[3]:.0f} px at zoom {size[4]}")
    side = min(size[2], size[3]) / size[4]
    assert side >= 440, size  # a 512 x 512 image is drawn at least 440 px square (was about 236)
    drag(page, (100, 100), (300, 300))  # next to the example box a new node starts with
    assert np.allclose(boxes(page)[-1], [100, 100, 300, 300], atol=2)
    find_node(page)
    assert our_deprecations(page) == []
