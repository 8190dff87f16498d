// The AnyI2V Trajectory box editor: a canvas on the node to draw boxes (objects), their motion paths,
// end sizes and salient query points over the condition image.
// The node's "trajectory" JSON widget is the single source of truth: the editor reads it, draws it,
// and writes every edit back to it. Coordinates are image pixels, independent of the display size.
// A workflow is untrusted input: nothing here builds HTML from its strings.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import * as geo from "./geometry.js";

const NODE = "AnyI2VTrajectory";
const COLOURS = ["#ff5050", "#50c8ff", "#78e65a", "#ffc83c", "#d26eff", "#ff8cc8"];
const HANDLE = 7; // px on screen
const MODES = [["box", "Box"], ["path", "Path"], ["points", "Points"]];

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const c of children) node.append(c);
  return node;
}

class Editor {
  constructor(node) {
    this.node = node;
    this.mode = "box";
    this.selected = 0;
    this.frame = 0;
    this.undo = [];
    this.drag = null;
    this.image = null;
    this.canvas = el("canvas", { className: "anyi2v-canvas", tabIndex: 0 });
    this.canvas.style.cssText = "width:100%;flex:1 1 auto;min-height:0;background:#111;cursor:crosshair;display:block";
    this.status = el("div", { className: "anyi2v-status" });
    this.status.style.cssText = "font:11px sans-serif;color:#bbb;min-height:14px;white-space:nowrap;overflow:hidden";
    this.slider = el("input", { type: "range", min: 0, max: 0, value: 0, className: "anyi2v-frame" });
    this.slider.style.cssText = "flex:1";
    this.slider.addEventListener("input", () => { this.frame = Number(this.slider.value); this.draw(); });
    const buttons = MODES.map(([mode, label]) => {
      const b = el("button", { textContent: label, className: `anyi2v-mode anyi2v-mode-${mode}` });
      b.addEventListener("click", () => { this.mode = mode; this.pathStarted = null; this.draw(); });
      return b;
    });
    const action = (label, cls, fn) => {
      const b = el("button", { textContent: label, className: cls });
      b.addEventListener("click", fn);
      return b;
    };
    this.modeButtons = buttons;
    const bar = el("div", {}, [
      ...buttons,
      action("Delete", "anyi2v-delete", () => this.deleteSelected()),
      action("Clear", "anyi2v-clear", () => this.edit(() => ({ ...this.traj(), groups: [] }), true)),
      action("Undo", "anyi2v-undo", () => this.popUndo()),
      action("Copy", "anyi2v-copy", () => navigator.clipboard?.writeText(this.widget().value)),
      action("Paste", "anyi2v-paste", () => this.paste()),
    ]);
    bar.style.cssText = "display:flex;gap:2px;flex-wrap:wrap;font-size:11px";
    const frameRow = el("div", {}, [el("span", { textContent: "frame " }), this.slider]);
    frameRow.style.cssText = "display:flex;align-items:center;gap:4px;font:11px sans-serif;color:#bbb";
    this.root = el("div", { className: "anyi2v-editor" }, [bar, this.canvas, frameRow, this.status]);
    this.root.style.cssText = "display:flex;flex-direction:column;gap:2px;width:100%;height:100%";
    this.listen();
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(this.canvas);
  }

  widget(name = "trajectory") {
    return this.node.widgets?.find((w) => w.name === name);
  }

  frames() {
    return Math.max(1, Number(this.widget("frames")?.value ?? 16));
  }

  // The trajectory from the JSON widget; an empty editor (no valid JSON) is an empty trajectory.
  traj() {
    const size = this.imageSize();
    try {
      const t = geo.parseAny(String(this.widget()?.value ?? ""), size[0], size[1]);
      this.error = null;
      return t;
    } catch (e) {
      this.error = e.message;
      return { groups: [], width: size[0], height: size[1], frames: null };
    }
  }

