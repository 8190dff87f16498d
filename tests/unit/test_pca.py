import numpy as np
import pytest
import torch

from core.pca import PCA


def data(n=300, c=24, seed=0, leading=None):
    """Rows with a clear spectrum: `leading` strong directions, the rest weak."""
    g = torch.Generator().manual_seed(seed)
    leading = min(8, c // 2) if leading is None else leading
    scales = torch.cat([torch.linspace(10, 5, leading), torch.logspace(-1, -2, c - leading)]).double()
    basis, _ = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
    return (torch.randn(n, c, generator=g, dtype=torch.float64) * scales) @ basis.T + 3.0


def test_exact_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA as SkPCA

    x = data()
    ours = PCA.fit(x, 6, method="exact")
    sk = SkPCA(6, svd_solver="full").fit(x.numpy())
    got = ours.transform(x).numpy()
    ref = sk.transform(x.numpy())
    signs = np.sign((got * ref).sum(0))
    assert np.allclose(got, ref * signs, atol=1e-8)


def test_lowrank_spans_the_exact_subspace():
    x = data(c=256, n=600)
    exact = PCA.fit(x, 8, method="exact").components
    low = PCA.fit(x, 8, method="lowrank").components
    # projection of the exact leading components onto the low-rank subspace keeps (almost) all their norm
    assert torch.linalg.norm(low.T @ exact[:, :6], dim=0).min() > 0.999


def test_exact_when_m_at_least_c_and_m_clipped():
    x = data(c=10)
    p = PCA.fit(x, 64)
    assert p.n_components == 10
    recon = p.transform(x) @ p.components.T + p.mean
    assert torch.allclose(recon, x, atol=1e-9)


def test_transform_is_differentiable_and_fit_has_no_graph():
    x = data(n=20, c=5).requires_grad_(True)
    p = PCA.fit(x, 3)
    assert not p.components.requires_grad and not p.mean.requires_grad
    torch.autograd.gradcheck(p.transform, (x,))


def test_deterministic_and_validates():
    x = data(c=200, n=300)
    a, b = PCA.fit(x, 5, method="lowrank"), PCA.fit(x, 5, method="lowrank")
    assert torch.equal(a.components, b.components)
    with pytest.raises(ValueError, match="x"):
        PCA.fit(torch.zeros(3), 2)
    with pytest.raises(ValueError, match="n_components"):
        PCA.fit(x, 0)
