// The editor's image chain, read from the API-format prompt (what app.graphToPrompt() sends to
// /prompt: reroutes, bypassed nodes, primitives and subgraphs already resolved), and what the editor
// may do with it. Pure functions, no DOM and no ComfyUI imports: tests/js checks them on plain objects.
import { LOCAL_NODES } from "./local_nodes.js";

// Inputs of these types carry no model: a chain that links only these can be computed without models.
// ANYI2V_TRAJECTORY is this pack's box layout (plain data from AnyI2V Trajectory; nodes/types.py).
const PLAIN_TYPES = new Set(["IMAGE", "MASK", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "ANYI2V_TRAJECTORY"]);

const isLink = (v) => Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && Number.isInteger(v[1]);

// The image input's source [nodeId, slot] and the prompt entries of every node it depends on
// ({id: {class_type, inputs}}), or null when the input is not linked.
export function imageChain(prompt, nodeId, input = "image") {
  const source = prompt?.[nodeId]?.inputs?.[input];
  if (!isLink(source)) return null;
  const nodes = {};
  const todo = [source[0]];
  while (todo.length) {
    const id = todo.pop();
    if (id in nodes || !prompt[id]) continue;
    const { class_type, inputs } = prompt[id];
    nodes[id] = { class_type, inputs: inputs ?? {} };
    for (const v of Object.values(nodes[id].inputs)) if (isLink(v)) todo.push(v[0]);
  }
  return { source, nodes };
}

// A stable text for the chain (ids, types and every input value, keys sorted): it changes exactly
// when what the chain computes may change.
export function chainKey(chain) {
  const sorted = (value) => {
    if (Array.isArray(value)) return value.map(sorted);
    if (value && typeof value === "object") return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]));
    return value;
  };
  return JSON.stringify(sorted({ source: chain.source, nodes: chain.nodes }));
}

// The chain's node ids in the order they run: every node after the nodes it takes inputs from
// (input names sorted, so the order does not depend on how the prompt was written).
export function runOrder(chain) {
  const order = [];
  const seen = new Set();
  const visit = (id) => {
    if (seen.has(id) || !chain.nodes[id]) return;
    seen.add(id);
    const inputs = chain.nodes[id].inputs;
    for (const name of Object.keys(inputs).sort()) if (isLink(inputs[name])) visit(inputs[name][0]);
    order.push(id);
  };
  visit(chain.source[0]);
  return order;
}

// What the editor sends to /prompt for the chain's picture: the chain's nodes and one Preview Image
// of its source, nothing else of the graph (a node type missing elsewhere would make the server
// refuse the whole prompt, and every posted node's IS_CHANGED would be called).
export function chainPrompt(chain, target) {
  const prompt = {};
  for (const [id, { class_type, inputs }] of Object.entries(chain.nodes)) prompt[id] = { class_type, inputs };
  prompt[target] = { class_type: "PreviewImage", inputs: { images: chain.source } };
  return prompt;
}

function declaredType(def, name) {
  const spec = def?.input?.required?.[name] ?? def?.input?.optional?.[name];
  if (!spec) return null;
  return Array.isArray(spec[0]) ? "COMBO" : String(spec[0]);
}

const titleOf = (classType, def) => def?.display_name || classType || "a missing node";

// Why the chain cannot be computed without models ({node, classType, title, input, type}), or null
// if it can: every node is known and every linked input in it has a plain type (images, masks,
// numbers, text, choices). defs: class_type -> node definition as in /object_info.
export function modelInput(chain, defs) {
  for (const id of runOrder(chain)) {
    const { class_type, inputs } = chain.nodes[id];
    const def = defs[class_type];
    if (!def) return { node: id, classType: class_type, title: titleOf(class_type), input: null, type: null };
    for (const name of Object.keys(inputs).sort()) {
      if (!isLink(inputs[name])) continue;
      const type = declaredType(def, name);
      if (!type || !type.split(",").every((t) => PLAIN_TYPES.has(t.trim()))) {
        return { node: id, classType: class_type, title: titleOf(class_type, def), input: name, type };
      }
    }
  }
  return null;
}

// What the editor does with the chain:
//   {run: "auto"}: every node is on the allowlist (local, cheap, no side effects): computed at once;
//   {run: "ask", nodes: [titles in run order]}: plain values only, but some node is not on the
//     allowlist: computed only when the user presses the editor's button (or by a run of the graph);
//   {run: "never", why}: a node is missing, an output node, an API node (a paid web service) or takes
//     a model: the picture comes from a run of the graph.
// defs: class_type -> node definition as in /object_info (display_name, output_node, api_node, input).
export function chainPlan(chain, defs, local = LOCAL_NODES) {
  const order = runOrder(chain);
  for (const id of order) {
    const { class_type } = chain.nodes[id];
    const def = defs[class_type];
    if (!def) return { run: "never", why: `${titleOf(class_type)} is not a known node` };
    if (def.api_node) return { run: "never", why: `${titleOf(class_type, def)} calls a paid web API` };
    if (def.output_node) return { run: "never", why: `${titleOf(class_type, def)} is an output node` };
  }
  const needs = modelInput(chain, defs);
  if (needs) return { run: "never", why: `${needs.title} takes a ${needs.type}` };
  if (order.every((id) => Object.hasOwn(local, chain.nodes[id].class_type))) return { run: "auto" };
  return { run: "ask", nodes: order.map((id) => titleOf(chain.nodes[id].class_type, defs[chain.nodes[id].class_type])) };
}

// "Load Image, Upscale Image ×2": the titles in order, repeats counted.
export function namesText(titles) {
  const counts = new Map();
  for (const t of titles) counts.set(t, (counts.get(t) ?? 0) + 1);
  return [...counts].map(([t, n]) => (n > 1 ? `${t} ×${n}` : t)).join(", ");
}

// A Map that keeps at most `max` entries, dropping the least recently used one (get counts as use).
export class BoundedMap extends Map {
  constructor(max) {
    super();
    this.max = max;
  }

  get(key) {
    if (!super.has(key)) return undefined;
    const value = super.get(key);
    super.delete(key);
    super.set(key, value);
    return value;
  }

  set(key, value) {
    super.delete(key);
    super.set(key, value);
    while (this.size > this.max) super.delete(this.keys().next().value);
    return this;
  }
}
