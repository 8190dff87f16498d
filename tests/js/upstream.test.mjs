// node --test tests/js/ : the editor's image chain read from an API-format prompt.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chainKey, imageChain, modelInput } from "../../web/upstream.js";

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
};

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
