"""AnyI2V Inject Features: frame 0 follows the condition (paper Sec. 3.2).

While active, in the conditional branch only:
- attn1 of the query blocks: frame 0's query := the captured one; every frame's K and V := frame 0's;
- ResBlock residual branch of the residual blocks: frame 0's := patch_adain(captured, current), detached.

Everything is installed on a clone through keyed extension points: an attn1 replace per block
(``("output", n, 0)``), a keyed DIFFUSION_MODEL wrapper that registers forward hooks on the
ResBlocks' residual branch for the duration of one UNet call and always removes them, and a keyed
OUTER_SAMPLE wrapper that reads ``end_percent`` on the schedule of each sampling run (the MODEL that is
sampled, with every object patch of later nodes such as AnimateDiff-Evolved's Use Evolved Sampling, so
node order does not matter) and hands the run its cut-off sigma in ``transformer_options[RUN_END_KEY]``.

Contract with the AnyI2V sampler (nodes/sampler.py):
- ``model_options["transformer_options"][TRANSFORMER_KEY]`` holds the ``InjectionState``;
- ``apply_injection(clone, features, ...)`` installs everything on an already cloned ModelPatcher;
  the attn1 replace covers the query blocks AND the optimisation blocks (one replace per key);
- per call, ``transformer_options["anyi2v_force"]`` makes injection act whatever the sigma, and
  ``transformer_options["anyi2v_sink"]`` (nodes/optimizer.py QuerySink, nodes/window_grad.py) receives the
  conditional chunk's queries of all frames after frame 0's replacement (``.blocks``, ``.record(block, q,
  frames)``; ``frames``: the video frames of a context window, or None); after the ``stop_after`` block the
  exception ``.stop(frames)`` gives is raised: ``StopForward`` ends the forward (and any windows still to run),
  ``WindowDone`` ends this context window's model call. The DIFFUSION_MODEL wrapper hands every model call to
  the sink (``.model_call(frames, kv, run, x)``): the sink chooses the grad mode and checkpointing, skips a
  window (zeros) or runs it, catches ``WindowDone``, and sets frame 0's kept K/V (``FrameZeroKV.snapshot``,
  ``.restore``) so that a window can be run again exactly as before.

Context windows (AnimateDiff-Evolved's ``ad_params["sub_idxs"]``, core ComfyUI's ``context_window``): the
injection acts on video frame 0 wherever it sits in a window; windows without it get frame 0's K/V kept
from the latest window of the same sampling run that held it: the same step's under static windows; under
windows that move every step (ADE's uniform schedules) a window may come before frame 0's and get the
previous model call's.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import comfy.model_patcher
import comfy.patcher_extension
import torch
from comfy.ldm.modules.attention import optimized_attention
from comfy_api.latest import io

from ..core.blocks import DEFAULT_OPT_BLOCKS, UNetLayout
from ..core.debias import patch_adain
from ..core.features import ConditionFeatures
from . import memory
from .invert import require_sd15_layout, residual_module
from .types import CATEGORY, Features

TRANSFORMER_KEY = "anyi2v"
WRAPPER_KEY = "anyi2v_injection"
RUN_END_KEY = "anyi2v_end_sigma"  # the sampling run's cut-off sigma: injection acts while sigma >= it


class StopForward(Exception):
    """Raised inside the UNet once the sampler has every query it needs."""


class WindowDone(Exception):
    """Raised inside the UNet once a context window's queries are recorded; its model call returns zeros."""


