"""The per-step latent optimisation of AnyI2V (paper Sec. 3.3), as small pure functions.

Query maps: for each optimised layer, PCA (fit without gradient over all frames and pixels, Eq. 4)
reduces the queries to M channels; each map is resized (bicubic) to the (H/4, W/4) grid of the image.

Updates act on z_t, the unit-variance latent the paper and the reference optimise (diffusers' latent),
not on ComfyUI's k-diffusion latent x = z_t * sqrt(1 + sigma^2): so ``lr`` means the paper's step per
element. ``adamw_fresh``: the reference builds a NEW AdamW(lr, weight_decay=0.01) every iteration, whose
first step is a sign-like step of lr; ``adam_persistent`` keeps Adam's state across the iterations of one
denoising step instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .pca import PCA

UPDATE_RULES = ("adamw_fresh", "adam_persistent")
COMPRESS = 4  # the feature grid is (H/4, W/4) of the image (the reference's compress_factor)


def latent_scale(sigma) -> float:
    """x / z_t for a k-diffusion latent x at noise level sigma: sqrt(1 + sigma^2)."""
    return math.sqrt(1.0 + float(sigma) ** 2)


def fit_pcas(queries: dict[int, torch.Tensor], n_components: int = 64) -> dict[int, PCA]:
    """Each block's PCA, fit without gradient over all frames and tokens of its queries (F, h*w, C)."""
    return {block: PCA.fit(q.reshape(-1, q.shape[-1]), n_components) for block, q in queries.items()}


def query_maps(queries: dict[int, torch.Tensor], grids: dict[int, tuple[int, int]], out_hw: tuple[int, int],
               n_components: int = 64, pcas: dict[int, PCA] | None = None) -> list[torch.Tensor]:
    """queries {block: (F, h*w, C)} -> per block in ascending order, (F, M, H/4, W/4) PCA-reduced maps,
    differentiable. ``pcas``: each block's PCA fit elsewhere (over more frames); by default fit on `queries`."""
    maps = []
    for block in sorted(queries):
        q = queries[block]
        f, tokens, c = q.shape
        h, w = grids[block]
        if h * w != tokens:
            raise ValueError(f"queries: block {block} has {tokens} tokens, not {h}x{w}")
        pca = pcas[block] if pcas is not None else PCA.fit(q.reshape(-1, c), n_components)
        reduced = pca.transform(q).reshape(f, h, w, -1).permute(0, 3, 1, 2)
        maps.append(F.interpolate(reduced, size=out_hw, mode="bicubic", align_corners=False))
    return maps


def adamw_fresh_step(x: torch.Tensor, grad: torch.Tensor, lr: float, weight_decay: float = 0.01,
                     eps: float = 1e-8) -> torch.Tensor:
    """The first step of a fresh torch.optim.AdamW: decay, then lr * g / (|g| + eps)."""
    return x * (1 - lr * weight_decay) - lr * grad / (grad.abs() + eps)


@dataclass
class Adam:
    """Adam (no weight decay) whose state lives across the iterations of one denoising step."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    t: int = 0
    m: torch.Tensor | None = field(default=None, repr=False)
    v: torch.Tensor | None = field(default=None, repr=False)

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.betas
        self.t += 1
        self.m = (1 - b1) * grad if self.m is None else b1 * self.m + (1 - b1) * grad
        self.v = (1 - b2) * grad * grad if self.v is None else b2 * self.v + (1 - b2) * grad * grad
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        return x - self.lr * m_hat / (v_hat.sqrt() + self.eps)


def make_update(rule: str, lr: float):
    """A function (z, grad) -> new z for one optimisation step's iterations (z: the latent in z_t units)."""
    if rule == "adamw_fresh":
        return lambda x, g: adamw_fresh_step(x, g, lr)
    if rule == "adam_persistent":
        return Adam(lr).step
    raise ValueError(f"update_rule: expected one of {', '.join(UPDATE_RULES)}, got '{rule}'")
