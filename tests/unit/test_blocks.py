import pytest
from torch import nn

from core.blocks import DEFAULT_OPT_BLOCKS, DEFAULT_QUERY_BLOCKS, UNetLayout, describe_signature_mismatch


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.out_channels = c


class SpatialTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.in_channels = c


class Upsample(nn.Module):
    pass


class MotionModule(nn.Module):
    pass


def sd15_like(widths=(1280, 1280, 640, 320), attn_levels=(1, 2, 3), extra=False):
    unet = nn.Module()
    blocks = []
    for level, c in enumerate(widths):
        for j in range(3):
            mods = [ResBlock(c)]
            if level in attn_levels:
                mods.append(SpatialTransformer(c))
            if extra:
                mods.append(MotionModule())
            if j == 2 and level < len(widths) - 1:
                mods.append(Upsample())
            blocks.append(nn.Sequential(*mods))
    unet.output_blocks = nn.ModuleList(blocks)
    return unet


@pytest.mark.parametrize("name, kind, index", [
    ("up_blocks.1.attentions.0", "attn", 3), ("up_blocks.1.attentions.1", "attn", 4), ("up_blocks.2.attentions.0", "attn", 6),
    ("up_blocks.2.resnets.1", "res", 7), ("Query 1.1", "attn", 4), ("query 2.0", "attn", 6), ("1.1", "res", 4),
    ("output_blocks.7", "attn", 7), ("5", "attn", 5), ("up_blocks.3.attentions.2", "attn", 11),
])
def test_names_map_to_output_blocks(name, kind, index):
    assert UNetLayout.from_unet(sd15_like()).parse(name, kind) == index


def test_defaults_resolve_and_inserted_modules_are_tolerated():
    layout = UNetLayout.from_unet(sd15_like(extra=True))
    assert layout.resolve("up_blocks.1.attentions.0, up_blocks.1.attentions.1, 2.0, 2.1", "attn") == DEFAULT_QUERY_BLOCKS
    assert layout.resolve(["Query 1.1", "Query 2.0"], "attn") == DEFAULT_OPT_BLOCKS
    assert layout.channels(4, "attn") == 1280 and layout.channels(7, "res") == 640


def test_errors_list_what_exists():
    layout = UNetLayout.from_unet(sd15_like())
    with pytest.raises(ValueError, match=r"output_blocks 1\) has no attention; output blocks with attention: 3, 4, 5, 6, 7, 8, 9, 10, 11"):
        layout.resolve("0.1", "attn")
    with pytest.raises(ValueError, match="4 decoder levels"):
        layout.resolve("up_blocks.4.attentions.0", "attn")
    with pytest.raises(ValueError, match="not a block name"):
        layout.resolve("middle", "attn")
    with pytest.raises(ValueError, match="expected an attention"):
        layout.resolve("up_blocks.1.resnets.0", "attn")
    with pytest.raises(ValueError, match="no attn block"):
        layout.resolve(" , ", "attn")


def test_levels_follow_the_concrete_unet():
    unet = nn.Module()  # 2 blocks per level (an SDXL-like decoder depth)
    unet.output_blocks = nn.ModuleList([nn.Sequential(ResBlock(8), SpatialTransformer(8), *( [Upsample()] if i % 2 else []))
                                        for i in range(6)])
    layout = UNetLayout.from_unet(unet)
    assert layout.parse("up_blocks.2.attentions.1", "attn") == 5


def test_signature_mismatch_is_described():
    a = UNetLayout.from_unet(sd15_like()).signature()
    b = UNetLayout.from_unet(sd15_like(widths=(64, 64, 64, 32))).signature()
    assert describe_signature_mismatch(a, a) is None
    assert "1280 attention channels at output block 3; this MODEL has 64" in describe_signature_mismatch(a, b)
    with pytest.raises(ValueError, match="output_blocks"):
        UNetLayout.from_unet(nn.Linear(2, 2))
