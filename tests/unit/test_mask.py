import numpy as np
import pytest
import torch

from core.mask import cosine_similarity_map, semantic_mask, two_means_1d


def sse(values, high):
    lo, hi = values[~high], values[high]
    return sum(((g - g.mean()) ** 2).sum() for g in (lo, hi) if len(g))


def brute_force(values):
    """All thresholds between distinct values; the best partition's SSE."""
    u = np.unique(values)
    return min(sse(values, values >= t) for t in u[1:])


@pytest.mark.parametrize("seed", range(25))
def test_optimal_against_brute_force_and_sklearn(seed):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    values = np.round(rng.normal(size=n) * rng.uniform(0.1, 3), int(rng.integers(1, 4)))  # rounding makes ties
    if np.unique(values).size < 2:
        values[0] += 1
    t, lo, hi = two_means_1d(torch.tensor(values))
    high = values >= t
    assert sse(values, high) == pytest.approx(brute_force(values), abs=1e-9)
    km = KMeans(2, n_init=20, random_state=0).fit(values.reshape(-1, 1))
    assert sse(values, high) <= km.inertia_ + 1e-9
    assert lo == pytest.approx(values[~high].mean()) and hi == pytest.approx(values[high].mean())


def test_edge_cases():
    assert two_means_1d(torch.tensor([2.0, 2.0, 2.0])) == (2.0, 2.0, 2.0)
    t, lo, hi = two_means_1d(torch.tensor([0.0, 1.0]))
    assert (t, lo, hi) == (1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="values"):
        two_means_1d(torch.tensor([]))
    with pytest.raises(ValueError, match="values"):
        two_means_1d(torch.tensor([0.0, float("nan")]))


def test_cosine_similarity_against_numpy():
    g = torch.Generator().manual_seed(1)
    feats, points = torch.randn(5, 3, 4, generator=g), torch.randn(2, 5, generator=g)
    f = feats.numpy().reshape(5, -1)
    ref = (points.numpy() @ f) / np.linalg.norm(points.numpy(), axis=1)[:, None] / np.linalg.norm(f, axis=0)[None]
    assert np.allclose(cosine_similarity_map(feats, points).numpy().reshape(2, -1), ref, atol=1e-6)


def test_semantic_mask_takes_max_over_points_and_the_higher_cluster():
    feats = torch.zeros(2, 4, 4)
    feats[0] = 1.0  # background points along e0
    feats[:, 1, 1] = torch.tensor([0.0, 1.0])  # object A along e1
    feats[:, 2, 2] = torch.tensor([-1.0, 0.2])  # object B, nearly opposite to the background
    one = semantic_mask(feats, torch.tensor([[0.0, 1.0]]))
    assert one[1, 1] and one.sum() == 1
    both = semantic_mask(feats, torch.tensor([[0.0, 1.0], [-1.0, 0.2]]))
    assert both[1, 1] and both[2, 2] and both.sum() == 2


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="points"):
        cosine_similarity_map(torch.zeros(3, 2, 2), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="feats"):
        cosine_similarity_map(torch.zeros(3, 2), torch.zeros(1, 3))
