"""PCA of attention queries (paper Eq. 4): fit without gradient on (N, C) rows, transform with it.

The fit is exact: the C x C covariance of the centred rows in float32 on their device (half-precision queries are
promoted), then its eigendecomposition in float64 on the CPU (cheap even at C = 1280; MPS and DirectML have no
float64). That is exact to float32 precision, unlike the reference's randomized solver. Fit and transform work in
float32 whatever the queries' dtype: the loss, its masks and its PCA stay in fp32 on half-precision GPUs. Component signs are fixed (the
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
            x = x.detach().to(_working_dtype(x))
            m = min(n_components, x.shape[1])
            mean = x.mean(0)
            centred = x - mean
            covariance = (centred.T @ centred).to(device="cpu", dtype=torch.float64)
            _, vecs = torch.linalg.eigh(covariance)  # ascending eigenvalues
            comps = _fix_signs(vecs.flip(1)[:, :m])
        return cls(mean=mean, components=comps.to(device=x.device, dtype=x.dtype))

    @property
    def n_components(self) -> int:
        return self.components.shape[1]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """(…, C) -> (…, M) in float32 (or wider); differentiable with respect to x."""
        dtype = torch.promote_types(_working_dtype(x), self.components.dtype)
        return (x.to(dtype) - self.mean.to(x.device, dtype)) @ self.components.to(x.device, dtype)


def _working_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision (and float32) queries; a float64 input (CPU tests) stays float64."""
    return torch.promote_types(x.dtype, torch.float32)


def _fix_signs(comps: torch.Tensor) -> torch.Tensor:
    idx = comps.abs().argmax(0)
    signs = torch.sign(comps[idx, torch.arange(comps.shape[1], device=comps.device)])
    signs[signs == 0] = 1
    return comps * signs
