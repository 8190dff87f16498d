import pytest
import torch
import torch.nn.functional as F

from core.optimize import Adam, adamw_fresh_step, make_update, query_maps
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
    assert out.shape == (3, 6, 8, 8)
    pa = PCA.fit(qa.reshape(-1, 8), 3)
    ref = F.interpolate(pa.transform(qa).reshape(3, 2, 2, 3).permute(0, 3, 1, 2), size=(8, 8), mode="bicubic", align_corners=False)
    assert torch.allclose(out[:, :3], ref, atol=1e-6)  # block 4 first (sorted), then block 6


def test_query_maps_are_differentiable_and_check_the_grid():
    q = torch.randn(2, 4, 5, requires_grad=True)
    query_maps({4: q}, {4: (2, 2)}, (4, 4), 2).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="tokens"):
        query_maps({4: q}, {4: (3, 2)}, (4, 4), 2)
