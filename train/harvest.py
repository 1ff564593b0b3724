"""Tokens -> taps -> head vectors: run the frozen LM to the deepest layer and mix K and Q head vectors.

``harvest`` returns, per layer, a [N, head_dim] tensor: every key head vector of every token plus a
random subset of query head vectors sized so that queries make up ``q_fraction`` of the mix.
``ShuffleBuffer`` decorrelates them before they reach the SAE (its state is part of the training
checkpoint, so a resumed run sees exactly the same batches).
"""

from __future__ import annotations

import torch
from einops import rearrange

from s3attn.constants import SITE_KEY, SITE_QUERY
from s3attn.models.taps import tap_heads


def queries_for(num_keys: int, q_fraction: float) -> int:
    """How many query vectors join ``num_keys`` key vectors so that they are ``q_fraction`` of the mix."""
    if q_fraction <= 0:
        return 0
    return int(round(num_keys * q_fraction / (1.0 - q_fraction))) if q_fraction < 1 else num_keys


@torch.no_grad()
def harvest(
    model, input_ids_BT: torch.Tensor, layers: list[int], q_fraction: float, generator: torch.Generator
) -> dict[int, torch.Tensor]:
    """Per layer, mixed K/Q head vectors [N, D] (float32, on the model's device)."""
    sites = (SITE_KEY, SITE_QUERY) if q_fraction > 0 else (SITE_KEY,)
    taps = tap_heads(model, input_ids_BT, layers, sites=sites)
    out: dict[int, torch.Tensor] = {}
    for layer in layers:
        keys_ND = rearrange(taps.keys[layer], "b t h d -> (b t h) d")
        parts = [keys_ND]
        if q_fraction > 0:
            queries_ND = rearrange(taps.queries[layer], "b t h d -> (b t h) d")
            n_q = min(queries_for(keys_ND.shape[0], q_fraction), queries_ND.shape[0])
            pick = torch.randperm(queries_ND.shape[0], generator=generator)[:n_q].to(queries_ND.device)
            parts.append(queries_ND[pick])
        out[layer] = torch.cat(parts).float()
    return out


class ShuffleBuffer:
    """A fixed-capacity pool: ``push`` vectors, ``pop`` a random batch once at least half full.

    Popped rows are replaced by the last rows (O(batch) per pop), so the pool stays a uniform mix.
    """

    def __init__(self, capacity: int, dim: int, *, device: torch.device | str = "cpu"):
        self.capacity, self.dim = capacity, dim
        self.data = torch.empty(capacity, dim, device=device)
        self.size = 0

    def push(self, x_ND: torch.Tensor) -> None:
        n = x_ND.shape[0]
        if self.size + n > self.capacity:
            raise RuntimeError("shuffle buffer overflow: pop before pushing more")
        self.data[self.size : self.size + n] = x_ND.to(self.data.device, self.data.dtype)
        self.size += n

    def room(self) -> int:
        return self.capacity - self.size

    def ready(self, batch: int) -> bool:
        return self.size >= max(batch, self.capacity // 2)

    def pop(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randperm(self.size, generator=generator)[:batch].to(self.data.device)
        out = self.data[idx].clone()
        # Move the tail rows into the holes left by the popped ones.
        keep_tail = torch.ones(self.size, dtype=torch.bool, device=self.data.device)
        keep_tail[idx] = False
        new_size = self.size - batch
        holes = idx[idx < new_size]
        tail = torch.arange(new_size, self.size, device=self.data.device)
        movers = tail[keep_tail[new_size:]]
        self.data[holes] = self.data[movers]
        self.size = new_size
        return out

    def state_dict(self) -> dict:
        return {"data": self.data[: self.size].clone().cpu(), "capacity": self.capacity}

    def load_state_dict(self, state: dict) -> None:
        data = state["data"]
        self.size = data.shape[0]
        self.data[: self.size] = data.to(self.data.device)
