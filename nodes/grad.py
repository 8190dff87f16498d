"""Gradients through a UNet whose weights were loaded under torch.inference_mode.

ComfyUI runs every prompt inside torch.inference_mode, so the loaders' weights are inference tensors,
and autograd refuses to save them for backward even inside inference_mode(False). For the duration of
the optimisation forwards, ``trainable_weights`` swaps every inference-tensor parameter/buffer of the
given modules for a normal tensor that aliases the same storage (no copy: inference-ness belongs to the
tensor, not to its memory), and puts the originals back afterwards (also on error or interrupt). Nothing
writes to the weights meanwhile, so the aliases are safe to save for backward. Tensor types that cannot
alias a storage (e.g. quantised subclasses) fall back to a copy. Only the modules the truncated forward
runs are swapped (not the output blocks after the last optimised one, nor the final head).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.utils.checkpoint


def _normal_alias(t: torch.Tensor) -> torch.Tensor:
    """A normal tensor over the storage of inference tensor `t` (a copy where aliasing is not possible)."""
    if type(t) in (torch.Tensor, torch.nn.Parameter):
        try:
            alias = torch.empty(0, dtype=t.dtype, device=t.device)
            return alias.set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())
        except (RuntimeError, TypeError, NotImplementedError):
            pass
    return t.detach().clone()


def _swap(module: torch.nn.Module, saved: list):
    for name, p in list(module._parameters.items()):
        if p is not None and p.is_inference():
            saved.append((module._parameters, name, p))
            module._parameters[name] = torch.nn.Parameter(_normal_alias(p), requires_grad=False)
    for name, b in list(module._buffers.items()):
        if b is not None and b.is_inference():
            saved.append((module._buffers, name, b))
            module._buffers[name] = _normal_alias(b)


@contextlib.contextmanager
def trainable_weights(modules):
    """Normal-tensor aliases of the inference-tensor weights of `modules` (and their children) meanwhile."""
    saved: list = []
    try:
        with torch.inference_mode(False):
            for top in modules:
                for m in top.modules():
                    _swap(m, saved)
        yield len(saved)
    finally:
        for store, name, original in reversed(saved):
            store[name] = original


def truncated_modules(unet, last_output_block: int) -> list:
    """The modules a forward that stops inside output block `last_output_block` runs."""
    mods = [unet.time_embed, unet.input_blocks, unet.middle_block]
    mods += list(unet.output_blocks[: last_output_block + 1])  # class-conditional UNets are refused upstream
    return [m for m in mods if m is not None]


def _normal(value):
    """A layer's inputs as the recomputation in backward must see them: inference tensors (e.g. the text
    context) as normal tensors, and dicts (transformer_options, which the UNet keeps mutating: its
    "block" entry moves on) as a snapshot of this call."""
    if isinstance(value, torch.Tensor) and value.is_inference():
        return value.clone()
    if isinstance(value, dict):
        return dict(value)
    return value


def _checkpoint_call(forward, *args, **kwargs):
    """Run a layer under non-reentrant checkpointing: its activations are recomputed in backward."""
    args = [_normal(a) for a in args]
    kwargs = {k: _normal(v) for k, v in kwargs.items()}
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def blocks_of(modules) -> list:
    """The modules that are called through their own __call__: the UNet runs the layers of its
    (TimestepEmbedSequential) blocks one by one, so those layers are the units."""
    out = []
    for m in modules:
        if isinstance(m, torch.nn.ModuleList):
            out += blocks_of(list(m))
        elif type(m).__name__ == "TimestepEmbedSequential":
            out += list(m)
        else:
            out.append(m)
    return out


@contextlib.contextmanager
def checkpointed(modules):
    """Gradient checkpointing of each layer of `modules` (see blocks_of) for the duration: activations
    are recomputed in backward instead of kept. The instances' own forward is restored afterwards."""
    patched = []
    try:
        for b in blocks_of(modules):
            if "forward" in b.__dict__:  # already checkpointed by an enclosing context (a model call inside one)
                continue
            b.forward = functools.partial(_checkpoint_call, b.forward)
            patched.append(b)
        yield
    finally:
        for b in patched:
            del b.forward
