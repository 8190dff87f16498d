// low_memory was a boolean widget and is now a choice ("auto", "on", "off"). A workflow saved before holds
// true or false there: shown as the choice it means (true: "on"; false, the old default: "auto"), so the
// combo shows one of its options and the prompt carries it. (The server also accepts the booleans, for API
// prompts saved before.)
import { app } from "../../scripts/app.js";

const NODES = new Set(["AnyI2VKSampler", "AnyI2VSampler"]);

app.registerExtension({
  name: "AnyI2V.LowMemoryChoice",
  loadedGraphNode(node) {
    if (!NODES.has(node.comfyClass ?? node.type)) return;
    const widget = node.widgets?.find((w) => w.name === "low_memory");
    if (widget && typeof widget.value === "boolean") widget.value = widget.value ? "on" : "auto";
  },
});
