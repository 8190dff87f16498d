"""Resolve the paper's block names to ComfyUI ``UNetModel.output_blocks`` indices.

diffusers ``up_blocks[i].resnets[j]`` is ``output_blocks[start(i) + j][0]`` (the ResBlock) and
``up_blocks[i].attentions[j]`` is the SpatialTransformer of the same output block, where start(i) is
the first output block of decoder level i (3 blocks per level in SD1.5). Accepted names:
``up_blocks.1.attentions.1``, ``up_blocks.2.resnets.0``, ``Query 1.1`` / ``1.1`` (level.index),
``output_blocks.4`` / ``4``. Levels are read from a concrete UNet (a level ends at the block holding an
Upsample), so other depths resolve too. Modules inserted into a block (AnimateDiff motion modules) are
ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_QUERY_BLOCKS = [3, 4, 6, 7]  # up_blocks.1/2 attentions 0/1
DEFAULT_RES_BLOCKS = [3, 4, 6, 7]  # up_blocks.1/2 resnets 0/1
DEFAULT_OPT_BLOCKS = [4, 6]  # "Query 1.1" and "Query 2.0"
KINDS = ("attn", "res")
_KNOWN = {"ResBlock": "res", "SpatialTransformer": "attn", "Upsample": "up"}

_DIFFUSERS = re.compile(r"^up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)$")
_LEVEL = re.compile(r"^(?:query\s+)?(\d+)\.(\d+)$", re.IGNORECASE)
_RAW = re.compile(r"^(?:output_blocks\.)?(\d+)$")


@dataclass(frozen=True)
class BlockInfo:
    index: int
    res_channels: int | None  # ResBlock output channels, None when the block has no ResBlock
    attn_channels: int | None  # SpatialTransformer channels, None without attention
    upsample: bool


class UNetLayout:
    def __init__(self, blocks: list[BlockInfo]):
        self.blocks = blocks
        self.level_starts = [0] + [b.index + 1 for b in blocks if b.upsample and b.index + 1 < len(blocks)]

    @classmethod
    def from_unet(cls, unet) -> UNetLayout:
        if not hasattr(unet, "output_blocks"):
            raise ValueError("model: this is not a UNet with output_blocks (SD1.5-style); AnyI2V needs one")
        blocks = []
        for i, block in enumerate(unet.output_blocks):
            res = attn = None
            up = False
            for child in block:
                kind = _KNOWN.get(type(child).__name__)
                if kind == "res" and res is None:
                    res = int(getattr(child, "out_channels", 0)) or None
                elif kind == "attn" and attn is None:
                    attn = int(getattr(child, "in_channels", 0)) or None
                elif kind == "up":
                    up = True
            blocks.append(BlockInfo(i, res, attn, up))
        return cls(blocks)

    def index(self, level: int, j: int) -> int:
        if level >= len(self.level_starts):
            raise ValueError(f"up_blocks.{level} does not exist: this UNet has {len(self.level_starts)} decoder levels (0..{len(self.level_starts) - 1})")
        start = self.level_starts[level]
        end = self.level_starts[level + 1] if level + 1 < len(self.level_starts) else len(self.blocks)
        if j >= end - start:
            raise ValueError(f"up_blocks.{level} has {end - start} blocks (0..{end - start - 1}), not {j}")
        return start + j

    def parse(self, name, kind: str) -> int:
        if kind not in KINDS:
            raise ValueError(f"kind: expected attn or res, got '{kind}'")
        text = str(name).strip()
        m = _DIFFUSERS.match(text)
        if m:
            wanted = "attn" if m.group(2) == "attentions" else "res"
            if wanted != kind:
                raise ValueError(f"block '{text}': expected {'an attention' if kind == 'attn' else 'a resnet'} block name")
            return self.index(int(m.group(1)), int(m.group(3)))
        m = _LEVEL.match(text)
        if m:
            return self.index(int(m.group(1)), int(m.group(2)))
        m = _RAW.match(text)
        if m:
            return int(m.group(1))
        raise ValueError(f"block '{text}': not a block name (use e.g. up_blocks.1.attentions.0, 'Query 1.1', 1.1 or output_blocks.4)")

    def resolve(self, names, kind: str) -> list[int]:
        """Block names (a list or a comma-separated string) -> sorted unique output block indices."""
        items = [n for n in (names.split(",") if isinstance(names, str) else names) if str(n).strip()]
        if not items:
            raise ValueError(f"blocks: no {kind} block given")
        out = []
        for name in items:
            i = self.parse(name, kind)
            have = [b.index for b in self.blocks if (b.attn_channels if kind == "attn" else b.res_channels)]
            if i not in have:
                what = "attention" if kind == "attn" else "a ResBlock"
                raise ValueError(f"block '{str(name).strip()}' (output_blocks {i}) has no {what}; "
                                 f"output blocks with {what}: {', '.join(map(str, have))}")
            out.append(i)
        return sorted(set(out))

    def channels(self, index: int, kind: str) -> int:
        b = self.blocks[index]
        return b.attn_channels if kind == "attn" else b.res_channels

    def signature(self) -> dict:
        return {"res": [b.res_channels for b in self.blocks], "attn": [b.attn_channels for b in self.blocks]}


def describe_signature_mismatch(expected: dict, actual: dict) -> str | None:
    """None when equal, else a sentence naming the first differing block."""
    for kind, label in (("attn", "attention"), ("res", "ResBlock")):
        e, a = expected.get(kind, []), actual.get(kind, [])
        if len(e) != len(a):
            return f"the features come from a UNet with {len(e)} output blocks; this MODEL has {len(a)}"
        for i, (x, y) in enumerate(zip(e, a, strict=True)):
            if x != y:
                return (f"the features come from a model with {x} {label} channels at output block {i}; "
                        f"this MODEL has {y}")
    return None
