"""No float64 tensor on the model's device (Apple's MPS and DirectML have none), in inversion, injection,
optimisation and sampling.

The pack's real code and ComfyUI's run on a MODEL whose device is the meta device, as `make scale` models a GPU
(dev/scale.py builds it: ComfyUI's BaseModel, UNetModel and ModelPatcher with load_device meta, the test stand-in
motion module placed as AnimateDiff-Evolved places it, ComfyUI's free-memory query answered for meta), at the
`make bench` model's size (SD1.5 layout at width 64, a 16x16 latent; 4 frames), with fp16 weights (what ComfyUI
runs on MPS) and, for the sampler end to end, fp32 weights. All of it runs inside
tests/device_without_float64.DeviceWithoutFloat64, which fails on any op with a float64 tensor on a device other
than the CPU and emulates what the meta device cannot do (its docstring lists exactly what: values that start on
the CPU, such as the MODEL's schedule and sigmas, are carried along by running the same small ops on the CPU, so
the sampler's and the injection's decisions on sigma are the real ones; a value read of a large device tensor gets
a fixed answer; a copy of one to the CPU gets deterministic pseudo-random values). Only the MODEL's schedule object
is remade on the meta device inside the check, so that its sigmas carry their values.

What runs: nodes/invert.invert (the DDIM loop, each schedule, strides 1 and 2), the pack's injection from
InjectFeatures.execute (with features from that inversion, moved to the CPU as InvertCondition does) in a CFG step
through comfy.samplers.sampling_function (attn1 query replacement and K/V sharing, the ResBlock residual hooks with
patch_adain), Optimizer.optimize (the gradient forward, PCA, masks, loss, backward, update; with low_memory too)
and the AnyI2V KSampler node end to end (comfy.sample.sample_custom with the AnyI2V sampler wrapping ddim: the
first step optimised and injected, the loss plot and the feature view).
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from dev.support.host import load_pack, pack_module
from tests.device_without_float64 import DeviceWithoutFloat64, one_cpu_thread

pytestmark = pytest.mark.host

META = torch.device("meta")
GPU_BYTES = 24 * 2**30
FRAMES = 4  # the loss loops over frames, and the meta device's bicubic resize is a slow Python decomposition


def bench_model(dtype):
    """dev.scale.bench_size() with weights (UNet and motion module) in `dtype`, on the meta device."""
    from dev import bench, scale
    from dev.standin_ade.motion import StandinMotionModule, motion_slots, run_motion_module
    from dev.support.tiny_models import TINY_UNET_CONFIG, tiny_classes

    config = dict(TINY_UNET_CONFIG, model_channels=bench.CHANNELS, channel_mult=[1, 2, 4, 4], num_heads=8)
    cls = tiny_classes()
    cls.unet_config = dict(cls.unet_config, model_channels=bench.CHANNELS)

    def motion(unet, patcher):
        for kind, block, pos, channels in motion_slots(unet):
            with torch.device(META):
                module = StandinMotionModule(channels).to(dtype)
            module.video_length = FRAMES  # what ADE's sampling sets without context windows
            (unet.input_blocks if kind == "input" else unet.output_blocks)[block].insert(pos, module)
        patcher.set_model_forward_timestep_embed_patch((StandinMotionModule, run_motion_module))

    return scale.build(f"bench model {dtype}", cls(config), motion, dtype, (bench.LATENT, bench.LATENT), None, GPU_BYTES)


class MetaModel:
    """A meta-device MODEL (dev.scale.Setup), its check, and its injected clone (made once, on first use)."""

    def __init__(self, dtype):
        self.setup = bench_model(dtype)
        self.guard = DeviceWithoutFloat64()
        with self.guard:  # the schedule on the device, its values carried (see the module docstring)
            self.setup.patcher.model.model_sampling = copy.deepcopy(self.setup.sampling).to(META)
        self.guard.check()
        self._injected = None

    @contextlib.contextmanager
    def running(self):
        """On the meta device under the check, inside inference mode as ComfyUI's executor runs nodes; ComfyUI's
        free-memory query answered for meta; the counts start afresh and any violation fails."""
        from dev import scale

        self.guard.reset()
        with one_cpu_thread(), scale.gpu_free_memory(self.setup), self.guard, torch.inference_mode():
            yield self.guard
        self.guard.check()

    def context(self):
        return torch.zeros(1, 77, self.setup.patcher.model.model_config.unet_config["context_dim"])

    def invert(self, t_alpha, stride, schedule="sqrt_linear (AnimateDiff)"):
        invert = pack_module("nodes.invert")
        blocks = pack_module("core.blocks")
        lh, lw = self.setup.latent_hw
        latent = torch.randn(1, 4, lh, lw, generator=torch.Generator().manual_seed(0))  # the VAE's, on the CPU
        return invert.invert(self.setup.patcher, latent, self.context(), t_alpha, stride,
                             blocks.DEFAULT_QUERY_BLOCKS, blocks.DEFAULT_RES_BLOCKS, schedule)

    def injected(self):
        """InjectFeatures.execute on the video MODEL, with features from a real inversion moved to the CPU as
        InvertCondition.execute moves them."""
        if self._injected is None:
            import comfy.model_management

            features_mod = pack_module("core.features")
            blocks = pack_module("core.blocks")
            inject = pack_module("nodes.inject")
            with self.running():
                store, _ = self.invert(3, 2)
                out = comfy.model_management.intermediate_device()
                features = features_mod.ConditionFeatures(
                    {b: q.to(out) for b, q in store["q"].items()}, {b: r.to(out) for b, r in store["r"].items()},
                    {b: tuple(hw) for b, hw in store["hw"].items()}, self.setup.latent_hw,
                    (self.setup.latent_hw[0] * 8, self.setup.latent_hw[1] * 8),
                    blocks.UNetLayout.from_unet(self.setup.patcher.model.diffusion_model).signature(), 3, 2)
                (self._injected,) = inject.InjectFeatures.execute(
                    model=self.setup.patcher, features=features, inject_query=True, inject_residual=True, share_kv=True,
                    patch_size=4, end_percent=0.16).result
        return self._injected

    def run_options(self, patcher):
        """The model_options a sampling run passes to the model: the MODEL's, with its wrappers merged in as
        CFGGuider.sample does (dev/scale.py's Setup.options merges them as comfy.sampler_helpers.prepare_model_patcher
        does); the pack's residual injection is one."""
        return self.setup.options(patcher)

    def sigmas(self, steps=25):
        import comfy.samplers

        return comfy.samplers.calculate_sigmas(self.setup.patcher.get_model_object("model_sampling"), "ddim_uniform", steps)


