"""PCA of attention queries (paper Eq. 4): fit without gradient on (N, C) rows, transform with it.

The exact path eigen-decomposes the C x C covariance (in float64); the low-rank path runs a few
rounds of subspace iteration from a fixed start (no global RNG), which is exact when M >= C.
Component signs are fixed (largest-magnitude entry positive) so equal inputs give equal outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PCA:
    mean: torch.Tensor  # (C,)
    components: torch.Tensor  # (C, M), orthonormal columns, by decreasing variance

    @classmethod
    def fit(cls, x: torch.Tensor, n_components: int, method: str = "auto", niter: int = 4) -> PCA:
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"x: expected a non-empty (N, C) matrix, got shape {tuple(x.shape)}")
        if n_components < 1:
            raise ValueError(f"n_components: must be >= 1, got {n_components}")
        if method not in ("auto", "exact", "lowrank"):
            raise ValueError(f"method: expected auto, exact or lowrank, got '{method}'")
        with torch.no_grad():
            x = x.detach()
            m = min(n_components, x.shape[1])
            mean = x.mean(0)
            centred = (x - mean).double()
            if method == "exact" or (method == "auto" and (m * 4 >= x.shape[1] or x.shape[1] <= 128)):
                comps = _exact(centred, m)
            else:
                comps = _subspace(centred, m, niter)
            comps = _fix_signs(comps).to(x.dtype)
        return cls(mean=mean, components=comps)

    @property
    def n_components(self) -> int:
        return self.components.shape[1]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """(…, C) -> (…, M); differentiable with respect to x."""
        return (x - self.mean.to(x)) @ self.components.to(x)


def _exact(centred: torch.Tensor, m: int) -> torch.Tensor:
    cov = centred.T @ centred
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    return vecs.flip(1)[:, :m]


def _subspace(centred: torch.Tensor, m: int, niter: int) -> torch.Tensor:
    """Randomised-SVD-style subspace iteration with a deterministic start and oversampling."""
    c = centred.shape[1]
    k = min(c, m + 8)
    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(c, k, generator=gen, dtype=torch.float64).to(centred.device)
    for _ in range(max(1, niter)):
        q, _ = torch.linalg.qr(centred.T @ (centred @ q))
    small = (centred @ q).T @ (centred @ q)  # k x k
    _, vecs = torch.linalg.eigh(small)
    return (q @ vecs.flip(1))[:, :m]


def _fix_signs(comps: torch.Tensor) -> torch.Tensor:
    idx = comps.abs().argmax(0)
    signs = torch.sign(comps[idx, torch.arange(comps.shape[1], device=comps.device)])
    signs[signs == 0] = 1
    return comps * signs
