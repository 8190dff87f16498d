import pytest
import torch

from core.features import ConditionFeatures


def feats():
    q = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 6, 4)
    return ConditionFeatures(queries={4: q}, residuals={3: torch.ones(1, 5, 2, 3)}, query_hw={4: (2, 3)},
                             latent_hw=(2, 3), image_hw=(16, 24), model_signature={"attn": [None, 8], "res": [8, 8]},
                             t_alpha=201)


def test_same_size_is_returned_as_is_and_other_sizes_are_resized():
    f = feats()
    assert f.query_for(4, 2, 3) is f.queries[4]
    big = f.query_for(4, 4, 6)
    assert big.shape == (1, 24, 4)
    # a constant map stays constant under bilinear resizing
    assert torch.allclose(f.residual_for(3, 4, 6), torch.ones(1, 5, 4, 6))


def test_model_check_names_the_mismatch():
    f = feats()
    f.check_model({"attn": [None, 8], "res": [8, 8]})
    with pytest.raises(ValueError, match="8 attention channels at output block 1; this MODEL has 16"):
        f.check_model({"attn": [None, 16], "res": [8, 8]})


def test_state_round_trip_and_damaged_files():
    from core.features import from_state, to_state

    f = feats()
    tensors, meta = to_state(f)
    back = from_state(tensors, meta)
    assert torch.equal(back.queries[4], f.queries[4]) and back.query_hw == f.query_hw
    with pytest.raises(ValueError, match="damaged layout"):
        from_state(tensors, dict(meta, layout="{"))
    with pytest.raises(ValueError, match="unexpected tensor"):
        from_state(dict(tensors, extra=torch.zeros(1)), meta)
    with pytest.raises(ValueError, match="query of block 4"):
        from_state(dict(tensors, **{"query.4": torch.zeros(1, 5, 4)}), meta)
    with pytest.raises(ValueError, match="not finite"):
        from_state(dict(tensors, **{"query.4": torch.full((1, 6, 4), float("nan"))}), meta)
