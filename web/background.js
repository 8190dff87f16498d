// The condition image behind the editor's boxes, computed without running the graph.
//
// The editor's image chain (everything its "image" input depends on) is run on its own: only the
// chain's nodes and one PreviewImage of its source go to /prompt (with partial_execution_targets =
// [that preview]), so nothing else of the user's graph matters (a node type missing elsewhere, a model
// not downloaded yet) and nothing else of it is run or asked anything (no IS_CHANGED of other nodes).
// A later full run reuses the chain's outputs from the executor's cache. What runs by itself is
// decided by chainPlan (web/upstream.js): a chain made only of nodes on the allowlist
// (web/local_nodes.js: local, cheap, no side effects) is computed at once; a chain of plain values
// with other nodes waits for the editor's "Compute picture" button, which names the nodes it runs; a
// chain with a model input, an output node, an API node or a missing node is never run by the editor
// and shows its picture after a run of the graph (the node's own output).
// Results are remembered per chain (decoded, for the latest few chains, and in localStorage across
// page reloads as the server's temp file); a temp file gone after a server restart is computed again.
// The live graph is read cheaply every poll; the prompt (a serialisation of the whole graph) is built
// only when something upstream changed, and a chain that cannot be found is looked for again only a
// few times (the graph may still be loading), not at every poll.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { BoundedMap, chainKey, chainPlan, chainPrompt, imageChain, namesText } from "./upstream.js";

export const nodeDefs = {}; // class_type -> definition, filled by the extension for every node type
const CLIENT_ID = "anyi2v-editor-background"; // no browser tab has this id: the job's progress messages reach nobody
const STORE = "AnyI2V.backgrounds";
const STORED_MAX = 32;
const LOADED_MAX = 16;
// chain key -> decoded HTMLImageElement, the latest few (instant after ComfyUI's undo rebuilds the node)
const loaded = new BoundedMap(LOADED_MAX);
const RETRIES = 4; // looks for a chain that cannot be found (0.5, 1, 2, 4 s apart), then none until the graph changes
const OFF = { 2: "muted", 4: "bypassed" }; // LiteGraph modes that leave a node out of the prompt

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

// The values of a node's widgets that go into a prompt (not an upload button's, not an image
// preview's: Load Image adds its preview once the picture has loaded, which changes nothing).
function sentValues(n) {
  return n.widgets?.filter((w) => w.serialize !== false && w.options?.serialize !== false).map((w) => w.value) ?? null;
}

// A cheap text of what feeds the node's image input, from the live graph (the node's own mode too):
// when it is unchanged there is no need to build the prompt (graphToPrompt serialises the whole graph).
function upstreamText(node, slot) {
  const parts = [node.mode];
  const seen = new Set();
  const todo = node.isInputConnected(slot) ? [node.getInputNode(slot)] : [];
  while (todo.length) {
    const n = todo.pop();
    if (!n || seen.has(n.id)) continue;
    seen.add(n.id);
    const inner = n.subgraph?.nodes?.map((m) => [m.id, m.mode, sentValues(m)]) ?? null;
    parts.push([n.id, n.type, n.mode, sentValues(n), inner]);
    n.inputs?.forEach((_, i) => {
      if (n.isInputConnected(i)) {
        const origin = n.getInputNode(i);
        parts.push([n.id, i, origin?.id ?? null]);
        todo.push(origin);
      }
    });
  }
  // widget values that JSON cannot write (cycles, BigInt) are written as markers, never as something
  // new each time: a text that always differed would rebuild the prompt at every poll
  const objects = new WeakSet();
  return JSON.stringify(parts, (_, v) => {
    if (typeof v === "bigint") return `${v}n`;
    if (v && typeof v === "object") {
      if (objects.has(v)) return "[seen]";
      objects.add(v);
    }
    return v;
  });
}

// Why the node's chain is left out of the prompt on purpose (the node or its source muted or
// bypassed), or null.
function switchedOff(node, slot) {
  if (OFF[node.mode]) return `the editor is ${OFF[node.mode]}`;
  const source = node.isInputConnected(slot) ? node.getInputNode(slot) : null;
  if (source && OFF[source.mode] === "muted") return `${source.title ?? source.type} is muted`;
  return null;
}

