// The editor's image chain, read from the API-format prompt (what app.graphToPrompt() sends to
// /prompt: reroutes, bypassed nodes, primitives and subgraphs already resolved). Pure functions, no
// DOM and no ComfyUI imports: tests/js checks them on plain objects.

// Inputs of these types carry no model: a chain that links only these is computed without models.
const PLAIN_TYPES = new Set(["IMAGE", "MASK", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);

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

function declaredType(def, name) {
  const spec = def?.input?.required?.[name] ?? def?.input?.optional?.[name];
  if (!spec) return null;
  return Array.isArray(spec[0]) ? "COMBO" : String(spec[0]);
}

// Why the chain cannot be computed without models ({node, classType, input, type}), or null if it
// can: every linked input in it has a plain type (images, masks, numbers, text, choices).
// defs: class_type -> node definition as in /object_info.
export function modelInput(chain, defs) {
  for (const [id, { class_type, inputs }] of Object.entries(chain.nodes)) {
    const def = defs[class_type];
    if (!def) return { node: id, classType: class_type, title: class_type, input: null, type: null };
    for (const [name, value] of Object.entries(inputs)) {
      if (!isLink(value)) continue;
      const type = declaredType(def, name);
      if (!type || !type.split(",").every((t) => PLAIN_TYPES.has(t.trim()))) {
        return { node: id, classType: class_type, title: def.display_name, input: name, type };
      }
    }
  }
  return null;
}
