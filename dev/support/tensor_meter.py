"""Bytes of a computation, measured from the operators it runs (works on meta tensors; dev/scale.py
counts the FLOPs with torch.utils.flop_counter).

``LiveBytes`` is a TorchDispatchMode that sees every tensor an operator creates (forward and
backward: the autograd engine runs the backward on the caller's thread for CPU and meta tensors) and
follows the life of its storage with a weak reference: the bytes alive at any moment and their peak,
counting each storage once (views share it). Storages that existed before (the weights, the inputs)
are not counted. On the meta device nothing is allocated, but storages are created and freed exactly
as they would be on a GPU, so the peak is that of live tensors (without a caching allocator's slack).
An output over the storage of one of the operator's inputs (a view, an in-place result, ``set_``) allocates
nothing and is not counted, so tensors made before the meter (the weights) are never counted, even when an
operator returns a view of them.

``SavedBytes`` is a saved_tensors_hooks pair that adds up the distinct storages autograd saves for
backward, leaving out given storages (the weights: saved for backward, but not an extra cost).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


class LiveBytes(TorchDispatchMode):
    def __init__(self, known=()):
        super().__init__()
        self.known = {storage_key(t) for t in known}
        self.live: dict[int, int] = {}
        self.now = 0
        self.peak = 0

    def _freed(self, key):
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = set()  # an output over an input's storage (a view, an in-place op, set_) allocates nothing
        for a in tree_leaves((args, kwargs)):
            if isinstance(a, torch.Tensor) and a.layout == torch.strided:
                inputs.add(storage_key(a))
            elif isinstance(a, torch.UntypedStorage):
                inputs.add(a._cdata)
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.live or key in self.known or key in inputs:
                continue
            self.live[key] = storage.nbytes()
            self.now += self.live[key]
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._freed, key)
        return out

    def reset_peak(self):
        self.peak = self.now


class SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    def __init__(self, known=()):
        self.known = {storage_key(t) for t in known}
        self.seen: set[int] = set()
        self.bytes = 0

        def pack(t):
            key = storage_key(t)
            if key not in self.known and key not in self.seen:
                self.seen.add(key)
                self.bytes += t.untyped_storage().nbytes()
            return t

        super().__init__(pack, lambda t: t)