class FrameZeroKV:
    """Frame 0's keys and values per block, kept from the window that holds frame 0 for the windows of the
    same sampling run that do not (detached: a window does not backpropagate into another)."""

    def __init__(self):
        self._store: dict[int, tuple] = {}

    def put(self, block, run, ks, vs):
        ref = None
        if run is not None:  # dropped with the run (its sample_sigmas tensor), not kept on the device until the next

            def forget(dead, block=block):
                if self._store.get(block, (None,))[0] is dead:
                    del self._store[block]

            ref = weakref.ref(run, forget)
        self._store[block] = (ref, [k.detach() for k in ks], [v.detach() for v in vs])

    def snapshot(self) -> dict:
        """What is kept now (for ``restore``: the same K/V, not copies)."""
        return dict(self._store)

    def restore(self, snapshot: dict):
        self._store = dict(snapshot)

    def get(self, block, run):
        entry = self._store.get(block)
        if entry is None or (entry[0] is None) != (run is None) or (run is not None and entry[0]() is not run):
            return None  # nothing from this sampling run yet
        return entry[1], entry[2]


def token_grid(transformer_options, tokens: int, features: ConditionFeatures, block: int) -> tuple[int, int]:
    """The (h, w) token grid of a block for the current latent, scaled like the features' grid."""
    h0, w0 = features.query_hw[block]
    lat_h, lat_w = transformer_options.get("original_shape", [0, 0, *features.latent_hw])[-2:]
    fh, fw = features.latent_hw
    h, w = max(1, math.ceil(lat_h * h0 / fh)), max(1, math.ceil(lat_w * w0 / fw))
    if h * w != tokens:  # odd sizes: trust the token count and the features' aspect
        h = max(1, round(math.sqrt(tokens * h0 / w0)))
        w = tokens // h
    return h, w


@dataclass
class InjectionState:
    features: ConditionFeatures
    query_blocks: list[int]
    res_blocks: list[int]
    opt_blocks: list[int]
    inject_query: bool = True
    inject_residual: bool = True
    share_kv: bool = True
    patch_size: int = 4
    end_percent: float = 0.16
    end_sigma: float = math.inf  # end_percent on the schedule of the MODEL it was installed on (runs set their own)
    frame_zero_kv: FrameZeroKV = field(default_factory=FrameZeroKV)

    def active(self, transformer_options) -> bool:
        if transformer_options.get("anyi2v_force"):
            return True
        sigmas = transformer_options.get("sigmas")
        return sigmas is not None and float(sigmas.max()) >= transformer_options.get(RUN_END_KEY, self.end_sigma)


def cond_rows(transformer_options, batch: int) -> list[tuple[int, int]]:
    """(start, frames) of every conditional chunk in a batch laid out per cond_or_uncond."""
    order = transformer_options.get("cond_or_uncond") or [0]
    chunk = batch // len(order)
    return [(i * chunk, chunk) for i, c in enumerate(order) if c == 0]


def window_frames(transformer_options, frames_in_batch: int) -> list[int] | None:
    """The video frames of this call when sampling in context windows (AnimateDiff-Evolved's
    ``ad_params["sub_idxs"]`` or core ComfyUI's ``context_window``), else None (the batch holds them all)."""
    sub = (transformer_options.get("ad_params") or {}).get("sub_idxs")
    if sub is None:
        sub = getattr(transformer_options.get("context_window"), "index_list", None)
    if sub is None or len(sub) != frames_in_batch:  # not a window of this batch (e.g. a leftover entry)
        return None
    return [int(i) for i in sub]


def frame_zero_row(frames: list[int] | None) -> int | None:
    """Where video frame 0 is within each chunk of the batch; None if this window does not hold it."""
    if frames is None:
        return 0
    return frames.index(0) if 0 in frames else None


