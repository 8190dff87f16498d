"""Convert a UI-format workflow (what ComfyUI saves and the template browser loads) into an API-format
prompt (what /prompt takes), using the server's /object_info for the widget order.

This is what the frontend's graphToPrompt does for plain graphs; tests check it against the real
frontend on every example workflow. Unsupported on purpose (clear error instead): bypassed nodes,
frontend-only Reroute/PrimitiveNode nodes and subgraphs. Notes are skipped, muted nodes dropped. A boolean
low_memory (workflows saved before it became a choice) becomes the choice the pack's frontend extension shows.
"""

from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SKIPPED_TYPES = {"Note", "MarkdownNote"}
UNSUPPORTED_TYPES = {"Reroute", "PrimitiveNode"}
MODE_MUTED, MODE_BYPASS = 2, 4
LEGACY_LOW_MEMORY = {True: "on", False: "auto"}  # what web/low_memory.js shows a boolean low_memory as
LOW_MEMORY_NODES = {"AnyI2VKSampler", "AnyI2VSampler"}


class WorkflowError(ValueError):
    pass


def _is_widget(spec) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _extra_widget_values(spec) -> int:
    """Frontend widgets that add a value after this one: a seed's 'control after generate', an upload button."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return int(bool(opts.get("control_after_generate"))) + int(bool(opts.get("image_upload")))


def _ordered_inputs(info: dict):
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    for section in ("required", "optional"):
        specs = info.get("input", {}).get(section, {})
        for name in order.get(section, []):
            if name in specs:
                yield name, specs[name]


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    if workflow.get("definitions", {}).get("subgraphs"):
        raise WorkflowError("subgraphs are not supported by this converter")
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {node["id"]: node for node in workflow.get("nodes", [])}
    prompt = {}
    for node in nodes.values():
        kind = node["type"]
        if kind in SKIPPED_TYPES or node.get("mode", 0) == MODE_MUTED:
            continue
        if kind in UNSUPPORTED_TYPES or node.get("mode", 0) == MODE_BYPASS:
            raise WorkflowError(f"node {node['id']} ({kind}): bypassed and frontend-only nodes are not supported")
        info = object_info.get(kind)
        if info is None:
            raise WorkflowError(f"node {node['id']}: unknown node type '{kind}' (is its pack installed?)")
        linked = {}
        for slot in node.get("inputs", []):
            link = links.get(slot.get("link"))
            if link is not None:
                source = nodes.get(link[1])
                if source is None or source.get("mode", 0) == MODE_MUTED:
                    continue
                linked[slot["name"]] = [str(link[1]), link[2]]
        values = node.get("widgets_values", [])
        inputs, i = {}, 0
        for name, spec in _ordered_inputs(info):
            if _is_widget(spec):
                if isinstance(values, dict):
                    if name in values:
                        inputs[name] = values[name]
                elif i < len(values):
                    inputs[name] = values[i]
                i += 1 + _extra_widget_values(spec)
            if name in linked:
                inputs[name] = linked[name]
        if kind in LOW_MEMORY_NODES and isinstance(inputs.get("low_memory"), bool):
            inputs["low_memory"] = LEGACY_LOW_MEMORY[inputs["low_memory"]]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs, "_meta": {"title": node.get("title") or info.get("display_name", kind)}}
    return prompt
