// node --test tests/js/ : the editor's image chain read from an API-format prompt.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LOCAL_NODES } from "../../web/local_nodes.js";
import { BoundedMap, chainKey, chainPlan, chainPrompt, imageChain, modelInput, namesText, runOrder } from "../../web/upstream.js";

// Example 1's prompt as app.graphToPrompt() gives it (trimmed to what matters).
const PROMPT = {
  1: { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "v1-5.safetensors" } },
  4: { class_type: "LoadImage", inputs: { image: "car.png" } },
  5: { class_type: "ImageScale", inputs: { upscale_method: "bilinear", width: 512, height: 512, crop: "center", image: ["4", 0] } },
  6: { class_type: "AnyI2VInvertCondition", inputs: { model: ["1", 0], image: ["5", 0] } },
  11: { class_type: "AnyI2VTrajectory", inputs: { trajectory: "{}", frames: 16, width: 512, height: 512, image: ["5", 0] } },
  20: { class_type: "EmptyLatentImage", inputs: { width: 64, height: 64, batch_size: 1 } },
  21: { class_type: "VAEDecode", inputs: { samples: ["20", 0], vae: ["1", 2] } },
  22: { class_type: "AnyI2VTrajectory", inputs: { trajectory: "{}", frames: 16, width: 512, height: 512, image: ["21", 0] } },
  23: { class_type: "AnyI2VTrajectory", inputs: { trajectory: "{}", frames: 16, width: 512, height: 512 } },
};
const DEFS = {
  LoadImage: { display_name: "Load Image", input: { required: { image: [["car.png", "balls.png"], { image_upload: true }] } } },
  ImageScale: { display_name: "Upscale Image", input: { required: { upscale_method: [["bilinear"]], width: ["INT", {}], height: ["INT", {}], crop: [["center"]], image: ["IMAGE"] } } },
  EmptyLatentImage: { display_name: "Empty Latent Image", input: { required: { width: ["INT", {}], height: ["INT", {}], batch_size: ["INT", {}] } } },
  VAEDecode: { display_name: "VAE Decode", input: { required: { samples: ["LATENT"], vae: ["VAE"] } } },
  CheckpointLoaderSimple: { display_name: "Load Checkpoint", input: { required: { ckpt_name: [["v1-5.safetensors"]] } } },
  // as /object_info gives them (comfy_extras/nodes_flux.py, comfy_api_nodes/nodes_bfl.py, nodes.py)
  FluxKontextImageScale: { display_name: null, output_node: false, api_node: false, input: { required: { image: ["IMAGE", {}] } } },
  FluxProExpandNode: { display_name: "Flux.1 Expand Image", output_node: false, api_node: true,
    input: { required: { image: ["IMAGE", {}], prompt: ["STRING", {}], top: ["INT", {}] } } },
  SaveImage: { display_name: "Save Image", output_node: true, input: { required: { images: ["IMAGE"], filename_prefix: ["STRING", {}] } } },
  StringConcatenate: { display_name: "Concatenate", input: { required: { string_a: ["STRING", {}], string_b: ["STRING", {}] } } },
  AnyI2VTrajectory: { display_name: "AnyI2V Trajectory", input: { required: { trajectory: ["STRING", {}] }, optional: { image: ["IMAGE", {}] } } },
  AnyI2VDrawTrajectory: { display_name: "AnyI2V Draw Trajectory", input: { required: { images: ["IMAGE", {}], trajectory: ["ANYI2V_TRAJECTORY", {}] } } },
};
// the chain of an editor fed by node "src" of `prompt`
const chainOf = (prompt) => imageChain({ ...prompt, ed: { class_type: "AnyI2VTrajectory", inputs: { image: ["src", 0] } } }, "ed");

test("the chain is the image source and everything it depends on, nothing else", () => {
  const chain = imageChain(PROMPT, "11");
  assert.deepEqual(chain.source, ["5", 0]);
  assert.deepEqual(Object.keys(chain.nodes).sort(), ["4", "5"]);
  assert.equal(imageChain(PROMPT, "23"), null); // not linked
  assert.deepEqual(Object.keys(imageChain(PROMPT, "22").nodes).sort(), ["1", "20", "21"]);
});

