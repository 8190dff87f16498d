import pytest
import torch
import torch.nn.functional as F

from core.optimize import Adam, adamw_fresh_step, latent_scale, make_update, query_maps
from core.pca import PCA


def test_fresh_adamw_step_equals_torch_optim():
    g = torch.Generator().manual_seed(0)
    x0, grad = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    p = torch.nn.Parameter(x0.clone())
    opt = torch.optim.AdamW([p], lr=0.01, weight_decay=0.01)
    p.grad = grad.clone()
    opt.step()
    assert torch.allclose(adamw_fresh_step(x0, grad, 0.01), p.detach(), atol=1e-12)


def test_persistent_adam_equals_torch_optim_over_iterations():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, generator=g, dtype=torch.float64)
    p = torch.nn.Parameter(x.clone())
    opt = torch.optim.Adam([p], lr=0.05)
    ours = Adam(0.05)
    for _ in range(5):
        grad = torch.randn(5, generator=g, dtype=torch.float64)
        p.grad = grad.clone()
        opt.step()
        x = ours.step(x, grad)
    assert torch.allclose(x, p.detach(), atol=1e-12)
    with pytest.raises(ValueError, match="update_rule"):
        make_update("sgd", 0.1)


def test_query_maps_pca_then_bicubic_per_layer():
    g = torch.Generator().manual_seed(2)
    qa, qb = torch.randn(3, 4, 8, generator=g), torch.randn(3, 16, 8, generator=g)
    out = query_maps({6: qb, 4: qa}, {4: (2, 2), 6: (4, 4)}, (8, 8), n_components=3)
    assert [t.shape for t in out] == [(3, 3, 8, 8)] * 2
    for q, hw, got in ((qa, 2, out[0]), (qb, 4, out[1])):  # block 4 first (sorted), then block 6
        p = PCA.fit(q.reshape(-1, 8), 3)
        ref = F.interpolate(p.transform(q).reshape(3, hw, hw, 3).permute(0, 3, 1, 2), size=(8, 8), mode="bicubic", align_corners=False)
        assert torch.allclose(got, ref, atol=1e-6)


def test_query_maps_are_differentiable_and_check_the_grid():
    q = torch.randn(2, 4, 5, requires_grad=True)
    query_maps({4: q}, {4: (2, 2)}, (4, 4), 2)[0].sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="tokens"):
        query_maps({4: q}, {4: (3, 2)}, (4, 4), 2)


def test_latent_scale_maps_k_diffusion_latents_to_unit_variance():
    """x = z_t * sqrt(1 + sigma^2) = z_t / sqrt(alpha_bar): at AnimateDiff's t = 961 (sigma 20.1) a step of lr on x
    is a z_t step of 0.050 lr: the too-small step the pack took before this rule."""
    alphas = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64), 0)
    for t in (961, 761, 1):
        sigma = float(((1 - alphas[t]) / alphas[t]).sqrt())
        assert latent_scale(sigma) == pytest.approx(float(1 / alphas[t].sqrt()), rel=1e-12)
    assert latent_scale(0.0) == 1.0
