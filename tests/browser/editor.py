"""Driving the trajectory box editor in the real frontend: real mouse and keyboard on its canvas,
positions in image pixels from the editor's own view transform."""

from __future__ import annotations

import json

ADD_NODE = """([w, h, frames]) => {
  const n = LiteGraph.createNode('AnyI2VTrajectory');
  n.pos = [60, 60];
  app.graph.add(n);
  n.widgets.find(w => w.name === 'trajectory').value = '';
  n.widgets.find(w => w.name === 'width').value = w;
  n.widgets.find(w => w.name === 'height').value = h;
  n.widgets.find(w => w.name === 'frames').value = frames;
  n.setSize([520, 620]);
  app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1;
  app.graph.setDirtyCanvas(true, true);
  window.__node = n;
  return n.id;
}"""
FIND_NODE = "() => { window.__node = app.graph._nodes.find(n => n.type === 'AnyI2VTrajectory'); return !!window.__node; }"
VALUE = "() => window.__node.widgets.find(w => w.name === 'trajectory').value"
RECORD = """() => { const t = app.extensionManager.workflow.activeWorkflow.changeTracker;
  (t.captureCanvasState ?? t.checkState).call(t); }"""


def workflow_models(workflow) -> list[dict]:
    """The models a workflow names for the frontend (node properties.models, the workflow's own models list)."""
    named = [m for n in workflow.get("nodes", []) for m in (n.get("properties") or {}).get("models", [])]
    return named + list(workflow.get("models", []))


MISSING_MODELS_SHOWN = """() => {
  if ([...document.querySelectorAll('.p-dialog')].some(d => d.innerText.includes('Missing Models'))) return 'dialog';
  return [...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'View details') ? 'overview' : null;
}"""


def load_workflow(page, workflow) -> str:
    """`workflow` loaded as the frontend loads any. One that names models this server lacks (the examples name
    SD1.5 and the motion module, which no test server has) makes the frontend say so when the load is done: a
    modal Missing Models dialog (1.32, on top of any missing nodes dialog) or an issues notice whose "View
    details" opens the Workflow Overview panel (1.58). Its text is returned after it is read and closed as a user
    does: waiting for it matters, a click on the canvas before the modal opens lands on its mask. "" when none
    comes (the examples test asserts it does there)."""
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    if not workflow_models(workflow):
        return ""
    try:
        shown = page.wait_for_function(MISSING_MODELS_SHOWN, timeout=8000).json_value()
    except Exception:  # 1.32 sometimes shows none after a page reload (seen once in a full run; cause not found)
        return ""
    if shown == "dialog":
        text = page.locator(".p-dialog", has_text="Missing Models").inner_text()
        for _ in range(5):
            if page.locator(".p-dialog-mask").count() == 0:
                break
            page.keyboard.press("Escape")
            page.wait_for_timeout(200)
        page.wait_for_function("() => document.querySelectorAll('.p-dialog-mask').length === 0")
        return text
    page.get_by_text("View details").first.click()
    panel = page.locator("[data-testid=properties-panel]")
    panel.get_by_text("Missing Models").first.wait_for(state="visible")
    text = panel.inner_text()
    page.get_by_role("button", name="Toggle properties panel").click()
    panel.wait_for(state="hidden")
    return text


def add_editor(page, width=256, height=128, frames=8):
    """A node set up by script (then recorded in the undo history, as adding it in the UI is)."""
    page.evaluate(ADD_NODE, [width, height, frames])
    page.wait_for_selector(".anyi2v-canvas")
    page.wait_for_timeout(300)
    page.evaluate(RECORD)


GRAPH = """([image, middle]) => {
  const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n); return n; };
  const ed = add('AnyI2VTrajectory', [420, 40]);
  const slot = ed.inputs.findIndex(i => i.name === 'image');
  if (image) {
    const load = add('LoadImage', [40, 40]); load.widgets.find(w => w.name === 'image').value = image;
    if (middle) {
      const m = add(middle, [40, 400]); load.connect(0, m, m.inputs.findIndex(i => i.name === 'image'));
      m.connect(0, ed, slot);
    } else load.connect(0, ed, slot);
  } else {
    const latent = add('EmptyLatentImage', [40, 40]); const decode = add('VAEDecode', [40, 300]);
    latent.connect(0, decode, 0); decode.connect(0, ed, slot);
  }
  const sink = add('PreviewAny', [1000, 40]); ed.connect(0, sink, 0);
  app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.graph.setDirtyCanvas(true, true);
  window.__node = ed;
}"""


def add_graph(page, image=None, middle=None):
    """Load Image `image` (or, with None, Empty Latent -> VAE Decode: a model input) -> editor -> Preview Any,
    with node type `middle` between Load Image and the editor if given (on its input named image), set up
    by script and recorded in the undo history."""
    page.evaluate(GRAPH, [image, middle])
    page.wait_for_selector(".anyi2v-canvas")
    page.evaluate(RECORD)