  imageSize() {
    if (this.image?.naturalWidth) return [this.image.naturalWidth, this.image.naturalHeight];
    return [Number(this.widget("width")?.value ?? 512), Number(this.widget("height")?.value ?? 512)];
  }

  write(traj) {
    const w = this.widget();
    if (!w) return;
    w.value = traj.groups.length ? JSON.stringify(geo.toReference(traj)) : "";
    w.callback?.(w.value);
    this.node.setDirtyCanvas?.(true, true);
  }

  edit(change, keepUndo = true) {
    const before = this.widget()?.value ?? "";
    const next = change(this.traj());
    if (!next) return;
    if (keepUndo) this.undo.push(before);
    if (this.undo.length > 100) this.undo.shift();
    this.write(next);
    this.draw();
  }

  popUndo() {
    if (!this.undo.length) return;
    const w = this.widget();
    w.value = this.undo.pop();
    w.callback?.(w.value);
    this.draw();
  }

  deleteSelected() {
    this.edit((t) => ({ ...t, groups: t.groups.filter((_, i) => i !== this.selected) }));
    this.selected = 0;
  }

  async paste() {
    const text = await navigator.clipboard?.readText?.();
    if (!text) return;
    const size = this.imageSize();
    try {
      const t = geo.parseAny(text, size[0], size[1]);
      this.edit(() => geo.resized(t, size[0], size[1]));
    } catch (e) {
      this.status.textContent = e.message;
    }
  }

  // screen <-> image pixels ------------------------------------------------------------------
  view() {
    const [iw, ih] = this.traj().groups.length ? [this.traj().width, this.traj().height] : this.imageSize();
    const cw = this.canvas.width, ch = this.canvas.height;
    const scale = Math.min(cw / iw, ch / ih);
    return { scale, ox: (cw - iw * scale) / 2, oy: (ch - ih * scale) / 2, iw, ih };
  }

  toImage(event) {
    const rect = this.canvas.getBoundingClientRect();
    const px = ((event.clientX - rect.left) / rect.width) * this.canvas.width;
    const py = ((event.clientY - rect.top) / rect.height) * this.canvas.height;
    const v = this.view();
    return [(px - v.ox) / v.scale, (py - v.oy) / v.scale];
  }

  handleSize() {
    const rect = this.canvas.getBoundingClientRect();
    return (HANDLE * this.canvas.width) / Math.max(1, rect.width) / this.view().scale;
  }