@pytest.fixture(scope="module")
def meta_models():
    load_pack()
    import comfy.model_management as mm

    models = {}

    def get(dtype="float16"):
        if dtype not in models:
            models[dtype] = MetaModel(getattr(torch, dtype))
        return models[dtype]

    yield get
    mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m.device.type != "meta"]


def test_the_check_sees_float64_on_the_model_device(meta_models):
    """The check is live where the pipeline runs: a float64 schedule moved to the MODEL's device fails."""
    model = meta_models()
    schedule = pack_module("core.schedule")
    with pytest.raises(AssertionError, match="float64 on meta"), model.running():
        schedule.alphas_cumprod_from_betas("linear").to(model.setup.patcher.load_device)
    assert model.guard.violations


@pytest.mark.parametrize("schedule, t_alpha, stride", [("sqrt_linear (AnimateDiff)", 2, 1), ("scaled_linear (SD1.5)", 2, 1),
                                                       ("model", 3, 2)])
def test_inversion(meta_models, schedule, t_alpha, stride):
    """The DDIM inversion loop (the MODEL's sigma of each call, the DDIM step on the device, the capture)."""
    model = meta_models()
    with model.running() as guard:
        store, calls = model.invert(t_alpha, stride, schedule)
    assert calls == len(range(1, t_alpha + 1, stride))
    assert all(q.device == META for q in store["q"].values()) and store["r"]
    assert guard.device_ops("conv") > 0  # the UNet ran on the device
    # every value the loop read (the MODEL's sigma of each call, its schedule for "model") was the real one
    assert guard.emulated["value read (carried from the CPU)"] >= calls
    assert guard.emulated["value read (fixed answer)"] == 0


