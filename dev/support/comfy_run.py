"""Run prompts in-process through ComfyUI's real PromptExecutor (which wraps everything in
torch.inference_mode, as a user's ComfyUI does), with the tiny models and the ADE stand-in loaded."""

from __future__ import annotations

import asyncio
import itertools
import sys

from .host import REPO, boot, cache_dir, load_pack

STANDIN_ADE = REPO / "dev" / "standin_ade"
_ids = itertools.count()


class MessageLog:
    """Receives the executor's messages (the role the server plays); keeps them for assertions."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))


class Host:
    def __init__(self):
        boot()
        import comfy.model_management  # noqa: F401
        import execution
        import folder_paths

        import nodes

        from .tiny_models import ensure_models, register_tiny_sd15

        self.models_dir = cache_dir()
        self.files = ensure_models(self.models_dir)
        register_tiny_sd15()
        for folder in ("checkpoints", "loras", "vae", "animatediff_models"):
            folder_paths.add_model_folder_path(folder, str(self.models_dir / folder), is_default=True)
        asyncio.run(nodes.init_builtin_extra_nodes())
        self.pack = load_pack()
        name = str(STANDIN_ADE).replace(".", "_x_")
        if name not in sys.modules and not asyncio.run(nodes.load_custom_node(str(STANDIN_ADE))):
            raise RuntimeError("the ADE stand-in did not load")
        self.log = MessageLog()
        self.executor = execution.PromptExecutor(self.log, cache_type=False, cache_args={"lru": 0, "ram": 0})
        self._execution = execution
        self._nodes = nodes

    def run(self, prompt: dict, outputs: list[str] | None = None) -> dict:
        """Validate and execute an API-format prompt; return {node_id: ui output}. Raises on failure.
        A prompt without an output node gets PreviewAny sinks on its leaves."""
        prompt_id = f"test-{next(_ids)}"
        if outputs is None and not any(getattr(self._nodes.NODE_CLASS_MAPPINGS.get(n["class_type"]), "OUTPUT_NODE", False)
                                       for n in prompt.values()):
            prompt = with_leaf_sinks(prompt)
        valid = asyncio.run(self._execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0] or valid[3]:  # any invalid output fails the test prompt (the server would skip it)
            raise PromptError("validation", valid[1], valid[3])
        self.log.messages.clear()
        self.executor.execute(prompt, prompt_id, {"client_id": "anyi2v-tests"}, outputs if outputs is not None else valid[2])
        if not self.executor.success:
            errors = [data for event, data in self.log.messages if event == "execution_error"]
            raise PromptError("execution", errors[0] if errors else None, None)
        return self.executor.history_result["outputs"]

    def node_output(self, prompt: dict, node_id: str):
        """Run the prompt and return the Python outputs of one node (a PreviewAny sink makes any
        node an output, since ComfyUI only executes what feeds an output node)."""
        return self.node_outputs(prompt, [node_id])[0]

    def node_outputs(self, prompt: dict, node_ids: list[str]) -> list:
        """Run the prompt once and return the Python outputs of each of these nodes."""
        sinks = {f"_anyi2v_sink_{n}": {"class_type": "PreviewAny", "inputs": {"source": [n, 0]}} for n in node_ids}
        self.run(dict(prompt, **sinks), outputs=list(sinks))
        found = []
        for node_id in node_ids:
            entry = self.executor.caches.outputs.get(node_id)
            outputs = entry.outputs if hasattr(entry, "outputs") else entry[0]
            found.append([values[0] if len(values) == 1 else values for values in outputs])
        return found


def with_leaf_sinks(prompt: dict) -> dict:
    """Feed every node whose outputs nobody uses into a PreviewAny, so that all of them run."""
    used = {v[0] for n in prompt.values() for v in n["inputs"].values() if isinstance(v, list) and len(v) == 2}
    sinks = {f"_sink_{k}": {"class_type": "PreviewAny", "inputs": {"source": [k, 0]}} for k in prompt if k not in used}
    return dict(prompt, **sinks)


class PromptError(RuntimeError):
    def __init__(self, stage, error, node_errors):
        self.stage, self.error, self.node_errors = stage, error, node_errors
        if isinstance(error, dict) and "exception_message" in error:
            text = f"{error.get('exception_type')}: {error['exception_message']}"
        else:
            text = f"{error} {node_errors or ''}"
        super().__init__(f"{stage} failed: {text[:2000]}")


_HOST: Host | None = None


def get_host() -> Host:
    global _HOST
    if _HOST is None:
        _HOST = Host()
    return _HOST
