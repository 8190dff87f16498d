"""Semantic masks (paper Eq. 5-7): cosine similarity to salient points, max over points, then an
EXACT 2-means of the 1-D similarity values; the cluster with the higher centre is the foreground.

With several optimised layers (the reference's rule): each layer has its own similarity map, over its
own PCA channels, and ONE 2-means threshold over the values of all layers' maps together gives a mask
per layer.

1-D 2-means has a closed solution: the optimal clusters are a split of the sorted values, so scanning
every split with prefix sums finds the global optimum, deterministically (the reference's unseeded
k-means does not). Ties: the first optimal split in ascending order wins. All-equal values cannot be
split: everything is foreground.
"""

from __future__ import annotations

import torch


def two_means_1d(values: torch.Tensor) -> tuple[float, float, float]:
    """Optimal 2-means of 1-D values -> (threshold, low centre, high centre).

    Values >= threshold belong to the high cluster. Computed in float64 on the CPU (a few hundred values; MPS
    and DirectML have no float64).
    """
    v = values.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    if v.numel() == 0:
        raise ValueError("values: empty")
    if not torch.isfinite(v).all():
        raise ValueError("values: contains NaN or inf")
    s, _ = torch.sort(v)
    n = s.numel()
    if n == 1 or s[0] == s[-1]:
        c = float(s[0])
        return c, c, c
    csum = torch.cumsum(s, 0)
    csq = torch.cumsum(s * s, 0)
    k = torch.arange(1, n, dtype=torch.float64, device=s.device)  # size of the low cluster
    low_sum, low_sq = csum[:-1], csq[:-1]
    high_sum, high_sq = csum[-1] - low_sum, csq[-1] - low_sq
    sse = (low_sq - low_sum**2 / k) + (high_sq - high_sum**2 / (n - k))
    valid = s[1:] > s[:-1]  # a split between equal values is not a partition of the values
    sse = torch.where(valid, sse, torch.full_like(sse, float("inf")))
    i = int(torch.argmin(sse))  # first minimum
    low_c, high_c = float(low_sum[i] / k[i]), float(high_sum[i] / (n - k[i]))
    return float(s[i + 1]), low_c, high_c


def cosine_similarity_map(feats: torch.Tensor, points: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 5: feats (C, h, w), point vectors (K, C) -> (K, h, w) cosine similarities."""
    if feats.ndim != 3:
        raise ValueError(f"feats: expected (C, h, w), got shape {tuple(feats.shape)}")
    if points.ndim != 2 or points.shape[1] != feats.shape[0] or points.shape[0] == 0:
        raise ValueError(f"points: expected (K>=1, {feats.shape[0]}), got shape {tuple(points.shape)}")
    f = feats / feats.norm(dim=0, keepdim=True).clamp_min(eps)
    p = points / points.norm(dim=1, keepdim=True).clamp_min(eps)
    return torch.einsum("kc,chw->khw", p, f)


def semantic_mask(feats: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Eq. 5-7 for one layer: a boolean (h, w) foreground mask of the region most similar to the salient points."""
    return layer_masks([feats], [points])[0]


def layer_masks(feats: list[torch.Tensor], points: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 5-7 over several layers: feats[l] (C_l, h, w) and the salient points' vectors points[l] (K, C_l) ->
    (L, h, w) boolean masks, one per layer, cut by one 2-means threshold over all layers' similarities."""
    if len(feats) != len(points) or not feats:
        raise ValueError(f"feats, points: expected one entry per layer each, got {len(feats)} and {len(points)}")
    sims = torch.stack([cosine_similarity_map(f.detach(), p.detach()).amax(0) for f, p in zip(feats, points, strict=True)])
    threshold, _, _ = two_means_1d(sims)  # Eq. 6 per layer, Eq. 7 once over all
    return sims >= threshold