test("a chain of images and plain values needs no model; a MODEL/VAE/LATENT link does", () => {
  assert.equal(modelInput(imageChain(PROMPT, "11"), DEFS), null);
  const needs = modelInput(imageChain(PROMPT, "22"), DEFS);
  assert.equal(needs.title, "VAE Decode");
  assert.ok(["LATENT", "VAE"].includes(needs.type));
  const unknown = modelInput({ source: ["9", 0], nodes: { 9: { class_type: "SomePackNode", inputs: {} } } }, DEFS);
  assert.equal(unknown.title, "SomePackNode");
  assert.equal(unknown.type, null);
});

test("the key changes with any input of the chain and not with the rest of the graph", () => {
  const key = chainKey(imageChain(PROMPT, "11"));
  const other = structuredClone(PROMPT);
  other[6].inputs.model = ["1", 1];
  other[11].inputs.trajectory = "{\"bounding_box\": []}";
  assert.equal(chainKey(imageChain(other, "11")), key);
  other[4].inputs.image = "balls.png";
  assert.notEqual(chainKey(imageChain(other, "11")), key);
  const reordered = { ...PROMPT, 5: { class_type: "ImageScale", inputs: { image: ["4", 0], crop: "center", height: 512, width: 512, upscale_method: "bilinear" } } };
  assert.equal(chainKey(imageChain(reordered, "11")), key);
});

test("the chain runs sources first, and only it is posted: nothing else of the graph, one preview of its source", () => {
  const chain = imageChain(PROMPT, "11");
  assert.deepEqual(runOrder(chain), ["4", "5"]);
  const posted = chainPrompt(chain, "anyi2v_background_11");
  assert.deepEqual(Object.keys(posted).sort(), ["4", "5", "anyi2v_background_11"]);
  assert.deepEqual(posted.anyi2v_background_11, { class_type: "PreviewImage", inputs: { images: ["5", 0] } });
  assert.deepEqual(posted[5], PROMPT[5]);
  // a missing node type elsewhere (here without class_type, as the frontend writes a missing node) is not posted
  const withMissing = { ...PROMPT, 30: { inputs: { model: ["1", 0] } }, 31: { class_type: "ADE_UseEvolvedSampling", inputs: { m: ["30", 0] } } };
  assert.deepEqual(chainPrompt(imageChain(withMissing, "11"), "t"), chainPrompt(chain, "t"));
  const wide = imageChain({ a: { class_type: "LoadImage", inputs: {} }, b: { class_type: "LoadImage", inputs: {} },
    m: { class_type: "AnyI2VMixConditions", inputs: { overlay: ["a", 0], base: ["b", 0] } }, e: { class_type: "AnyI2VTrajectory", inputs: { image: ["m", 0] } } }, "e");
  assert.deepEqual(runOrder(wide), ["b", "a", "m"]); // input names sorted: base before overlay
});

test("only a chain made entirely of allowlisted nodes runs by itself", () => {
  assert.deepEqual(chainPlan(imageChain(PROMPT, "11"), DEFS), { run: "auto" }); // Load Image -> Upscale Image
  // a plain chain with a node the editor does not know to be local and free: the button, naming every node it runs
  const kontext = chainOf({ 4: PROMPT[4], src: { class_type: "FluxKontextImageScale", inputs: { image: ["4", 0] } } });
  assert.deepEqual(chainPlan(kontext, DEFS), { run: "ask", nodes: ["Load Image", "FluxKontextImageScale"] });
  // the allowlist decides, not the types: the same chain with the node allowed runs by itself
  assert.deepEqual(chainPlan(kontext, DEFS, { ...LOCAL_NODES, FluxKontextImageScale: "test" }), { run: "auto" });
});

