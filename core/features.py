"""The features captured from the condition image at t_alpha (what ANYI2V_FEATURES carries)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from .blocks import describe_signature_mismatch


@dataclass
class ConditionFeatures:
    queries: dict[int, torch.Tensor]  # output block -> (1, h*w, C): attn1 to_q output, before the head split
    residuals: dict[int, torch.Tensor]  # output block -> (1, C, h, w): ResBlock residual branch (before the skip)
    query_hw: dict[int, tuple[int, int]]  # output block -> (h, w) of its query tokens
    latent_hw: tuple[int, int]  # latent size of the inversion
    image_hw: tuple[int, int]
    model_signature: dict  # core.blocks.UNetLayout.signature() of the model they come from
    t_alpha: int
    stride: int = 1
    _resized: dict = field(default_factory=dict, repr=False, compare=False)

    def to(self, device=None, dtype=None) -> ConditionFeatures:
        return replace(
            self,
            queries={k: v.to(device=device, dtype=dtype) for k, v in self.queries.items()},
            residuals={k: v.to(device=device, dtype=dtype) for k, v in self.residuals.items()},
            _resized={},
        )

    def check_model(self, signature: dict) -> None:
        problem = describe_signature_mismatch(self.model_signature, signature)
        if problem:
            raise ValueError(f"features: {problem}. Invert the condition with the same base model you sample with.")

    def query_for(self, block: int, h: int, w: int) -> torch.Tensor:
        """The block's query as (1, h*w, C) on an h x w token grid (bilinear when the size differs)."""
        key = ("q", block, h, w)
        if key not in self._resized:
            q = self.queries[block]
            h0, w0 = self.query_hw[block]
            if (h0, w0) == (h, w):
                self._resized[key] = q
            else:
                grid = q.reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
                grid = F.interpolate(grid.float(), size=(h, w), mode="bilinear", align_corners=False).to(q.dtype)
                self._resized[key] = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return self._resized[key]

    def residual_for(self, block: int, h: int, w: int) -> torch.Tensor:
        """The block's residual as (1, C, h, w) (bilinear when the size differs)."""
        key = ("r", block, h, w)
        if key not in self._resized:
            r = self.residuals[block]
            same = tuple(r.shape[-2:]) == (h, w)
            self._resized[key] = r if same else F.interpolate(r.float(), size=(h, w), mode="bilinear", align_corners=False).to(r.dtype)
        return self._resized[key]
