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


FORMAT = "anyi2v-features"
FORMAT_VERSION = 1


def to_state(features: ConditionFeatures) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata for a .safetensors file."""
    import json

    tensors = {f"query.{b}": q.detach().contiguous().cpu() for b, q in features.queries.items()}
    tensors.update({f"residual.{b}": r.detach().contiguous().cpu() for b, r in features.residuals.items()})
    meta = {
        "format": FORMAT,
        "version": str(FORMAT_VERSION),
        "layout": json.dumps({
            "query_hw": {str(b): list(hw) for b, hw in features.query_hw.items()},
            "latent_hw": list(features.latent_hw), "image_hw": list(features.image_hw),
            "model_signature": features.model_signature, "t_alpha": features.t_alpha, "stride": features.stride,
        }),
    }
    return tensors, meta


def from_state(tensors: dict[str, torch.Tensor], meta: dict[str, str] | None, name: str = "file") -> ConditionFeatures:
    """Rebuild and validate features read from a file; ValueError naming what is wrong."""
    import json

    meta = meta or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{name}: not an AnyI2V features file (no '{FORMAT}' metadata)")
    if meta.get("version") != str(FORMAT_VERSION):
        raise ValueError(f"{name}: features format version {meta.get('version')!r}; this pack reads {FORMAT_VERSION}")
    try:
        layout = json.loads(meta["layout"])
        query_hw = {int(b): (int(hw[0]), int(hw[1])) for b, hw in layout["query_hw"].items()}
        latent_hw = tuple(int(v) for v in layout["latent_hw"])
        image_hw = tuple(int(v) for v in layout["image_hw"])
        signature = {"res": list(layout["model_signature"]["res"]), "attn": list(layout["model_signature"]["attn"])}
        t_alpha, stride = int(layout["t_alpha"]), int(layout["stride"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{name}: damaged layout metadata ({e})") from e
    queries, residuals = {}, {}
    for key, t in tensors.items():
        kind, _, block = key.partition(".")
        if kind not in ("query", "residual") or not block.isdigit():
            raise ValueError(f"{name}: unexpected tensor '{key}'")
        if not t.is_floating_point() or not torch.isfinite(t).all():
            raise ValueError(f"{name}: tensor '{key}' is not finite floating point data")
        b = int(block)
        if kind == "query":
            hw = query_hw.get(b)
            if hw is None or t.ndim != 3 or t.shape[0] != 1 or t.shape[1] != hw[0] * hw[1]:
                raise ValueError(f"{name}: query of block {b} has shape {tuple(t.shape)}, not (1, {hw and hw[0] * hw[1]}, C)")
            queries[b] = t
        else:
            if t.ndim != 4 or t.shape[0] != 1:
                raise ValueError(f"{name}: residual of block {b} has shape {tuple(t.shape)}, not (1, C, h, w)")
            residuals[b] = t
    if not queries or set(queries) != set(query_hw):
        raise ValueError(f"{name}: the queries do not match the layout metadata")
    return ConditionFeatures(queries, residuals, query_hw, latent_hw, image_hw, signature, t_alpha, stride)
