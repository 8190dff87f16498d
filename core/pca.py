"""PCA of attention queries (paper Eq. 4): fit without gradient on (N, C) rows, transform with it.

The fit is exact: an eigendecomposition of the C x C covariance in float64 (cheap even at C = 1280, and
exact to float precision, unlike the reference's randomized solver). Component signs are fixed (the
largest-magnitude entry of each component positive) so equal inputs give equal outputs: the alignment
loss does not depend on the signs, the feature view does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PCA:
    mean: torch.Tensor  # (C,)
    components: torch.Tensor  # (C, M), orthonormal columns, by decreasing variance

    @classmethod
    def fit(cls, x: torch.Tensor, n_components: int) -> PCA:
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"x: expected a non-empty (N, C) matrix, got shape {tuple(x.shape)}")
        if n_components < 1:
            raise ValueError(f"n_components: must be >= 1, got {n_components}")
        with torch.no_grad():
            x = x.detach()
            m = min(n_components, x.shape[1])
            centred = x.double() - x.double().mean(0)
            _, vecs = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
            comps = _fix_signs(vecs.flip(1)[:, :m])
        return cls(mean=x.mean(0), components=comps.to(x.dtype))

    @property
    def n_components(self) -> int:
        return self.components.shape[1]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """(…, C) -> (…, M); differentiable with respect to x."""
        return (x - self.mean.to(x)) @ self.components.to(x)


def _fix_signs(comps: torch.Tensor) -> torch.Tensor:
    idx = comps.abs().argmax(0)
    signs = torch.sign(comps[idx, torch.arange(comps.shape[1], device=comps.device)])
    signs[signs == 0] = 1
    return comps * signs
