import numpy as np
import pytest
import torch

from core.pca import PCA


def data(n=300, c=24, seed=0, leading=None, dtype=torch.float64):
    """Rows with a clear spectrum: `leading` strong directions, the rest weak."""
    g = torch.Generator().manual_seed(seed)
    leading = min(8, c // 2) if leading is None else leading
    scales = torch.cat([torch.linspace(10, 5, leading), torch.logspace(-1, -2, c - leading)]).double()
    basis, _ = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
    return ((torch.randn(n, c, generator=g, dtype=torch.float64) * scales) @ basis.T + 3.0).to(dtype)


def svd_projection(x: np.ndarray, m: int) -> np.ndarray:
    """Independent PCA: numpy's SVD of the centred rows, projected on the first m right singular vectors."""
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:m].T


@pytest.mark.parametrize("c, n", [(320, 2048), (640, 2048), (1280, 2048)])
def test_exact_against_numpy_svd_at_the_unet_widths(c, n):
    """The query widths of SD1.5's output blocks; a flat spectrum beyond the first 64 components (the hard
    case for an iterative solver), queries in float32 as the UNet gives them."""
    g = torch.Generator().manual_seed(c)
    scales = torch.cat([torch.linspace(20, 2, 64), torch.full((c - 64,), 1.0)])
    x = (torch.randn(n, c, generator=g) * scales) @ torch.linalg.qr(torch.randn(c, c, generator=g))[0].T
    got = PCA.fit(x, 64).transform(x).double().numpy()
    ref = svd_projection(x.double().numpy(), 64)
    signs = np.sign((got * ref).sum(0))
    assert (signs != 0).all()
    err = np.abs(got - ref * signs).max() / np.abs(ref).max()
    assert err < 1e-5, err  # float32 rounding of the transform, nothing more


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


def test_signs_are_fixed_and_the_fit_is_deterministic():
    x = data(c=200, n=300, dtype=torch.float32)
    a, b = PCA.fit(x, 5), PCA.fit(x.clone(), 5)
    assert torch.equal(a.components, b.components)
    flipped = PCA.fit(-x, 5)  # the same components up to sign; the fix makes them equal
    assert torch.allclose(flipped.components, a.components, atol=1e-6)
    rows = a.components.abs().argmax(0)
    assert (a.components[rows, torch.arange(5)] > 0).all()


def test_validates():
    with pytest.raises(ValueError, match="x"):
        PCA.fit(torch.zeros(3), 2)
    with pytest.raises(ValueError, match="n_components"):
        PCA.fit(data(), 0)
