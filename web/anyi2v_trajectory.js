// The AnyI2V Trajectory box editor: a canvas on the node to draw boxes (objects), their motion paths,
// end sizes and salient query points over the condition image.
// The node's "trajectory" JSON widget is the single source of truth: the editor reads it, draws it,
// and writes every edit back to it. Coordinates are image pixels, independent of the display size.
// Undo/redo is ComfyUI's own (one history for the whole graph): every edit is recorded there.
// A workflow is untrusted input: nothing here builds HTML from its strings.
import { app } from "../../scripts/app.js";
import * as geo from "./geometry.js";
import { Background, nodeDefs } from "./background.js";

const NODE = "AnyI2VTrajectory";
const COLOURS = ["#ff5050", "#50c8ff", "#78e65a", "#ffc83c", "#d26eff", "#ff8cc8"];
const HANDLE = 7; // px on screen
const FREEHAND_SPACING = 4; // px on screen between two recorded freehand points
const MODES = [["box", "Box"], ["path", "Path"], ["points", "Points"]];
const HINTS = {
  box: "drag to draw a box, drag a box to move it, its corner to resize",
  path: "click or drag to extend the selected box's path, Shift+click to start it over",
  points: "click inside a box to add or remove a query point",
};
const DEFAULT_SIZE = [520, 780];
const NO_CLIPBOARD = "the browser gives no clipboard access here (it does on https and localhost): use the JSON box";
const EDITOR_MIN_HEIGHT = 420;
const live = new Set(); // editors on the canvas
const uiState = new Map(); // node id -> {mode, selected, frame}: survives ComfyUI's undo, which rebuilds the node

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const c of children) node.append(c);
  return node;
}

// ComfyUI's change tracker: the one undo history of the graph.
function changeTracker() {
  return app.extensionManager?.workflow?.activeWorkflow?.changeTracker ?? null;
}

function recordChange() {
  const tracker = changeTracker();
  (tracker?.captureCanvasState ?? tracker?.checkState)?.call(tracker);
}

function runCommand(id) {
  return app.extensionManager?.command?.execute?.(id);
}

const BUTTON_CSS = "font:11px sans-serif;padding:1px 6px;border:1px solid #555;border-radius:3px;color:#ddd;background:#333;cursor:pointer";
const ACTIVE_BG = "#2f6fb5";

class Editor {
  constructor(node) {
    this.node = node;
    const saved = uiState.get(node.id) ?? {};
    this.mode = saved.mode ?? "box";
    this.selected = saved.selected ?? 0;
    this.frame = saved.frame ?? 0;
    this.drag = null;
    this.flash = null; // a passing message (paste refused, limit reached)
    this.parsedText = null;
    this.parsed = null;
    this.lastValid = null;
    this.background = new Background(node, () => this.draw());
    this.canvas = el("canvas", { className: "anyi2v-canvas", tabIndex: 0 });
    this.canvas.style.cssText = "width:100%;flex:1 1 auto;min-height:0;background:#111;cursor:crosshair;display:block;touch-action:none;outline:none";
    this.status = el("div", { className: "anyi2v-status" });
    this.status.style.cssText = "font:11px sans-serif;color:#bbb;min-height:14px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis";
    this.slider = el("input", { type: "range", min: 0, max: 0, value: 0, className: "anyi2v-frame" });
    this.slider.style.cssText = "flex:1";
    this.slider.addEventListener("input", () => { this.frame = Number(this.slider.value); this.saveUi(); this.draw(); });
    const button = (label, cls, fn, title = "") => {
      const b = el("button", { textContent: label, className: cls, title });
      b.style.cssText = BUTTON_CSS;
      b.addEventListener("click", fn);
      return b;
    };
    this.modeButtons = MODES.map(([mode, label]) => button(label, `anyi2v-mode anyi2v-mode-${mode}`, () => this.setMode(mode), HINTS[mode]));
    const gap = () => { const s = el("span"); s.style.cssText = "width:6px"; return s; };
    const bar = el("div", { className: "anyi2v-bar" }, [
      ...this.modeButtons, gap(),
      button("Delete", "anyi2v-delete", () => this.deleteSelected(), "delete the selected box (Delete key)"),
      button("Clear", "anyi2v-clear", () => this.commit(null), "remove all boxes"), gap(),
      button("Undo", "anyi2v-undo", () => runCommand("Comfy.Undo"), "ComfyUI's undo (Ctrl+Z)"),
      button("Redo", "anyi2v-redo", () => runCommand("Comfy.Redo"), "ComfyUI's redo (Ctrl+Y)"), gap(),
      button("Copy", "anyi2v-copy", () => this.copy(), "copy the trajectory JSON"),
      button("Paste", "anyi2v-paste", () => this.pasteFromClipboard(), "paste a trajectory (reference JSON or KJNodes coordinates)"),
    ]);
    bar.style.cssText = "display:flex;gap:2px;flex-wrap:wrap;align-items:center";
    // shown while the picture's chain waits for the user: it names the nodes it would run
    this.computeButton = button("", "anyi2v-compute", () => this.background.offer?.run());
    this.computeButton.style.cssText = `${BUTTON_CSS};display:none;background:${ACTIVE_BG};text-align:left;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:100%`;
    const frameRow = el("div", {}, [el("span", { textContent: "frame " }), this.slider]);
    frameRow.style.cssText = "display:flex;align-items:center;gap:4px;font:11px sans-serif;color:#bbb";
    this.root = el("div", { className: "anyi2v-editor" }, [bar, this.computeButton, this.canvas, frameRow, this.status]);
    this.root.style.cssText = "display:flex;flex-direction:column;gap:3px;width:100%;height:100%;box-sizing:border-box";
    this.listen();
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(this.canvas);
    live.add(this);
  }