def make_attn1(state: InjectionState):
    def attn1(q, k, v, extra_options):
        block = extra_options["block"][1]
        sink = extra_options.get("anyi2v_sink")
        rows = cond_rows(extra_options, q.shape[0])
        frames = window_frames(extra_options, rows[0][1]) if rows else None
        zero = frame_zero_row(frames)
        if rows and state.active(extra_options) and block in state.query_blocks:
            if zero is not None and state.inject_query:
                h, w = token_grid(extra_options, q.shape[1], state.features, block)
                q = _replace_rows(q, [s + zero for s, _ in rows], state.features.query_for(block, h, w).to(q))
            if state.share_kv:
                run = extra_options.get("sample_sigmas")
                if zero is not None:
                    k0, v0 = [k[s + zero:s + zero + 1] for s, _ in rows], [v[s + zero:s + zero + 1] for s, _ in rows]
                    if frames is not None:
                        state.frame_zero_kv.put(block, run, k0, v0)
                else:
                    k0, v0 = state.frame_zero_kv.get(block, run) or (None, None)
                    if k0 is not None and len(k0) != len(rows):
                        k0, v0 = k0[:1] * len(rows), v0[:1] * len(rows)
                if k0 is not None:
                    k, v = _share(k, rows, [t.to(k) for t in k0]), _share(v, rows, [t.to(v) for t in v0])
        if sink is not None and block in sink.blocks and rows:
            s, n = rows[0]
            sink.record(block, q[s:s + n], frames)
            if sink.stop_after == block:
                raise sink.stop(frames)
        # with the call's options, so that an attention chosen through "optimized_attention_override" applies here too
        return optimized_attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                                   transformer_options=extra_options)

    return attn1


def _replace_rows(x, starts, row):
    parts, last = [], 0
    for s in starts:
        parts += [x[last:s], row]
        last = s + 1
    parts.append(x[last:])
    return torch.cat(parts)


def _share(x, rows, firsts):
    """Every frame of conditional chunk i gets the tokens firsts[i] (its frame 0's)."""
    parts, last = [], 0
    for (s, n), first in zip(rows, firsts, strict=True):
        parts += [x[last:s], first.expand(n, -1, -1)]
        last = s + n
    parts.append(x[last:])
    return torch.cat(parts)


def make_residual_wrapper(state: InjectionState):
    def wrapper(executor, *args, **kwargs):
        options = kwargs.get("transformer_options", args[-1] if args and isinstance(args[-1], dict) else {})
        unet = executor.class_obj
        handles = []

        def hook(module, inputs, out, block):
            rows = cond_rows(options, out.shape[0])
            zero = frame_zero_row(window_frames(options, rows[0][1])) if rows else None
            if zero is None or not state.active(options):
                return None
            feat = state.features.residual_for(block, out.shape[-2], out.shape[-1]).to(out)
            new = out
            for s, _ in rows:
                mixed = patch_adain(feat, out[s + zero:s + zero + 1].detach(), state.patch_size).detach()
                new = torch.cat([new[:s + zero], mixed, new[s + zero + 1:]])
            return new

        def run():
            try:
                if state.inject_residual:
                    for b in state.res_blocks:
                        handles.append(residual_module(unet, b).register_forward_hook(
                            lambda m, i, o, b=b: hook(m, i, o, b)))
                return executor(*args, **kwargs)
            finally:
                for h in handles:
                    h.remove()
                handles.clear()

        sink = options.get("anyi2v_sink")
        if sink is None:
            return run()
        x = args[0] if args else kwargs["x"]
        rows = cond_rows(options, x.shape[0])
        frames = window_frames(options, rows[0][1]) if rows else None
        return sink.model_call(frames, state.frame_zero_kv, run, x)

    return wrapper


def make_run_window(state: InjectionState):
    """OUTER_SAMPLE wrapper: the run's cut-off sigma from end_percent on the schedule being sampled."""

    def wrapper(executor, *args, **kwargs):
        guider = executor.class_obj
        original = guider.model_options
        sampling = guider.model_patcher.get_model_object("model_sampling")
        guider.model_options = comfy.model_patcher.create_model_options_clone(original)
        guider.model_options.setdefault("transformer_options", {})[RUN_END_KEY] = float(sampling.percent_to_sigma(state.end_percent))
        try:
            return executor(*args, **kwargs)
        finally:
            guider.model_options = original

    return wrapper