// prompt: the whole graph's, for the nodes' titles in messages; only the chain is sent.
async function queueChain(prompt, chain, target) {
  const body = { prompt: chainPrompt(chain, target), client_id: CLIENT_ID, partial_execution_targets: [target] };
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
// canvas, or ""), stale (the image belongs to an older chain), offer (null, or {names, run} for the
// editor's "Compute picture" button: the nodes it would run, and running them).
export class Background {
  constructor(node, onChange) {
    this.node = node;
    this.onChange = onChange;
    this.image = null;
    this.note = "";
    this.stale = false;
    this.offer = null;
    this.key = null; // the current chain's key (null: no chain)
    this.seen = null; // what the last look found (a chain's key, or why there was none)
    this.upstream = null;
    this.misses = 0; // looks in a row that could not read the chain
    this.retryAt = null; // when to look again although nothing upstream changed (null: never)
    this.looks = 0; // reads of the graph
    this.generation = 0; // chains looked for: an older chain's result is dropped
  }

  slot() {
    return this.node.inputs?.findIndex((i) => i.name === "image") ?? -1;
  }

  set(image, note = "", stale = false, offer = null) {
    Object.assign(this, { image, note, stale, offer });
    this.onChange();
  }

  // A look that found no chain where one may yet appear (the graph still loading, a passing error):
  // look again a few times, further apart, then only when something upstream changes.
  missed() {
    this.retryAt = this.misses < RETRIES ? performance.now() + 500 * 2 ** this.misses : null;
    this.misses++;
  }

  // Look at the image chain again; cheap when nothing upstream changed (call it as often as wanted).
  // force: look even if the live graph upstream seems unchanged (after a workflow is loaded).
  async refresh(force = false) {
    const slot = this.slot();
    if (slot < 0 || !this.node.graph) return;
    const text = upstreamText(this.node, slot);
    if (force || text !== this.upstream) this.misses = 0;
    else if (this.retryAt === null || performance.now() < this.retryAt) return;
    this.upstream = text;
    this.retryAt = null;
    const look = ++this.looks;
    let prompt = null, chain = null, none = "not linked";
    if (this.node.isInputConnected(slot)) none = switchedOff(this.node, slot);
    if (this.node.isInputConnected(slot) && !none) {
      try {
        prompt = await currentPrompt();
        chain = imageChain(prompt, executionId(this.node, prompt));
      } catch (e) {
        if (look !== this.looks) return; // a newer look is under way
        this.set(this.image, `no picture: the graph cannot be read (${e.message})`, !!this.image);
        this.missed();
        return;
      }
    }
    if (look !== this.looks) return; // a newer look is under way
    if (none === null && !chain) {
      const source = this.node.getInputNode(slot);
      if (OFF[source?.mode]) none = `${source.title ?? source.type} is ${OFF[source.mode]}`; // bypassed, nothing to pass on
      else {
        none = "not found";
        this.missed();
      }
    }
    if (chain) this.misses = 0;
    const key = chain ? chainKey(chain) : null;
    const seen = key ?? `(${none})`;
    if (seen === this.seen) return; // the same chain: what is shown (or being computed) stays
    this.seen = seen;
    this.key = key;
    const generation = ++this.generation;
    const isCurrent = () => generation === this.generation;
    if (!chain) {
      if (none === "not linked") return this.set(null, "");
      if (none === "not found") return this.set(this.image, "", !!this.image);
      return this.set(this.image, `the picture is not updated: ${none}`, !!this.image);
    }
    if (await this.showKnown(key, isCurrent)) return;
    if (!isCurrent()) return;
    const plan = chainPlan(chain, nodeDefs);
    if (plan.run === "never") return this.set(this.image, `the picture appears after a run (${plan.why})`, !!this.image);
    const target = `anyi2v_background_${executionId(this.node, prompt).replaceAll(":", "_")}`;
    const compute = async () => {
      if (!isCurrent()) return;
      this.set(this.image, "computing the picture…", !!this.image);
      try {
        const promptId = await queueChain(prompt, chain, target);
        const ref = await waitForJob(promptId, target, isCurrent);
        if (ref && isCurrent()) await this.show(key, ref, isCurrent);
      } catch (e) {
        if (isCurrent()) this.set(null, `no picture: ${e.message}`);
      }
    };
    if (plan.run === "ask") {
      const note = "the editor runs these nodes only when asked: press Compute picture, or run the graph";
      return this.set(this.image, note, !!this.image, { names: namesText(plan.nodes), run: compute });
    }
    await compute();
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