  widget(name = "trajectory") {
    return this.node.widgets?.find((w) => w.name === name);
  }

  text() {
    return String(this.widget()?.value ?? "");
  }

  frames() {
    return Math.min(geo.MAX_FRAMES, Math.max(1, Math.round(Number(this.widget("frames")?.value) || 16)));
  }

  saveUi() {
    uiState.set(this.node.id, { mode: this.mode, selected: this.selected, frame: this.frame });
  }

  setMode(mode) {
    this.mode = mode;
    this.saveUi();
    this.draw();
  }

  // The image the boxes are drawn on: the computed background, else the width/height widgets.
  imageSize() {
    const img = this.background.image;
    if (img?.naturalWidth) return [img.naturalWidth, img.naturalHeight];
    const side = (name) => Math.min(geo.MAX_SIDE, Math.max(1, Math.round(Number(this.widget(name)?.value) || geo.DEFAULT_SIZE)));
    return [side("width"), side("height")];
  }

  // {traj, error} for the widget's text (parsed once per text). An empty text is an empty trajectory,
  // not an error. The last valid trajectory stays drawn while the text has an error.
  state() {
    const text = this.text();
    if (text !== this.parsedText) {
      this.parsedText = text;
      this.flash = null; // a message about the text before
      const [w, h] = this.imageSize();
      if (!text.trim()) {
        this.parsed = { traj: { groups: [], width: w, height: h, frames: null }, error: null };
      } else {
        try {
          this.parsed = { traj: geo.parseAny(text, w, h), error: null };
        } catch (e) {
          this.parsed = { traj: null, error: e.message };
        }
      }
      if (this.parsed.traj) this.lastValid = this.parsed.traj;
    }
    return this.parsed;
  }

  // A copy of the trajectory to edit, in the view's pixels (the text's own size; the image's when empty).
  editable() {
    const v = this.view();
    const t = this.state().traj;
    return t?.groups.length ? structuredClone(t) : { groups: [], width: v.iw, height: v.ih, frames: t?.frames ?? null };
  }

  // The text is written in the image's pixels: a trajectory of another size is converted here, by the
  // user's next edit (converting it on load would put a change into the undo history nobody made).
  write(traj) {
    const w = this.widget();
    if (!w) return;
    const [iw, ih] = this.imageSize();
    const t = traj && traj.groups.length && (traj.width !== iw || traj.height !== ih) ? geo.resized(traj, iw, ih) : traj;
    w.value = t && t.groups.length ? JSON.stringify(geo.toReference(t)) : "";
    w.callback?.(w.value);
    this.node.setDirtyCanvas?.(true, true);
  }

  // A finished edit: written, and recorded in ComfyUI's undo history.
  commit(traj) {
    this.write(traj);
    recordChange();
    this.draw();
  }

  deleteSelected() {
    const t = this.editable();
    if (!t.groups[this.selected]) return;
    t.groups.splice(this.selected, 1);
    this.selected = Math.max(0, this.selected - 1);
    this.saveUi();
    this.commit(t);
  }