def apply_injection(model, features: ConditionFeatures, *, query_blocks=None, res_blocks=None, opt_blocks=None,
                    inject_query=True, inject_residual=True, share_kv=True, patch_size=4, end_percent=0.16) -> InjectionState:
    """Install the injection on an already cloned ModelPatcher; return its state."""
    require_sd15_layout(model)
    layout = UNetLayout.from_unet(model.model.diffusion_model)
    features.check_model(layout.signature())
    query_blocks = sorted(features.queries) if query_blocks is None else layout.resolve(query_blocks, "attn")
    res_blocks = sorted(features.residuals) if res_blocks is None else layout.resolve(res_blocks, "res")
    opt_blocks = list(DEFAULT_OPT_BLOCKS) if opt_blocks is None else layout.resolve(opt_blocks, "attn")
    missing = [b for b in query_blocks if b not in features.queries] + [b for b in res_blocks if b not in features.residuals]
    if missing:
        raise ValueError(f"features: no captured features for output blocks {missing}; "
                         f"captured queries {sorted(features.queries)}, residuals {sorted(features.residuals)}")
    if not 0.0 <= end_percent <= 1.0:
        raise ValueError(f"end_percent: must be within 0..1, got {end_percent}")
    end_sigma = float(model.get_model_object("model_sampling").percent_to_sigma(end_percent))
    state = InjectionState(features, query_blocks, res_blocks, opt_blocks, inject_query, inject_residual, share_kv,
                           int(patch_size), float(end_percent), end_sigma)
    attn1 = make_attn1(state)
    for b in sorted(set(query_blocks) | set(opt_blocks)):
        model.set_model_attn1_replace(attn1, "output", b, 0)
    options = model.model_options.setdefault("transformer_options", {})
    options[TRANSFORMER_KEY] = state
    wrappers = comfy.patcher_extension.WrappersMP
    model.remove_wrappers_with_key(wrappers.DIFFUSION_MODEL, WRAPPER_KEY)
    model.add_wrapper_with_key(wrappers.DIFFUSION_MODEL, WRAPPER_KEY, make_residual_wrapper(state))
    model.remove_wrappers_with_key(wrappers.OUTER_SAMPLE, WRAPPER_KEY)
    model.add_wrapper_with_key(wrappers.OUTER_SAMPLE, WRAPPER_KEY, make_run_window(state))
    memory.install(model)
    return state


def state_from_options(model_options) -> InjectionState | None:
    return model_options.get("transformer_options", {}).get(TRANSFORMER_KEY)


def injection_state(model) -> InjectionState | None:
    return state_from_options(model.model_options)


class InjectFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AnyI2VInjectFeatures",
            display_name="AnyI2V Inject Features",
            category=CATEGORY,
            description="A MODEL whose first frame follows the inverted condition: its queries and debiased residuals "
                        "are injected into frame 0 and frame 0's keys/values are shared with all frames, in the first steps.",
            inputs=[
                io.Model.Input("model", tooltip="The video model (after AnimateDiff's Use Evolved Sampling). It is cloned, never changed."),
                Features.Input("features", tooltip="The features from AnyI2V Invert Condition (same base model)."),
                io.Boolean.Input("inject_query", default=True, tooltip="Replace frame 0's attention queries with the condition's."),
                io.Boolean.Input("inject_residual", default=True, tooltip="Replace frame 0's ResBlock residuals with the debiased condition residuals."),
                io.Boolean.Input("share_kv", default=True, tooltip="Give every frame frame 0's keys and values in those attention layers."),
                io.Int.Input("patch_size", default=4, min=1, max=64, tooltip="Patch size p of the patch-wise AdaIN debiasing."),
                io.Float.Input("end_percent", default=0.16, min=0.0, max=1.0, step=0.01,
                               tooltip="Inject while sampling is before this point of the schedule (0.16 = the first 4 of 25 steps), "
                                       "read on the schedule of the sampling run whatever the node order. The AnyI2V samplers "
                                       "also inject the first step whenever they optimise it."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, features, inject_query, inject_residual, share_kv, patch_size, end_percent) -> io.NodeOutput:
        clone = model.clone()
        apply_injection(clone, features, inject_query=inject_query, inject_residual=inject_residual, share_kv=share_kv,
                        patch_size=patch_size, end_percent=end_percent)
        return io.NodeOutput(clone)


NODES = [InjectFeatures]
