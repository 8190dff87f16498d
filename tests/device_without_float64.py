"""An accelerator without float64 (Apple's MPS, DirectML), modelled by the meta device.

``DeviceWithoutFloat64`` is a context manager that runs code whose "GPU" is the meta device (the way `make scale`
models a GPU: shapes and dtypes, no values) and records every op that has a float64 (or complex128) tensor on a
device other than the CPU, as an input or as an output, naming the op. The first such op raises
``Float64OnDevice`` at once; since code under test may catch exceptions (ComfyUI falls back on errors in places),
every violation is also kept in ``violations``, and ``check()`` fails on any. float64 on the CPU is allowed: that
is where the small float64 maths belongs (the PCA's C x C eigendecomposition, schedules, 2-means).

What the meta device cannot do is emulated, and nothing else is changed:

- Values that start on the CPU are carried along. A meta tensor made from CPU data (a copy to the device, a
  factory op such as ``arange``, ``torch.tensor(..., device=meta)``) keeps a CPU "shadow" of its value, and an op
  whose meta inputs all have shadows, with outputs of at most ``shadow_limit`` elements, computes its outputs'
  shadows by running the same op on the CPU (random ops excepted). So the schedule of the MODEL (its sigmas on the
  meta device), the sigma of a step, the timestep of an inversion call keep their real values, and the code's
  decisions on them (which steps are injected and optimised, the inversion's input scaling) are the real ones.
  Large tensors (the UNet's activations, its weights) have no values.
- ``x.new_ones(n)``, ``zeros_like(x)`` and the like take only the shape, dtype and device of a meta input, so their
  outputs get shadows whether or not it has one (ComfyUI's samplers make ``s_in = x.new_ones([batch])``).
- Reading a value on the device (``aten._local_scalar_dense``, ``aten.item``, ``aten.is_nonzero``: ``float(t)``,
  ``bool(t)``, ``t.item()``) gives the shadow's value where there is one, else a fixed answer: ``True`` for
  booleans (so ``bool(grad.any())`` and ``torch.isfinite(t).all()`` pass: the update is taken, the finite checks
  pass), ``1`` for integers and ``1.0`` for floating point (so a loss reads as finite).
- A copy from the device to the CPU (``aten._to_copy``, ``aten.to``, ``aten.copy_`` and the other copy ops, with a
  meta source and a CPU result, which the meta device refuses: "Cannot copy out of meta tensor") runs on a CPU
  stand-in of the source: its shadow where there is one, else deterministic pseudo-random values of its shape and
  dtype (uniform in [-1, 1) for floating point, from a generator seeded with the copy's ordinal; ``True`` for
  booleans; 0 for integers). The CPU code after the copy (the float64 eigendecomposition, the 2-means' sort and
  argmin) then runs on real numbers.
- ``torch.tensor`` / ``torch.as_tensor`` / ``torch.asarray`` / ``Tensor.new_tensor`` with Python data and a device
  other than the CPU are made on the CPU and copied to the device (the same result); a dispatch mode does not see
  the factory otherwise, so this is done in a torch-function mode, which makes the copy visible to the check.

``ops`` counts the ops seen on the device (by op name) and on the CPU, so a test can show that the work it meant
to check (convolutions, their backward, the eigendecomposition on the CPU) did run under the check.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

DOUBLE = (torch.float64, torch.complex128)
VALUE_READS = ("_local_scalar_dense", "item", "is_nonzero")  # float(t), bool(t), t.item() (in inference mode
# the composite ops arrive here undecomposed)
TEMPLATE_FACTORIES = ("new_ones", "new_zeros", "new_full", "ones_like", "zeros_like", "full_like")  # x.new_ones(n)
COPIES = ("_to_copy", "to", "copy_", "_copy_from", "_copy_from_and_resize")


class Float64OnDevice(AssertionError):
    pass


def _on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type != "cpu"


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


class _NoShadow(Exception):
    pass


class _Dispatch(TorchDispatchMode):
    def __init__(self, owner: DeviceWithoutFloat64):
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.owner._dispatch(func, args, kwargs or {})


class _Factories(TorchFunctionMode):
    """torch.tensor & co. with Python data and a device: made on the CPU, then copied (visible to the check)."""

    FACTORIES = (torch.tensor, torch.as_tensor, torch.asarray)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None and torch.device(device).type != "cpu":
            if func in self.FACTORIES and not isinstance(args[0], torch.Tensor):
                return func(*args, **dict(kwargs, device="cpu")).to(device)
            if func is torch.Tensor.new_tensor and not isinstance(args[1], torch.Tensor):
                return func(*args, **dict(kwargs, device="cpu")).to(device)
        elif func is torch.Tensor.new_tensor and _on_device(args[0]) and "device" not in kwargs \
                and not isinstance(args[1], torch.Tensor):
            return func(*args, **dict(kwargs, device="cpu")).to(args[0].device)
        return func(*args, **kwargs)


class DeviceWithoutFloat64:
    """See the module docstring. Enter it (any number of times) around code whose device is the meta device."""

    def __init__(self, shadow_limit: int = 4096):
        self.shadow_limit = shadow_limit
        self.shadows = WeakTensorKeyDictionary()
        self.violations: list[str] = []
        self.ops: Counter = Counter()  # ("device" | "cpu", op name) -> calls
        self.emulated: Counter = Counter()  # what was answered for the meta device, by kind
        self._copies = 0
        self._stacks: list[contextlib.ExitStack] = []

    def __enter__(self):
        stack = contextlib.ExitStack()
        stack.enter_context(_Factories())
        stack.enter_context(_Dispatch(self))
        self._stacks.append(stack)
        return self

    def __exit__(self, *exc):
        return self._stacks.pop().__exit__(*exc)

    def reset(self):
        """Forget the counts and violations so far (the shadows stay)."""
        self.violations.clear()
        self.ops.clear()
        self.emulated.clear()

    def check(self):
        """Fail if any op had a float64 tensor on the device (also those whose exception the code caught)."""
        if self.violations:
            shown = "\n  ".join(dict.fromkeys(self.violations))
            raise Float64OnDevice(f"{len(self.violations)} ops had float64 on the device:\n  {shown}")

    def device_ops(self, name: str) -> int:
        """Calls of ops whose name starts with `name` that ran on the device."""
        return sum(n for (where, op), n in self.ops.items() if where == "device" and op.startswith(name))

    def cpu_ops(self, name: str) -> int:
        return sum(n for (where, op), n in self.ops.items() if where == "cpu" and op.startswith(name))

    # --- the dispatch --------------------------------------------------------------------------------------------

    def _flag(self, func, role: str, tensors):
        for i, t in enumerate(tensors):
            if t.dtype in DOUBLE and _on_device(t):
                message = f"{func}: {role} {i} is {t.dtype} on {t.device} (shape {tuple(t.shape)})"
                self.violations.append(message)
                raise Float64OnDevice(message)

    def _dispatch(self, func, args, kwargs):
        inputs = _tensors((args, kwargs))
        on_device = any(_on_device(t) for t in inputs) or _on_device_kwarg(kwargs)
        self.ops[("device" if on_device else "cpu", str(func.overloadpacket.__name__))] += 1
        self._flag(func, "input", inputs)
        name = func.overloadpacket.__name__
        if name in VALUE_READS and _on_device(args[0]):
            value = self._read_value(args[0])
            return bool(value) if name == "is_nonzero" else value
        if name in COPIES and on_device:
            try:
                out = func(*args, **kwargs)
            except (NotImplementedError, RuntimeError) as error:  # "Cannot copy out of meta tensor; no data!"
                if "meta" not in str(error):
                    raise
                cpu_args, cpu_kwargs = pytree.tree_map(lambda x: self._standin(x) if _on_device(x) else x, (args, kwargs))
                out = func(*cpu_args, **cpu_kwargs)
        else:
            out = func(*args, **kwargs)
        self._flag(func, "output", _tensors(out))
        self._propagate(func, args, kwargs, out)
        return out

    def _read_value(self, t):
        shadow = self.shadows.get(t)
        if shadow is not None:
            self.emulated["value read (carried from the CPU)"] += 1
            return shadow.item()
        self.emulated["value read (fixed answer)"] += 1
        if t.dtype == torch.bool:
            return True
        return 1.0 if (t.dtype.is_floating_point or t.dtype.is_complex) else 1

    def _standin(self, t):
        """The CPU value of a device tensor: its shadow, else deterministic pseudo-random values."""
        shadow = self.shadows.get(t)
        if shadow is not None:
            self.emulated["copy to the CPU (carried from the CPU)"] += 1
            return shadow.clone()
        self.emulated["copy to the CPU (pseudo-random values)"] += 1
        self._copies += 1
        if t.dtype == torch.bool:
            return torch.ones(t.shape, dtype=t.dtype)
        if not (t.dtype.is_floating_point or t.dtype.is_complex):
            return torch.zeros(t.shape, dtype=t.dtype)
        generator = torch.Generator().manual_seed(self._copies)
        return (torch.rand(t.shape, generator=generator, dtype=torch.float32) * 2 - 1).to(t.dtype)

    def _propagate(self, func, args, kwargs, out):
        """Shadows of the op's small meta outputs, computed by the same op on the CPU from its inputs' shadows."""
        outs = [t for t in _tensors(out) if _on_device(t)]
        if not outs:
            return
        if any(t.numel() > self.shadow_limit for t in outs) or torch.Tag.nondeterministic_seeded in func.tags:
            self._forget(outs)
            return
        if func.overloadpacket.__name__ == "copy_":  # the destination is overwritten: its shadow is the source's value
            source = args[1] if not _on_device(args[1]) else self.shadows.get(args[1])
            if source is None:
                self._forget(outs)
            else:
                self.shadows[args[0]] = source.to(args[0].dtype).expand(args[0].shape).clone()
            return

        template = func.overloadpacket.__name__ in TEMPLATE_FACTORIES

        def to_cpu(x):
            if _on_device(x):
                shadow = self.shadows.get(x)
                if shadow is None and template:  # only its shape, dtype and device count
                    return torch.empty(x.shape, dtype=x.dtype)
                if shadow is None:
                    raise _NoShadow
                return shadow
            if isinstance(x, torch.device) and x.type != "cpu":
                return torch.device("cpu")
            return x

        try:
            cpu_args, cpu_kwargs = pytree.tree_map(to_cpu, (args, kwargs))
            cpu_out = func(*cpu_args, **cpu_kwargs)
        except _NoShadow:
            self._forget(outs)
            return
        except Exception:  # an op the CPU computes differently (or not at all): no value, as any large tensor
            self.emulated["shadow not computed"] += 1
            self._forget(outs)
            return
        for o, c in zip(pytree.tree_leaves(out), pytree.tree_leaves(cpu_out), strict=False):
            if _on_device(o) and isinstance(c, torch.Tensor):
                self.shadows[o] = c

    def _forget(self, tensors):
        for t in tensors:
            if t in self.shadows:
                del self.shadows[t]


def _on_device_kwarg(kwargs) -> bool:
    device = kwargs.get("device")
    return device is not None and torch.device(device).type != "cpu"


@contextlib.contextmanager
def one_cpu_thread():
    """The CPU maths of these tests is tiny (a C x C eigendecomposition, a 2-means); with several threads on a
    shared, loaded machine OpenMP's waits made one 256 x 256 float64 eigh take 7 s instead of 10 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