  say(message) {
    this.flash = { message, until: performance.now() + 6000 };
    this.draw();
    setTimeout(() => this.draw(), 6100);
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.text());
    } catch {
      this.say(NO_CLIPBOARD);
    }
  }

  async pasteFromClipboard() {
    let text;
    try {
      text = await navigator.clipboard.readText();
    } catch {
      this.say(NO_CLIPBOARD);
      return;
    }
    this.paste(text);
  }

  paste(text) {
    const [w, h] = this.imageSize();
    try {
      this.commit(geo.parseAny(text, w, h));
    } catch (e) {
      this.say(`paste refused: ${e.message}`);
    }
  }

  // screen <-> image pixels ------------------------------------------------------------------
  view() {
    const t = this.state().traj ?? this.lastValid;
    const [iw, ih] = t?.groups.length ? [t.width, t.height] : this.imageSize();
    const cw = this.canvas.width, ch = this.canvas.height;
    const scale = Math.min(cw / iw, ch / ih);
    return { scale, ox: (cw - iw * scale) / 2, oy: (ch - ih * scale) / 2, iw, ih };
  }

  // A pointer event's position in the view's pixels.
  toImage(event) {
    const rect = this.canvas.getBoundingClientRect();
    const px = ((event.clientX - rect.left) / rect.width) * this.canvas.width;
    const py = ((event.clientY - rect.top) / rect.height) * this.canvas.height;
    const v = this.view();
    return [(px - v.ox) / v.scale, (py - v.oy) / v.scale];
  }

  // The size of one screen (CSS) pixel in the view's pixels.
  screenPx() {
    const rect = this.canvas.getBoundingClientRect();
    return this.canvas.width / Math.max(1, rect.width) / this.view().scale;
  }

  // interactions ------------------------------------------------------------------------------
  listen() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this.down(e));
    c.addEventListener("pointermove", (e) => this.move(e));
    c.addEventListener("pointerup", (e) => this.up(e));
    c.addEventListener("pointercancel", () => { this.drag = null; this.draw(); });
    c.addEventListener("keydown", (e) => {
      if (e.key === "Delete" || e.key === "Backspace") {
        this.deleteSelected();
        e.preventDefault();
      }
      // Ctrl/Cmd keys (undo, redo, ...) go on to ComfyUI; the rest would act on the graph's selected nodes
      if (!(e.ctrlKey || e.metaKey)) e.stopPropagation();
    });
  }

  hit(p, t) {
    const hs = HANDLE * this.screenPx();
    const near = (a, b) => Math.abs(a[0] - b[0]) <= hs && Math.abs(a[1] - b[1]) <= hs;
    const g = t.groups[this.selected];
    if (g) {
      const last = geo.groupBoxes(g, this.frames()).at(-1);
      if (near(p, [last[2], last[3]])) return { kind: "end" };
      if (near(p, [g.box[2], g.box[3]])) return { kind: "resize" };
    }
    for (let i = t.groups.length - 1; i >= 0; i--) {
      const [x1, y1, x2, y2] = t.groups[i].box;
      if (p[0] >= x1 && p[0] <= x2 && p[1] >= y1 && p[1] <= y2) return { kind: "inside", index: i };
    }
    return { kind: "none" };
  }

  down(e) {
    if (e.button !== 0) return;
    e.stopPropagation();
    this.canvas.focus({ preventScroll: true });
    if (this.state().error) {
      this.say("the trajectory text has an error: fix it, Undo, or Clear before drawing");
      return;
    }
    this.canvas.setPointerCapture?.(e.pointerId);
    const current = this.state().traj;
    const [iw, ih] = this.imageSize();
    if (current.groups.length && (current.width !== iw || current.height !== ih)) this.write(current); // into the image's pixels first
    const t = this.editable();
    const p = this.toImage(e);
    const h = this.hit(p, t);
    const g = t.groups[this.selected];
    if (h.kind === "end" || h.kind === "resize") {
      this.drag = { kind: h.kind, start: p, base: t };
    } else if (this.mode === "box") {
      if (h.kind === "inside") {
        this.selected = h.index;
        this.drag = { kind: "move", start: p, base: t };
      } else {
        this.drag = { kind: "new", start: p, base: t };
      }
    } else if (this.mode === "path") {
      if (!g) return this.say("draw a box first (Box mode)");
      const centre = [(g.box[0] + g.box[2]) / 2, (g.box[1] + g.box[3]) / 2];
      const still = g.path.every((q) => q[0] === g.path[0][0] && q[1] === g.path[0][1]);
      if (e.shiftKey) g.path = [centre, p];
      else if (still) g.path = [g.path[0], p];
      else if (g.path.length >= geo.MAX_PATH_POINTS) return this.say(`a path has at most ${geo.MAX_PATH_POINTS} points`);
      else g.path.push(p);
      this.write(t);
      this.drag = { kind: "freehand", last: [e.clientX, e.clientY], base: t };
    } else if (this.mode === "points") {
      if (h.kind !== "inside") return this.say("click inside a box to add a query point");
      this.selected = h.index;
      const gg = t.groups[h.index];
      const hs = HANDLE * this.screenPx();
      const idx = gg.points.findIndex((q) => Math.hypot(q[0] - p[0], q[1] - p[1]) <= hs);
      if (idx >= 0) gg.points.splice(idx, 1);
      else if (gg.points.length >= geo.MAX_QUERY_POINTS) return this.say(`a box has at most ${geo.MAX_QUERY_POINTS} query points`);
      else gg.points.push(p);
      this.commit(t);
    }
    this.saveUi();
    this.draw();
  }

  move(e) {
    const d = this.drag;
    if (!d) return;
    if (d.kind === "freehand") {
      if (Math.hypot(e.clientX - d.last[0], e.clientY - d.last[1]) < FREEHAND_SPACING) return;
      const path = d.base.groups[this.selected].path;
      if (path.length >= geo.MAX_PATH_POINTS) return;
      d.last = [e.clientX, e.clientY];
      path.push(this.toImage(e));
      this.write(d.base);
      this.draw();
      return;
    }
    d.current = this.toImage(e);
    if (d.kind !== "new") this.write(this.dragged(d));
    this.draw();
  }

  // The trajectory as the drag leaves it (from the state when the drag began).
  dragged(d) {
    const t = structuredClone(d.base);
    const p = d.current ?? d.start;
    const dx = p[0] - d.start[0], dy = p[1] - d.start[1];
    const g = t.groups[this.selected];
    if (!g) return t;
    if (d.kind === "move") {
      g.box = [g.box[0] + dx, g.box[1] + dy, g.box[2] + dx, g.box[3] + dy];
      g.path = g.path.map((q) => [q[0] + dx, q[1] + dy]);
      g.points = g.points.map((q) => [q[0] + dx, q[1] + dy]);
    } else if (d.kind === "resize") {
      g.box = [g.box[0], g.box[1], Math.max(g.box[0] + 2, g.box[2] + dx), Math.max(g.box[1] + 2, g.box[3] + dy)];
    } else if (d.kind === "end") {
      g.endSize = [Math.max(2, g.endSize[0] + 2 * dx), Math.max(2, g.endSize[1] + 2 * dy)];
    }
    return t;
  }

  up(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    e.stopPropagation();
    d.current = this.toImage(e);
    if (d.kind === "new") {
      const [x1, x2] = [Math.min(d.start[0], d.current[0]), Math.max(d.start[0], d.current[0])];
      const [y1, y2] = [Math.min(d.start[1], d.current[1]), Math.max(d.start[1], d.current[1])];
      if (x2 - x1 >= 2 && y2 - y1 >= 2) {
        const t = d.base;
        if (t.groups.length >= geo.MAX_GROUPS) return this.say(`at most ${geo.MAX_GROUPS} boxes`);
        const centre = [(x1 + x2) / 2, (y1 + y2) / 2];
        t.groups.push({ box: [x1, y1, x2, y2], endSize: [x2 - x1, y2 - y1], path: [centre, centre], points: [] });
        this.selected = t.groups.length - 1;
        this.saveUi();
        this.commit(t);
      }
    } else if (d.kind === "freehand") {
      this.commit(d.base);
    } else {
      this.commit(this.dragged(d));
    }
    this.draw();
  }

  // drawing -----------------------------------------------------------------------------------
  draw() {
    const c = this.canvas;
    const rect = c.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width * dpr)), h = Math.max(1, Math.round(rect.height * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const ctx = c.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, c.width, c.height);
    const { traj, error } = this.state();
    const shown = traj ?? this.lastValid ?? { groups: [] };
    const v = this.view();
    const bg = this.background;
    ctx.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
    if (bg.image?.naturalWidth) {
      ctx.globalAlpha = bg.stale ? 0.45 : 1;
      ctx.drawImage(bg.image, 0, 0, v.iw, v.ih);
      ctx.globalAlpha = 1;
    } else {
      ctx.fillStyle = "#262626";
      ctx.fillRect(0, 0, v.iw, v.ih);
    }
    const frames = this.frames();
    this.slider.max = String(frames - 1);
    if (this.frame > frames - 1) this.frame = frames - 1;
    this.slider.value = String(this.frame);
    ctx.globalAlpha = error ? 0.5 : 1;
    this.drawGroups(ctx, shown, v, frames);
    ctx.globalAlpha = 1;
    const d = this.drag;
    if (d?.kind === "new" && d.current) { // the box being drawn
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5 / v.scale;
      ctx.setLineDash([5 / v.scale, 4 / v.scale]);
      ctx.strokeRect(d.start[0], d.start[1], d.current[0] - d.start[0], d.current[1] - d.start[1]);
      ctx.setLineDash([]);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const cssW = c.width / dpr, cssH = c.height / dpr;
    if (error) this.banner(ctx, `Trajectory text error: ${error}. The last valid boxes are shown; fix the text, Undo, or Clear.`, cssW, "rgba(150,20,20,0.88)", 0);
    else if (!shown.groups.length && !this.drag) this.centred(ctx, "Drag on the picture to draw a box", cssW, cssH);
    if (bg.note) this.banner(ctx, bg.note, cssW, "rgba(0,0,0,0.65)", cssH, true);
    const offer = bg.offer ? `Compute picture: runs ${bg.offer.names}` : "";
    if (this.computeButton.textContent !== offer) {
      this.computeButton.textContent = offer;
      this.computeButton.title = offer && `${offer} (once, for this image chain; nothing else of the graph)`;
      this.computeButton.style.display = offer ? "" : "none";
    }
    this.modeButtons.forEach((b, i) => { b.style.background = MODES[i][0] === this.mode ? ACTIVE_BG : "#333"; });
    const flash = this.flash && performance.now() < this.flash.until ? this.flash.message : null;
    this.status.style.color = error || flash ? "#ff8080" : "#bbb";
    this.status.textContent = error
      ? `error: ${error}`
      : flash ?? `${shown.groups.length ? `${shown.groups.length} box${shown.groups.length === 1 ? "" : "es"}` : "empty"} · ${v.iw}x${v.ih} px · ${HINTS[this.mode]}`;
  }

  drawGroups(ctx, t, v, frames) {
    const lw = 1.5 / v.scale;
    const hs = HANDLE * this.screenPx();
    t.groups.forEach((g, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const boxes = geo.groupBoxes(g, frames);
      ctx.lineWidth = lw;
      ctx.strokeStyle = colour;
      ctx.setLineDash([4 / v.scale, 3 / v.scale]);
      const last = boxes.at(-1);
      ctx.strokeRect(last[0], last[1], last[2] - last[0], last[3] - last[1]);
      ctx.setLineDash([]);
      ctx.beginPath();
      boxes.forEach((b, j) => { const x = (b[0] + b[2]) / 2, y = (b[1] + b[3]) / 2; j ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
      ctx.stroke();
      ctx.fillStyle = colour;
      for (const q of g.path.slice(1)) ctx.fillRect(q[0] - 1.5 / v.scale, q[1] - 1.5 / v.scale, 3 / v.scale, 3 / v.scale);
      const cur = boxes[Math.min(this.frame, boxes.length - 1)];
      ctx.lineWidth = (i === this.selected ? 3 : 2) / v.scale;
      ctx.strokeRect(cur[0], cur[1], cur[2] - cur[0], cur[3] - cur[1]);
      for (const q of g.points) { ctx.beginPath(); ctx.arc(q[0], q[1], 3.5 / v.scale, 0, 2 * Math.PI); ctx.fill(); }
      if (i === this.selected) {
        ctx.fillRect(g.box[2] - hs / 2, g.box[3] - hs / 2, hs, hs);
        ctx.strokeRect(last[2] - hs / 2, last[3] - hs / 2, hs, hs);
      }
    });
  }

  // Wrapped text on a band across the canvas, at the top (y = 0) or the bottom (y = height).
  banner(ctx, text, width, fill, y, bottom = false) {
    ctx.font = "12px sans-serif";
    const lines = [];
    let line = "";
    for (const word of text.split(" ")) {
      const next = line ? `${line} ${word}` : word;
      if (ctx.measureText(next).width > width - 12 && line) { lines.push(line); line = word; } else line = next;
    }
    if (line) lines.push(line);
    const shown = lines.slice(0, 6);
    const h = shown.length * 15 + 8;
    const top = bottom ? y - h : y;
    ctx.fillStyle = fill;
    ctx.fillRect(0, top, width, h);
    ctx.fillStyle = "#fff";
    ctx.textBaseline = "top";
    shown.forEach((l, i) => ctx.fillText(l, 6, top + 4 + i * 15));
  }

  centred(ctx, text, width, height) {
    ctx.font = "13px sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillStyle = "rgba(0,0,0,0.55)";
    const tw = ctx.measureText(text).width + 16;
    ctx.fillRect((width - tw) / 2, height / 2 - 12, tw, 24);
    ctx.fillStyle = "#ddd";
    ctx.fillText(text, width / 2, height / 2);
    ctx.textAlign = "start";
  }

  remove() {
    this.resizeObserver.disconnect();
    live.delete(this);
  }
}

// A paste into a trajectory text box that exceeds the limit is refused before it reaches the widget
// (a huge text there slows the frontend and breaks its workflow autosave).
function guardPaste(e) {
  const target = e.target;
  if (!(target instanceof HTMLTextAreaElement)) return;
  const text = e.clipboardData?.getData("text") ?? "";
  const kept = target.value.length - Math.abs((target.selectionEnd ?? 0) - (target.selectionStart ?? 0));
  if (kept + text.length <= geo.MAX_TEXT_CHARS) return;
  const nodeId = target.closest("[data-node-id]")?.dataset.nodeId;
  const editor = [...live].find((ed) => {
    const w = ed.widget();
    return target === (w?.element ?? w?.inputEl) || (nodeId !== undefined && String(ed.node.id) === nodeId);
  });
  if (!editor) return;
  e.preventDefault();
  e.stopPropagation();
  editor.say(`paste refused: ${text.length.toLocaleString("en")} characters, a trajectory has at most ${geo.MAX_TEXT_CHARS.toLocaleString("en")}`);
}

function chain(proto, name, fn) {
  const original = proto[name];
  proto[name] = function (...args) {
    const result = original?.apply(this, args);
    fn.apply(this, args);
    return result;
  };
}

// Redraw editors whose text changed (typing in the JSON box, undo) and follow their image chains.
function poll() {
  for (const ed of live) {
    if (!ed.node.graph) continue;
    if (ed.text() !== ed.parsedText) ed.draw();
    ed.background.refresh();
  }
}

app.registerExtension({
  name: "AnyI2V.TrajectoryEditor",
  setup() {
    document.addEventListener("paste", guardPaste, true);
    setInterval(poll, 500);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    nodeDefs[nodeData?.name] = nodeData;
    if (nodeData?.name !== NODE) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      this.anyi2vEditor = new Editor(this);
      this.addDOMWidget("anyi2v_editor", "anyi2v-editor", this.anyi2vEditor.root, {
        serialize: false,
        getMinHeight: () => EDITOR_MIN_HEIGHT,
      });
      this.setSize?.([Math.max(this.size?.[0] ?? 0, DEFAULT_SIZE[0]), Math.max(this.size?.[1] ?? 0, DEFAULT_SIZE[1])]);
      requestAnimationFrame(() => { this.anyi2vEditor?.draw(); this.anyi2vEditor?.background.refresh(); });
    });
    chain(nodeType.prototype, "onConfigure", function () {
      requestAnimationFrame(() => { this.anyi2vEditor?.draw(); this.anyi2vEditor?.background.refresh(true); });
    });
    chain(nodeType.prototype, "onConnectionsChange", function () {
      requestAnimationFrame(() => this.anyi2vEditor?.background.refresh());
    });
    chain(nodeType.prototype, "onExecuted", function (message) {
      const ref = message?.anyi2v_background?.[0];
      if (ref && typeof ref.filename === "string") this.anyi2vEditor?.background.fromRun(ref);
    });
    chain(nodeType.prototype, "onResize", function () {
      this.anyi2vEditor?.draw();
    });
    chain(nodeType.prototype, "onRemoved", function () {
      this.anyi2vEditor?.remove();
      this.anyi2vEditor = null;
    });
  },
});
