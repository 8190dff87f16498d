// The condition image behind the editor's boxes, computed without running the whole graph.
//
// The editor's image chain (everything its "image" input depends on) is run on its own through
// ComfyUI's partial execution: the whole prompt from app.graphToPrompt() goes to /prompt with one
// extra PreviewImage node on the image source and partial_execution_targets = [that node], so the
// executor validates and runs only that node's ancestors, with its own caching (a later full run
// reuses their outputs, and nothing else is evicted from its cache). Only chains that link nothing
// but images, masks and plain values run by themselves; a chain with a model input (MODEL, VAE,
// LATENT, ...) shows its picture after a run of the graph (the node's own output).
// Results are remembered per chain (in memory, and in localStorage across page reloads) as the
// server's temp file; a temp file gone after a server restart is computed again.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { chainKey, imageChain, modelInput } from "./upstream.js";

export const nodeDefs = {}; // class_type -> definition, filled by the extension for every node type
const CLIENT_ID = "anyi2v-editor-background"; // no browser tab has this id: the job's progress messages reach nobody
const STORE = "AnyI2V.backgrounds";
const STORED_MAX = 32;
const loaded = new Map(); // chain key -> loaded HTMLImageElement (instant after ComfyUI's undo rebuilds the node)

function storedRefs() {
  try {
    return new Map(JSON.parse(localStorage.getItem(STORE) ?? "[]"));
  } catch {
    return new Map();
  }
}

function remember(key, ref) {
  const refs = storedRefs();
  refs.delete(key);
  if (ref) refs.set(key, ref);
  try {
    localStorage.setItem(STORE, JSON.stringify([...refs].slice(-STORED_MAX)));
  } catch {
    // storage full or disabled: the picture is computed again after a reload
  }
}

export function viewURL(ref) {
  const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder ?? "", type: ref.type ?? "temp" });
  return api.apiURL(`/view?${q}`);
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("image not found"));
    img.src = url;
  });
}

// One graphToPrompt for all editors that ask at the same moment.
let pendingPrompt = null;
function currentPrompt() {
  pendingPrompt ??= Promise.resolve()
    .then(() => app.graphToPrompt())
    .then((p) => p.output)
    .finally(() => { pendingPrompt = null; });
  return pendingPrompt;
}

// The node's id in the API prompt: its own id in the root graph; inside a subgraph, the entry of its
// class whose path ends with it.
function executionId(node, prompt) {
  const own = String(node.id);
  if (prompt[own]?.class_type === node.type) return own;
  return Object.keys(prompt).find((k) => k.endsWith(`:${own}`) && prompt[k].class_type === node.type) ?? own;
}

// A cheap text of what feeds the node's image input, from the live graph: when it is unchanged there
// is no need to build the prompt (graphToPrompt serialises the whole graph).
function upstreamText(node, slot) {
  const parts = [];
  const seen = new Set();
  const todo = node.isInputConnected(slot) ? [node.getInputNode(slot)] : [];
  while (todo.length) {
    const n = todo.pop();
    if (!n || seen.has(n.id)) continue;
    seen.add(n.id);
    const inner = n.subgraph?.nodes?.map((m) => [m.id, m.mode, m.widgets?.map((w) => w.value)]) ?? null;
    parts.push([n.id, n.type, n.mode, n.widgets?.map((w) => w.value) ?? null, inner]);
    n.inputs?.forEach((_, i) => {
      if (n.isInputConnected(i)) {
        const origin = n.getInputNode(i);
        parts.push([n.id, i, origin?.id ?? null]);
        todo.push(origin);
      }
    });
  }
  try {
    return JSON.stringify(parts);
  } catch {
    return String(Math.random()); // unserialisable widget values: always look again
  }
}

async function queueChain(prompt, chain, target) {
  const body = {
    prompt: { ...prompt, [target]: { class_type: "PreviewImage", inputs: { images: chain.source } } },
    client_id: CLIENT_ID,
    partial_execution_targets: [target],
  };
  const res = await api.fetchApi("/prompt", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (res.status !== 200) throw new Error(promptErrorText(data, prompt));
  return data.prompt_id;
}

function promptErrorText(data, prompt) {
  for (const [id, entry] of Object.entries(data?.node_errors ?? {})) {
    const e = entry.errors?.[0];
    const title = prompt[id]?._meta?.title ?? entry.class_type ?? id;
    if (e) return `${title}: ${e.message}${e.details ? ` (${e.details})` : ""}`;
  }
  return data?.error?.message ?? "the server refused the image chain";
}

async function waitForJob(promptId, target, isCurrent) {
  let delay = 100;
  for (;;) {
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(2000, delay * 1.5);
    if (!isCurrent()) {
      api.fetchApi("/queue", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ delete: [promptId] }) }).catch(() => {});
      return null;
    }
    const res = await api.fetchApi(`/history/${encodeURIComponent(promptId)}`);
    const entry = (await res.json().catch(() => ({})))?.[promptId];
    if (!entry?.status?.completed && entry?.status?.status_str !== "error") continue;
    // the job is ours alone: keep the user's history to the runs they started
    api.fetchApi("/history", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ delete: [promptId] }) }).catch(() => {});
    const ref = entry.outputs?.[target]?.images?.[0];
    if (ref) return ref;
    const error = entry.status?.messages?.find(([event]) => event === "execution_error")?.[1];
    throw new Error(error ? `${error.node_type}: ${error.exception_message}` : "the image chain gave no image");
  }
}