def test_injected_cfg_step(meta_models):
    """A CFG step as the sampler calls the model, with the pack's injection and without: patch_adain shows as
    index_add on the device (the plain step has none), the query replacement and K/V sharing as more cat ops."""
    import comfy.samplers

    from dev import scale

    model = meta_models()
    injected = model.injected()
    lh, lw = model.setup.latent_hw
    counts = {}
    for name, patcher in (("plain", model.setup.patcher), ("injected", injected)):
        with model.running() as guard:
            x = torch.zeros(FRAMES, 4, lh, lw, device=META)
            timestep = model.sigmas()[0].to(META) * x.new_ones([x.shape[0]])
            conds = model.setup.guider.conds
            out = comfy.samplers.sampling_function(patcher.model, x, timestep, conds["negative"], conds["positive"],
                                                   scale.CFG, model.run_options(patcher))
        assert out.shape == x.shape and out.device == META
        counts[name] = (guard.device_ops("index_add"), guard.device_ops("cat"))
    assert counts["plain"][0] == 0 and counts["injected"][0] > 0, counts  # patch_adain on the residuals
    assert counts["injected"][1] > counts["plain"][1], counts  # frame 0's query put in, its K/V shared (torch.cat)


@pytest.mark.parametrize("low_memory", [False, True])
def test_optimisation(meta_models, low_memory):
    """One iteration of Optimizer.optimize at the first step: gradient forward, PCA, masks, loss, backward, update."""
    import comfy.samplers


    model = meta_models()
    optimizer = pack_module("nodes.optimizer")
    inject = pack_module("nodes.inject")
    injected = model.injected()
    lh, lw = model.setup.latent_hw
    with model.running() as guard:
        guider = comfy.samplers.CFGGuider(injected)
        guider.inner_model, guider.conds = model.setup.guider.inner_model, model.setup.guider.conds
        opt = optimizer.Optimizer(guider, optimizer.Settings(iterations=1, low_memory=low_memory), model.setup.trajectory,
                                  inject.injection_state(injected), (FRAMES, 4, lh, lw))
        x = torch.zeros(FRAMES, 4, lh, lw, device=META)
        out = opt.optimize(x, model.sigmas()[0].to(META), 0, model.run_options(injected), lambda: None)
    assert out.device == META and out.dtype == x.dtype and out is not x  # the update was taken
    assert [(s, i) for s, i, _ in opt.losses] == [(0, 0)]
    assert guard.device_ops("convolution_backward") > 0  # the UNet's backward ran under the check
    assert guard.cpu_ops("_linalg_eigh") == len(opt.blocks)  # the PCA's eigendecomposition, on the CPU
    assert guard.cpu_ops("sort") > 0  # the 2-means of the masks, on the CPU


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_anyi2v_ksampler(meta_models, dtype):
    """The AnyI2V KSampler node end to end: the first step optimised and injected, then the base sampler."""
    from dev import scale

    model = meta_models(dtype)
    sampler = pack_module("nodes.sampler")
    injected = model.injected()
    lh, lw = model.setup.latent_hw
    cond = [[model.context(), {}]]
    with model.running() as guard:
        latent, _, view, masks = sampler.AnyI2VKSampler.execute(
            model=injected, seed=0, steps=2, cfg=scale.CFG, sampler_name="ddim", scheduler="ddim_uniform", positive=cond,
            negative=cond, latent_image={"samples": torch.zeros(FRAMES, 4, lh, lw)}, trajectory=model.setup.trajectory,
            denoise=1.0, opt_percent=0.24, iterations=1, lr=0.01, update_rule="adamw_fresh", pca_dim=64,
            query_blocks="Query 1.1, Query 2.0", mask_mode="semantic", low_memory=False).result
    assert latent["samples"].shape == (FRAMES, 4, lh, lw)
    assert view.shape[0] == FRAMES and masks.shape[0] == FRAMES
    assert guard.device_ops("convolution_backward") > 0 and guard.device_ops("index_add") > 0
