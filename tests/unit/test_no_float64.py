"""No float64 on the model's device, unit by unit: the PCA, the masks' 2-means, the DDIM inversion step, the
loss with its backward and patch_adain, run on the meta device under tests/device_without_float64 (the module's
docstring says what it checks and what it emulates). The float64 maths they need runs on the CPU. The check itself
is tested first: float64 on the device fails wherever it comes from, float64 on the CPU does not, and where values
start on the CPU the meta device's results carry the CPU's values.
The pipeline (inversion, injection, optimisation, sampling with ComfyUI) is tests/host/test_no_float64.py."""

import pytest
import torch

from core.debias import patch_adain
from core.loss import alignment_loss
from core.mask import layer_masks
from core.optimize import query_maps
from core.pca import PCA
from core.schedule import (
    alphas_cumprod_from_betas,
    alphas_cumprod_from_sigmas,
    ddim_inversion_step,
    first_alpha,
)
from tests.device_without_float64 import DeviceWithoutFloat64, Float64OnDevice, one_cpu_thread

META = torch.device("meta")


@pytest.fixture(autouse=True)
def _one_thread():
    with one_cpu_thread():
        yield


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("make", [
    lambda: torch.zeros(4, device=META).double(),
    lambda: torch.zeros(4, device=META).to(torch.float64),
    lambda: torch.zeros(2, 3, device=META, dtype=torch.float16).to(dtype=torch.float64),
    lambda: torch.tensor([1.0, 2.0], dtype=torch.float64, device=META),
    lambda: torch.as_tensor([0.5], dtype=torch.float64, device=META),
    lambda: torch.zeros(3, device=META).new_tensor([1.0], dtype=torch.float64),
    lambda: alphas_cumprod_from_betas("linear").to(META),
    lambda: torch.arange(3, dtype=torch.float64, device=META),
    lambda: torch.zeros(3, dtype=torch.float64, device=META),
], ids=["double", "to", "half-to", "tensor", "as_tensor", "new_tensor", "schedule-to-device", "arange", "zeros"])
def test_the_check_fails_on_float64_on_the_device(make):
    guard = DeviceWithoutFloat64()
    with pytest.raises(Float64OnDevice, match="float64 on meta"), guard:
        make()
    assert len(guard.violations) == 1


def test_the_check_keeps_violations_the_code_caught():
    guard = DeviceWithoutFloat64()
    with guard:
        try:
            torch.zeros(2, device=META).double()
        except Exception:  # as a fallback in the code under test would
            pass
    with pytest.raises(Float64OnDevice, match="1 ops had float64 on the device"):
        guard.check()


def test_the_check_allows_float64_on_the_cpu():
    guard = DeviceWithoutFloat64()
    with guard:
        a = randn(8, 8, dtype=torch.float64)
        torch.linalg.eigh(a @ a.T)
        alphas = alphas_cumprod_from_betas("scaled_linear")
        on_cpu = torch.zeros(4, device=META).to("cpu", torch.float64)  # out of the device, into float64 on the CPU
        x = torch.zeros(4, device=META) * float(alphas[10])  # a float64 value as a Python number
    guard.check()
    assert on_cpu.dtype == torch.float64 and x.dtype == torch.float32 and guard.cpu_ops("_linalg_eigh") == 1


def test_values_from_the_cpu_are_carried_and_the_rest_answered_deterministically():
    guard = DeviceWithoutFloat64()
    with guard:
        sigmas = torch.linspace(0.1, 14.6, 10).to(META)
        x = torch.zeros(4, device=META)
        t = sigmas[7] * x.new_ones([4])
        carried = (float(t.max()), bool(t.min() > 1.0), t.cpu())
        big = torch.zeros(64, 128, device=META)  # beyond the shadow limit: no values
        answered = (float(big.sum()), bool(big.any()), int(big.long().sum()), big[:3, :3].cpu(), big[:3, :3].cpu())
    guard.check()
    assert carried[0] == pytest.approx(float(torch.linspace(0.1, 14.6, 10)[7])) and carried[1]
    assert torch.equal(carried[2], torch.full((4,), float(torch.linspace(0.1, 14.6, 10)[7])))
    assert answered[:3] == (1.0, True, 1)
    assert answered[3].abs().max() <= 1 and not torch.equal(answered[3], answered[4])  # pseudo-random, each copy its own
    again = DeviceWithoutFloat64()
    with again:
        copy = torch.zeros(64, 128, device=META)[:3, :3].cpu()
    assert torch.equal(copy, answered[3])  # deterministic


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_pca_on_the_device(dtype):
    """Covariance on the device in fp32, the C x C eigendecomposition in float64 on the CPU, transform in fp32."""
    guard = DeviceWithoutFloat64()
    with guard:
        x = torch.zeros(4 * 64, 320, device=META, dtype=dtype, requires_grad=True)
        pca = PCA.fit(x, 64)
        y = pca.transform(x)
        y.square().sum().backward()
    guard.check()
    assert pca.components.device == META and pca.components.dtype == torch.float32 and pca.components.shape == (320, 64)
    assert y.dtype == torch.float32 and x.grad.dtype == dtype
    assert guard.cpu_ops("_linalg_eigh") == 1 and guard.emulated["copy to the CPU (pseudo-random values)"] == 1