  // interactions ------------------------------------------------------------------------------
  listen() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this.down(e));
    c.addEventListener("pointermove", (e) => this.move(e));
    c.addEventListener("pointerup", (e) => this.up(e));
    c.addEventListener("keydown", (e) => {
      if (e.key === "Delete" || e.key === "Backspace") this.deleteSelected();
      if ((e.ctrlKey || e.metaKey) && e.key === "z") this.popUndo();
      e.stopPropagation();
    });
  }

  hit(p) {
    const t = this.traj();
    const hs = this.handleSize();
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
    this.canvas.setPointerCapture?.(e.pointerId);
    e.stopPropagation();
    const p = this.toImage(e);
    const h = this.hit(p);
    const t = this.traj();
    const before = this.widget()?.value ?? "";
    if (h.kind === "end" || h.kind === "resize") {
      this.drag = { kind: h.kind, start: p, before };
    } else if (this.mode === "box") {
      if (h.kind === "inside") {
        if (this.selected !== h.index) this.pathStarted = null;
        this.selected = h.index;
        this.drag = { kind: "move", start: p, before };
      } else {
        this.drag = { kind: "new", start: p, before };
      }
    } else if (this.mode === "path" && t.groups[this.selected]) {
      // the first click after selecting starts a new path at the box centre; later clicks (or a drag) extend it
      const fresh = this.pathStarted !== this.selected;
      this.pathStarted = this.selected;
      this.edit((tt) => {
        const gg = tt.groups[this.selected];
        const centre = [(gg.box[0] + gg.box[2]) / 2, (gg.box[1] + gg.box[3]) / 2];
        gg.path = fresh ? [centre, p] : [...gg.path, p];
        return tt;
      });
      this.drag = { kind: "freehand", last: p };
    } else if (this.mode === "points" && h.kind === "inside") {
      this.selected = h.index;
      this.edit((tt) => {
        const gg = tt.groups[h.index];
        const hs = this.handleSize();
        const idx = gg.points.findIndex((q) => Math.hypot(q[0] - p[0], q[1] - p[1]) <= hs);
        gg.points = idx >= 0 ? gg.points.filter((_, i) => i !== idx) : [...gg.points, p];
        return tt;
      });
    }
    this.draw();
  }

  move(e) {
    if (!this.drag) return;
    const p = this.toImage(e);
    const d = this.drag;
    if (d.kind === "freehand") {
      if (Math.hypot(p[0] - d.last[0], p[1] - d.last[1]) < 4 * this.handleSize()) return;
      d.last = p;
      this.edit((t) => { t.groups[this.selected].path.push(p); return t; }, false);
      return;
    }
    d.current = p;
    if (d.kind !== "new") this.applyDrag(false);
    this.draw();
  }

  applyDrag(final) {
    const d = this.drag;
    const p = d.current ?? d.start;
    const dx = p[0] - d.start[0], dy = p[1] - d.start[1];
    const w = this.widget();
    const restore = d.before;
    const t = geo.parseAny(restore || "", ...this.imageSize());
    const g = t.groups[this.selected];
    if (!g) return;
    if (d.kind === "move") {
      g.box = [g.box[0] + dx, g.box[1] + dy, g.box[2] + dx, g.box[3] + dy];
      g.path = g.path.map((q) => [q[0] + dx, q[1] + dy]);
      g.points = g.points.map((q) => [q[0] + dx, q[1] + dy]);
    } else if (d.kind === "resize") {
      g.box = [g.box[0], g.box[1], Math.max(g.box[0] + 2, g.box[2] + dx), Math.max(g.box[1] + 2, g.box[3] + dy)];
    } else if (d.kind === "end") {
      g.endSize = [Math.max(2, g.endSize[0] + 2 * dx), Math.max(2, g.endSize[1] + 2 * dy)];
    }
    w.value = JSON.stringify(geo.toReference(t));
    if (final) {
      this.undo.push(restore);
      w.callback?.(w.value);
    }
  }

  up(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    const p = this.toImage(e);
    if (d.kind === "new") {
      const [x1, x2] = [Math.min(d.start[0], p[0]), Math.max(d.start[0], p[0])];
      const [y1, y2] = [Math.min(d.start[1], p[1]), Math.max(d.start[1], p[1])];
      if (x2 - x1 >= 2 && y2 - y1 >= 2) {
        const size = this.imageSize();
        this.edit((t) => {
          const base = t.groups.length ? t : { groups: [], width: size[0], height: size[1], frames: null };
          const centre = [(x1 + x2) / 2, (y1 + y2) / 2];
          base.groups.push({ box: [x1, y1, x2, y2], endSize: [x2 - x1, y2 - y1], path: [centre, centre], points: [] });
          this.selected = base.groups.length - 1;
          return base;
        });
      }
    } else if (d.kind !== "freehand") {
      d.current = p;
      this.applyDrag(true);
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
    const t = this.traj();
    const v = this.view();
    ctx.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
    if (this.image?.naturalWidth) ctx.drawImage(this.image, 0, 0, v.iw, v.ih);
    else { ctx.fillStyle = "#222"; ctx.fillRect(0, 0, v.iw, v.ih); }
    const frames = this.frames();
    this.slider.max = String(frames - 1);
    if (this.frame > frames - 1) this.frame = frames - 1;
    const lw = 1.5 / v.scale;
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
      const cur = boxes[this.frame];
      ctx.lineWidth = (i === this.selected ? 3 : 2) / v.scale;
      ctx.strokeRect(cur[0], cur[1], cur[2] - cur[0], cur[3] - cur[1]);
      ctx.fillStyle = colour;
      for (const q of g.points) { ctx.beginPath(); ctx.arc(q[0], q[1], 3.5 / v.scale, 0, 2 * Math.PI); ctx.fill(); }
      if (i === this.selected) {
        const hs = this.handleSize();
        ctx.fillRect(g.box[2] - hs / 2, g.box[3] - hs / 2, hs, hs);
        ctx.strokeRect(last[2] - hs / 2, last[3] - hs / 2, hs, hs);
      }
    });
    this.modeButtons.forEach((b, i) => { b.style.fontWeight = MODES[i][0] === this.mode ? "bold" : "normal"; });
    this.status.textContent = this.error
      ? this.error
      : `${t.groups.length} box${t.groups.length === 1 ? "" : "es"} · ${v.iw}x${v.ih} px · mode ${this.mode}`;
  }

  setBackground(url) {
    if (!url) return;
    const img = new Image();
    img.onload = () => {
      this.image = img;
      const t = this.traj();
      if (t.groups.length && (t.width !== img.naturalWidth || t.height !== img.naturalHeight)) {
        this.write(geo.resized(t, img.naturalWidth, img.naturalHeight));
      }
      this.draw();
    };
    img.src = url;
  }

  // a Load Image connected to the "image" input gives the background
  backgroundFromLink() {
    const input = this.node.inputs?.find((i) => i.name === "image");
    const link = input?.link != null ? app.graph?.links?.[input.link] ?? app.graph?.links?.get?.(input.link) : null;
    const origin = link ? app.graph.getNodeById(link.origin_id) : null;
    const name = origin?.widgets?.find((w) => w.name === "image")?.value;
    if (origin?.type === "LoadImage" && typeof name === "string" && name) {
      const [subfolder, filename] = name.includes("/") ? [name.slice(0, name.lastIndexOf("/")), name.slice(name.lastIndexOf("/") + 1)] : ["", name];
      const q = new URLSearchParams({ filename, subfolder, type: "input" });
      this.setBackground(api.apiURL(`/view?${q}`));
    }
  }

  remove() {
    this.resizeObserver.disconnect();
  }
}

