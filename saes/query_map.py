"""A query map: per layer, one linear map per query head from query vectors into the key space (inference).

``train.query_map`` fits it on the model's own attention; here it is stored, loaded and applied. File:
``QUERY_MAP_FILE`` (safetensors): ``layer.<L>.weight`` [H_q, D, D] (applied as ``x @ W``),
``layer.<L>.bias`` [H_q, D]; the metadata holds how it was fitted (JSON under ``"fit"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from einops import einsum
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from s3attn.errors import S3Error


class QueryMap(NamedTuple):
    weight: dict[int, torch.Tensor]  # layer -> [H_q, D, D]
    bias: dict[int, torch.Tensor]  # layer -> [H_q, D]
    fit: dict  # how it was fitted

    def apply(self, layer: int, q_THD: torch.Tensor) -> torch.Tensor:
        """``q_THD`` [T, H_q, D] mapped into the key space of ``layer``."""
        if layer not in self.weight:
            raise S3Error(
                f"the query map has no layer {layer} (it has {sorted(self.weight)}); fit one for it"
            )
        w, b = self.weight[layer].to(q_THD), self.bias[layer].to(q_THD)
        return einsum(q_THD, w, "t h d, h d e -> t h e") + b

    def save(self, path: Path) -> None:
        tensors = {}
        for layer in self.weight:
            tensors[f"layer.{layer}.weight"] = self.weight[layer].contiguous()
            tensors[f"layer.{layer}.bias"] = self.bias[layer].contiguous()
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"fit": json.dumps(self.fit)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> QueryMap:
        if not Path(path).is_file():
            raise S3Error(f"--query-map {path}: no such file; fit one with s3-train-sae query-map RELEASE")
        try:
            with safe_open(str(path), "pt") as f:
                fit = json.loads((f.metadata() or {}).get("fit", "{}"))
            tensors = load_file(str(path))
        except Exception as e:  # noqa: BLE001 (any damage of the file)
            raise S3Error(f"--query-map {path}: not a readable query map ({e}); fit it again") from None
        layers = sorted({int(k.split(".")[1]) for k in tensors})
        return cls(
            {x: tensors[f"layer.{x}.weight"] for x in layers},
            {x: tensors[f"layer.{x}.bias"] for x in layers},
            fit,
        )