def test_masks_on_the_device_equal_the_cpu_masks():
    """The similarities on the device, their 2-means on the CPU in float64; with the values carried from the CPU the
    device's masks are the CPU's."""
    feats = [randn(8, 6, 7, seed=1), randn(12, 6, 7, seed=2)]
    points = [feats[0][:, [1, 4], [2, 5]].T, feats[1][:, [1, 4], [2, 5]].T]
    guard = DeviceWithoutFloat64()
    with guard:
        masks = layer_masks([f.to(META) for f in feats], [p.to(META) for p in points])
        on_cpu = masks.cpu()
    guard.check()
    assert masks.device == META and masks.dtype == torch.bool
    assert guard.cpu_ops("sort") == 1 and guard.emulated["copy to the CPU (carried from the CPU)"] == 2
    expected = layer_masks(feats, points)
    assert torch.equal(on_cpu, expected) and 0 < expected.sum() < expected.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("schedule", ["linear", "sigmas"])
def test_ddim_inversion_step_on_the_device(dtype, schedule):
    """The schedule (float64, CPU), its alphas as 0-dim CPU tensors or Python numbers, the step on the device."""
    alphas = alphas_cumprod_from_betas("linear")
    if schedule == "sigmas":
        alphas = alphas_cumprod_from_sigmas(((1 - alphas) / alphas).sqrt().float())
    x, eps = randn(1, 4, 8, 8, seed=3, dtype=dtype), randn(1, 4, 8, 8, seed=4, dtype=dtype)
    guard = DeviceWithoutFloat64()
    with guard:
        a_prev = first_alpha(alphas, 1)
        out = ddim_inversion_step(x.to(META), eps.to(META), a_prev, alphas[5])
        out = ddim_inversion_step(out, eps.to(META), float(alphas[5]), float(alphas[9]))
        on_cpu = out.cpu()
    guard.check()
    assert out.device == META and out.dtype == dtype
    expected = ddim_inversion_step(ddim_inversion_step(x, eps, a_prev, alphas[5]), eps, float(alphas[5]), float(alphas[9]))
    assert torch.equal(on_cpu, expected)


def test_loss_and_its_backward_on_the_device():
    """PCA-reduced maps, masks, Eq. 8 and the gradient to the queries, with fp16 queries on the device."""
    frames, tokens_hw, channels = 3, (4, 4), 40
    queries = {3: torch.zeros(frames, 16, channels, device=META, dtype=torch.float16, requires_grad=True),
               6: torch.zeros(frames, 64, channels // 2, device=META, dtype=torch.float16, requires_grad=True)}
    boxes = torch.tensor([[[2.0, 2.0, 9.0, 9.0], [4.0, 3.0, 11.0, 10.0], [6.0, 4.0, 13.0, 11.0]]])
    guard = DeviceWithoutFloat64()
    with guard:
        maps = query_maps(queries, {3: tokens_hw, 6: (8, 8)}, (16, 16), 8)
        loss = alignment_loss(maps, boxes, [torch.tensor([[5.0, 5.0]])], "semantic")
        loss.backward()
    guard.check()
    assert loss.device == META and loss.dtype == torch.float32
    assert all(q.grad is not None and q.grad.dtype == torch.float16 for q in queries.values())
    assert guard.cpu_ops("_linalg_eigh") == 2 and guard.cpu_ops("sort") == frames  # frame 0's masks, then each frame j's


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_patch_adain_on_the_device(dtype):
    injected, current = randn(1, 8, 6, 6, seed=5, dtype=dtype), randn(1, 8, 6, 6, seed=6, dtype=dtype)
    guard = DeviceWithoutFloat64()
    with guard:
        out = patch_adain(injected.to(META), current.to(META), 4)
    guard.check()
    assert out.device == META and out.dtype == dtype