// One editor's background: image (a loaded HTMLImageElement or null), note (a sentence for the
// canvas, or ""), stale (the image belongs to an older chain).
export class Background {
  constructor(node, onChange) {
    this.node = node;
    this.onChange = onChange;
    this.image = null;
    this.note = "";
    this.stale = false;
    this.key = null;
    this.upstream = null;
    this.looks = 0; // reads of the graph
    this.generation = 0; // chains looked for: an older chain's result is dropped
  }

  slot() {
    return this.node.inputs?.findIndex((i) => i.name === "image") ?? -1;
  }

  set(image, note = "", stale = false) {
    Object.assign(this, { image, note, stale });
    this.onChange();
  }

  // Look at the image chain again; cheap when nothing upstream changed (call it as often as wanted).
  // force: look even if the live graph upstream seems unchanged (after a workflow is loaded).
  async refresh(force = false) {
    const slot = this.slot();
    if (slot < 0 || !this.node.graph) return;
    const text = upstreamText(this.node, slot);
    if (!force && text === this.upstream) return;
    this.upstream = text;
    const look = ++this.looks;
    let prompt = null, chain = null;
    if (this.node.isInputConnected(slot)) {
      try {
        prompt = await currentPrompt();
        chain = imageChain(prompt, executionId(this.node, prompt));
      } catch (e) {
        if (look === this.looks) this.set(this.image, `no picture: the graph cannot be read (${e.message})`, !!this.image);
        this.upstream = null; // look again at the next call
        return;
      }
      if (!chain) this.upstream = null; // the graph was still being loaded: look again at the next call
    }
    if (look !== this.looks) return; // a newer look is under way
    const key = chain ? chainKey(chain) : null;
    if (key === this.key) return; // the same chain: what is shown (or being computed) stays
    this.key = key;
    const generation = ++this.generation;
    const isCurrent = () => generation === this.generation;
    if (!chain) return this.set(null, "");
    if (await this.showKnown(key, isCurrent)) return;
    if (!isCurrent()) return;
    const needs = modelInput(chain, nodeDefs);
    if (needs) {
      const why = needs.type ? `${needs.title} takes a ${needs.type}` : `${needs.title} is not a known node`;
      return this.set(this.image, `the picture appears after a run (${why})`, !!this.image);
    }
    this.set(this.image, "computing the picture…", !!this.image);
    const target = `anyi2v_background_${executionId(this.node, prompt).replaceAll(":", "_")}`;
    try {
      const promptId = await queueChain(prompt, chain, target);
      const ref = await waitForJob(promptId, target, isCurrent);
      if (ref && isCurrent()) await this.show(key, ref, isCurrent);
    } catch (e) {
      if (isCurrent()) this.set(null, `no picture: ${e.message}`);
    }
  }

  async showKnown(key, isCurrent) {
    if (loaded.has(key)) {
      this.set(loaded.get(key));
      return true;
    }
    const ref = storedRefs().get(key);
    if (!ref) return false;
    try {
      await this.show(key, ref, isCurrent);
      return true;
    } catch {
      remember(key, null); // the server's temp folder was emptied: compute it again
      return false;
    }
  }

  async show(key, ref, isCurrent) {
    const img = await loadImage(viewURL(ref));
    loaded.set(key, img);
    remember(key, ref);
    if (isCurrent()) this.set(img);
  }

  // The node's own output after a run of the graph: the image for the current chain.
  async fromRun(ref) {
    const generation = this.generation;
    try {
      const img = await loadImage(viewURL(ref));
      if (this.key) {
        loaded.set(this.key, img);
        remember(this.key, ref);
      }
      if (generation === this.generation) this.set(img);
    } catch {
      // a vanished temp file: keep what is shown
    }
  }
}