test("API nodes, output nodes, missing nodes and model inputs are never run by the editor, not even on request", () => {
  const api = chainOf({ 4: PROMPT[4], src: { class_type: "FluxProExpandNode", inputs: { image: ["4", 0], prompt: "a car", top: 0 } } });
  assert.deepEqual(chainPlan(api, DEFS), { run: "never", why: "Flux.1 Expand Image calls a paid web API" });
  // even on the allowlist (an id taken over): the server's own flag wins
  assert.equal(chainPlan(api, DEFS, { ...LOCAL_NODES, FluxProExpandNode: "test" }).run, "never");
  const text = chainOf({ s: { class_type: "StringConcatenate", inputs: { string_a: "a", string_b: "b" } },
    src: { class_type: "FluxProExpandNode", inputs: { image: ["4", 0], prompt: ["s", 0], top: 0 } }, 4: PROMPT[4] });
  assert.equal(chainPlan(text, DEFS).why, "Flux.1 Expand Image calls a paid web API"); // the text comes from elsewhere: still never
  const output = chainOf({ 4: PROMPT[4], src: { class_type: "SaveImage", inputs: { images: ["4", 0], filename_prefix: "x" } } });
  assert.deepEqual(chainPlan(output, DEFS), { run: "never", why: "Save Image is an output node" });
  assert.deepEqual(chainPlan(imageChain(PROMPT, "22"), DEFS).run, "never");
  assert.match(chainPlan(imageChain(PROMPT, "22"), DEFS).why, /^VAE Decode takes a (LATENT|VAE)$/);
  const missing = chainOf({ 4: PROMPT[4], src: { inputs: { image: ["4", 0] } } });
  assert.deepEqual(chainPlan(missing, DEFS), { run: "never", why: "a missing node is not a known node" });
  const unknown = chainOf({ src: { class_type: "SomePackNode", inputs: {} } });
  assert.deepEqual(chainPlan(unknown, DEFS), { run: "never", why: "SomePackNode is not a known node" });
});

test("a drawn trajectory is plain data: this pack's nodes around it run by themselves", () => {
  const chain = chainOf({ 4: PROMPT[4], t: { class_type: "AnyI2VTrajectory", inputs: { trajectory: "{}", image: ["4", 0] } },
    src: { class_type: "AnyI2VDrawTrajectory", inputs: { images: ["4", 0], trajectory: ["t", 0] } } });
  assert.equal(modelInput(chain, DEFS), null);
  assert.deepEqual(chainPlan(chain, DEFS), { run: "auto" });
});

test("the allowlist holds only ids, each with its reason; no output or API node of the fixtures is on it", () => {
  for (const [id, why] of Object.entries(LOCAL_NODES)) {
    assert.match(id, /^[A-Za-z0-9]+$/);
    assert.ok(typeof why === "string" && why.length > 3, id);
  }
  for (const id of ["SaveImage", "PreviewImage", "FluxProExpandNode", "VAEDecode", "CheckpointLoaderSimple", "LoadImageDataSetFromFolder"]) {
    assert.ok(!Object.hasOwn(LOCAL_NODES, id), id);
  }
  assert.ok(Object.isFrozen(LOCAL_NODES));
});

test("the button's names count repeats", () => {
  assert.equal(namesText(["Load Image", "Upscale Image", "Load Image", "Blur"]), "Load Image ×2, Upscale Image, Blur");
});

test("the decoded-picture cache keeps the latest few, a use counting as new", () => {
  const m = new BoundedMap(3);
  for (const k of ["a", "b", "c"]) m.set(k, k.toUpperCase());
  assert.equal(m.get("a"), "A"); // a is now the newest
  m.set("d", "D");
  assert.deepEqual([...m.keys()], ["c", "a", "d"]);
  assert.equal(m.get("b"), undefined);
  for (let i = 0; i < 100; i++) m.set(`k${i}`, i);
  assert.equal(m.size, 3);
  assert.deepEqual([...m.keys()], ["k97", "k98", "k99"]);
});