function chain(proto, name, fn) {
  const original = proto[name];
  proto[name] = function (...args) {
    const result = original?.apply(this, args);
    fn.apply(this, args);
    return result;
  };
}

app.registerExtension({
  name: "AnyI2V.TrajectoryEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      this.anyi2vEditor = new Editor(this);
      this.addDOMWidget("anyi2v_editor", "anyi2v-editor", this.anyi2vEditor.root, {
        serialize: false,
        getMinHeight: () => 260,
      });
      const w = this.anyi2vEditor.widget();
      if (w) {
        const cb = w.callback;
        w.callback = (...a) => { const r = cb?.apply(w, a); this.anyi2vEditor?.draw(); return r; };
      }
      this.setSize?.([Math.max(this.size?.[0] ?? 0, 420), Math.max(this.size?.[1] ?? 0, 520)]);
      requestAnimationFrame(() => this.anyi2vEditor?.draw());
    });
    chain(nodeType.prototype, "onConfigure", function () {
      requestAnimationFrame(() => { this.anyi2vEditor?.backgroundFromLink(); this.anyi2vEditor?.draw(); });
    });
    chain(nodeType.prototype, "onConnectionsChange", function () {
      this.anyi2vEditor?.backgroundFromLink();
    });
    chain(nodeType.prototype, "onExecuted", function (message) {
      const image = message?.images?.[0];
      if (image && typeof image.filename === "string") {
        const q = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder ?? "", type: image.type ?? "temp" });
        this.anyi2vEditor?.setBackground(api.apiURL(`/view?${q}`));
      }
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