# the search dialog's highlighted result (1.32's autocomplete marks it p-focus, newer ones aria-selected)
SEARCH_PICKS_EDITOR = """() => {
  const o = document.querySelector('.p-autocomplete-option.p-focus, [role=option][aria-selected=true]');
  const t = o ? o.textContent.replace(/\\s+/g, ' ') : '';
  return t.startsWith('AnyI2V Trajectory') && !t.startsWith('AnyI2V Trajectory From');
}"""


def add_editor_from_search(page, at=(300, 300)):
    """The node added as a user does: double-click the canvas, type its name, Enter."""
    page.evaluate("() => { app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1; app.graph.setDirtyCanvas(true, true); }")
    # waits on what the user sees, not on time: a loaded machine opens the dialog and filters late; a
    # double-click that opened nothing (seen about once in four full runs with 1.58, cause not found) is
    # repeated, as a user repeats it
    for attempt in range(3):
        page.mouse.dblclick(*at)
        try:
            page.wait_for_function("() => document.activeElement && document.activeElement.tagName === 'INPUT'",
                                   timeout=10000)
            break
        except Exception:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    page.keyboard.type("AnyI2V Trajectory", delay=10)
    page.wait_for_function(SEARCH_PICKS_EDITOR)
    page.keyboard.press("Enter")
    page.wait_for_selector(".anyi2v-canvas")
    page.wait_for_timeout(300)
    page.mouse.click(*at)  # newer frontends attach the new node to the pointer until a click places it
    page.wait_for_timeout(300)
    assert page.evaluate(FIND_NODE)


def find_node(page):
    """After ComfyUI's undo/redo (which rebuilds every node) the node object is a new one."""
    assert page.evaluate(FIND_NODE)


def value(page):
    text = page.evaluate(VALUE)
    return json.loads(text) if text else None


def boxes(page):
    find_node(page)
    v = value(page)
    return v["bounding_box"] if v else []


def canvas_point(page, x, y):
    """Screen position of image pixel (x, y) in the editor canvas."""
    return page.evaluate("""([x, y]) => {
      const ed = window.__node.anyi2vEditor; ed.draw();
      const v = ed.view(); const r = ed.canvas.getBoundingClientRect();
      return [r.left + (v.ox + x * v.scale) * r.width / ed.canvas.width, r.top + (v.oy + y * v.scale) * r.height / ed.canvas.height];
    }""", [x, y])


def drag(page, a, b, steps=6, modifiers=()):
    page.mouse.move(*canvas_point(page, *a))
    for key in modifiers:
        page.keyboard.down(key)
    page.mouse.down()
    page.mouse.move(*canvas_point(page, *b), steps=steps)
    page.mouse.up()
    for key in modifiers:
        page.keyboard.up(key)


def click(page, p, modifiers=()):
    for key in modifiers:
        page.keyboard.down(key)
    page.mouse.click(*canvas_point(page, *p))
    for key in modifiers:
        page.keyboard.up(key)


def mode(page, name):
    page.click(f".anyi2v-mode-{name}")


def editor_state(page, expression):
    """Evaluate `expression` with `ed` = the editor and `n` = its node."""
    return page.evaluate(f"() => {{ const n = window.__node; const ed = n.anyi2vEditor; return {expression}; }}")


def pixel(page, x, y):
    """[r, g, b, a] drawn on the editor canvas at image pixel (x, y)."""
    return page.evaluate("""([x, y]) => {
      const ed = window.__node.anyi2vEditor; ed.draw(); const v = ed.view();
      const px = Math.round(v.ox + x * v.scale), py = Math.round(v.oy + y * v.scale);
      return Array.from(ed.canvas.getContext('2d').getImageData(px, py, 1, 1).data);
    }""", [x, y])


def band(page, top, rows=6):
    """Mean [r, g, b] of a band of the canvas, `rows` device pixels from its top (top=True) or bottom."""
    return page.evaluate("""([top, rows]) => {
      const c = window.__node.anyi2vEditor.canvas; const y = top ? 1 : c.height - rows - 1;
      const d = c.getContext('2d').getImageData(0, y, c.width, rows).data; const s = [0, 0, 0];
      for (let i = 0; i < d.length; i += 4) { s[0] += d[i]; s[1] += d[i + 1]; s[2] += d[i + 2]; }
      return s.map(v => v / (d.length / 4));
    }""", [top, rows])


def our_deprecations(page):
    """Frontend deprecation warnings raised from this pack's code (stacks through its web files)."""
    return [d for d in page.evaluate("() => window.__deprecations ?? []") if "/extensions/ComfyUI-AnyI2V/" in d]


def queue_and_wait(page, server, queue="keyboard", polls=300):
    """Queue the graph (Ctrl+Enter with the editor focused, the frontend's own shortcut; or
    app.queuePrompt) and return the new /history entry once it has completed."""
    before = set(server.get("/history") or {})
    if queue == "keyboard":
        page.locator(".anyi2v-canvas").first.focus()
        page.keyboard.press("Control+Enter")
    else:
        page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    for _ in range(polls):
        page.wait_for_timeout(200)
        new = {k: v for k, v in (server.get("/history") or {}).items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("completed") is not None]
        if done:
            return done[0]
    raise AssertionError("the queued prompt did not finish")
