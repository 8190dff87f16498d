import pytest
import torch

from core.debias import patch_adain


def naive(inj, cur, p, eps=1e-6):
    out = torch.empty_like(inj)
    _, _, h, w = inj.shape
    for y in range(0, h, p):
        for x in range(0, w, p):
            a = inj[:, :, y:y + p, x:x + p]
            c = cur[:, :, y:y + p, x:x + p]
            dims = (2, 3)
            if a[0, 0].numel() == 1:
                out[:, :, y:y + p, x:x + p] = a - a.mean(dims, keepdim=True) + c.mean(dims, keepdim=True)
                continue
            out[:, :, y:y + p, x:x + p] = (a - a.mean(dims, keepdim=True)) / (a.std(dims, keepdim=True) + eps) * c.std(
                dims, keepdim=True) + c.mean(dims, keepdim=True)
    return out


@pytest.mark.parametrize("h, w, p", [(8, 8, 4), (9, 7, 4), (5, 6, 2), (4, 4, 1), (3, 5, 8), (16, 12, 4)])
def test_matches_a_per_patch_loop(h, w, p):
    g = torch.Generator().manual_seed(h * 31 + w + p)
    inj = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
    cur = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64) * 2 + 1
    out = patch_adain(inj, cur, p)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, naive(inj, cur, p), atol=1e-10)


def test_each_patch_takes_the_current_statistics():
    g = torch.Generator().manual_seed(0)
    inj, cur = torch.randn(1, 2, 8, 8, generator=g), torch.randn(1, 2, 8, 8, generator=g) * 3 + 5
    out = patch_adain(inj, cur, 4, eps=0)
    for y in (0, 4):
        for x in (0, 4):
            o, c = out[..., y:y + 4, x:x + 4], cur[..., y:y + 4, x:x + 4]
            assert torch.allclose(o.mean((2, 3)), c.mean((2, 3)), atol=1e-5)
            assert torch.allclose(o.std((2, 3)), c.std((2, 3)), atol=1e-4)


def test_keeps_dtype_and_rejects_bad_input():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float16)
    assert patch_adain(x, x, 2).dtype == torch.float16
    with pytest.raises(ValueError, match="current"):
        patch_adain(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="injected"):
        patch_adain(torch.full((1, 1, 4, 4), float("nan")), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="patch_size"):
        patch_adain(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), 0)
