"""Question -> query features -> postings -> per-token scores (the S3 half of retrieval).

The question, inside the chat prompt used for answering, runs through the model to the deepest indexed
layer; the query head vectors of the question's own tokens go through the same SAEs as the index keys.
Each query head is matched against the postings of its KV head (GQA map). Per (layer, KV head) the
query activations are pooled over tokens and the heads of the group (``sum`` or ``max``), weighted by
IDF(f) = 1 / (log(1 + df) + 1), and the ``max_features`` best features are read from the index.
A posting of feature f at position p adds ``weight_f * idf_f * act_p`` to the score of p.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from einops import rearrange

from s3attn.saes.taps import prefix_cache, tap_heads


@dataclass
class QueryConfig:
    pool: str = "sum"
    """How query activations are pooled over question tokens and the heads of a GQA group: sum or max."""
    max_features: int = 24
    """Features read per (layer, KV head): the best by pooled weight x IDF."""
    idf: str = "inverse_log"
    """IDF form: inverse_log = 1 / (log(1 + df) + 1); log = log(N / (1 + df)); none = 1."""
    use_posting_acts: bool = True
    """Multiply each posting by its stored (key-side) activation."""
    max_postings: int = 1 << 18
    """Postings read per question at most, split evenly over the (layer, KV head) pairs: in weight order, a
    feature whose list no longer fits is skipped (the most frequent features go first, like stop words)."""


class HeadQuery(NamedTuple):
    features: np.ndarray  # int64 [n]
    weights: np.ndarray  # float32 [n] pooled query activation x IDF
    df: np.ndarray  # int64 [n]


def question_token_range(tokenizer, prompt: str, question: str) -> tuple[int, int]:
    """Token range [start, end) of ``question`` inside the tokenized ``prompt``."""
    at = prompt.rfind(question)
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if at < 0:
        return 0, len(offsets)
    lo, hi = at, at + len(question)
    toks = [i for i, (s, e) in enumerate(offsets) if e > lo and s < hi]
    return (toks[0], toks[-1] + 1) if toks else (0, len(offsets))


def idf_weights(df: np.ndarray, total_tokens: int, form: str) -> np.ndarray:
    df = df.astype(np.float64)
    if form == "inverse_log":
        return (1.0 / (np.log1p(df) + 1.0)).astype(np.float32)
    if form == "log":
        return np.log(max(total_tokens, 1) / (1.0 + df)).clip(min=0).astype(np.float32)
    return np.ones_like(df, dtype=np.float32)


@torch.no_grad()
def query_codes(
    model,
    saes: dict[int, torch.nn.Module],
    kv_of_query: tuple[int, ...],
    input_ids: torch.Tensor,
    token_range: tuple[int, int],
    cache: Any = None,
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Per (layer, KV head): (indices [n, k], acts [n, k]) of every query head of the group over the question.

    ``cache``: KV cache of the tokens before ``input_ids`` (extended in place).
    """
    taps = tap_heads(model, input_ids[None], sorted(saes), sites=("q",), cache=cache)
    lo, hi = token_range
    out: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for layer, sae in saes.items():
        q_THD = taps.queries[layer][0, lo:hi]
        n_tok, n_heads, _ = q_THD.shape
        enc = sae.encode(rearrange(q_THD, "t h d -> (t h) d").to(sae.dtype))
        idx_THK = rearrange(enc.top_indices, "(t h) k -> t h k", t=n_tok).cpu().numpy()
        act_THK = rearrange(enc.top_acts, "(t h) k -> t h k", t=n_tok).float().cpu().numpy()
        for kv in sorted(set(kv_of_query)):
            heads = [h for h in range(n_heads) if kv_of_query[h] == kv]
            out[(layer, kv)] = (
                idx_THK[:, heads].reshape(-1, idx_THK.shape[-1]),
                act_THK[:, heads].reshape(-1, act_THK.shape[-1]),
            )
    return out


class QueryEncoder:
    """Prompt token ids + the question's token range -> :func:`query_codes`, computing only the question.

    Causal attention makes the question's query vectors independent of the tokens after it, so those are
    dropped; the KV cache of the tokens before it (the chat template's system prompt, constant across
    questions) is computed once and reused, so a question costs a forward over its own tokens only.
    """

    def __init__(self, model, saes: dict[int, torch.nn.Module], kv_of_query: tuple[int, ...]):
        self.model, self.saes, self.kv_of_query = model, saes, kv_of_query
        self._prefix: tuple[int, ...] | None = None
        self._cache: Any = None

    def codes(
        self, input_ids: torch.Tensor, token_range: tuple[int, int]
    ) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        lo, hi = token_range
        ids = input_ids[:hi].to(self.model.device)
        if lo == 0:
            return query_codes(self.model, self.saes, self.kv_of_query, ids, (0, hi))
        prefix = tuple(ids[:lo].tolist())
        if prefix != self._prefix:
            self._cache, self._prefix = prefix_cache(self.model, ids[None, :lo]), prefix
        return query_codes(
            self.model, self.saes, self.kv_of_query, ids[lo:], (0, hi - lo), _fork(self._cache)
        )


def _fork(cache: Any) -> Any:
    """A copy of a KV cache that a forward may extend without touching the original.

    transformers' DynamicCache extends a layer by rebinding its tensors (``keys = cat(keys, new)``), so
    shallow copies of the cache and of its layer objects suffice (~100x cheaper than a deep copy); other
    cache types are deep-copied.
    """
    layers = getattr(cache, "layers", None)
    if type(cache).__name__ != "DynamicCache" or not isinstance(layers, list):
        return copy.deepcopy(cache)
    fork = copy.copy(cache)
    fork.layers = [copy.copy(layer) for layer in layers]
    return fork


def pool_features(idx_NK: np.ndarray, act_NK: np.ndarray, num_latents: int, pool: str) -> np.ndarray:
    """float32 [F]: pooled query activation per feature."""
    flat_i, flat_a = idx_NK.ravel(), act_NK.ravel().astype(np.float32)
    if pool == "max":
        out = np.zeros(num_latents, np.float32)
        np.maximum.at(out, flat_i, flat_a)
        return out
    return np.bincount(flat_i, weights=flat_a, minlength=num_latents).astype(np.float32)


def head_queries(
    codes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]], store, cfg: QueryConfig
) -> dict[tuple[int, int], HeadQuery]:
    """Choose the features to read per (layer, KV head), with their weights."""
    num_latents = int(store.attrs["num_latents"])
    per_head = cfg.max_postings // max(1, len(codes))
    out = {}
    for key, (idx, act) in codes.items():
        pooled = pool_features(idx, act, num_latents, cfg.pool)
        df = store.doc_freq(*key)
        w = pooled * idf_weights(df, store.num_tokens, cfg.idf)
        w[df == 0] = 0.0
        nz = np.flatnonzero(w > 0)
        order = nz[np.argsort(-w[nz], kind="stable")]
        top = order[_fits(df[order], per_head, cfg.max_features)]
        out[key] = HeadQuery(top.astype(np.int64), w[top].astype(np.float32), df[top])
    return out


def _fits(df_sorted: np.ndarray, budget: int, limit: int) -> np.ndarray:
    """bool mask: greedily, in the given order, up to ``limit`` lists that still fit in ``budget`` postings."""
    keep = np.zeros(df_sorted.size, dtype=bool)
    left, kept = budget, 0
    for i, d in enumerate(df_sorted.tolist()):
        if kept == limit:
            break
        if d <= left:
            keep[i], left, kept = True, left - d, kept + 1
    return keep


def score_tokens(store, queries: dict[tuple[int, int], HeadQuery], cfg: QueryConfig) -> np.ndarray:
    """float32 [num_tokens]: the IDF-weighted co-activation density over the whole index."""
    positions, weights = [], []
    for (layer, kv), hq in queries.items():
        if hq.features.size == 0:
            continue
        post = store.postings(layer, kv, hq.features)
        w = hq.weights[post.feature_slot]
        positions.append(post.positions)
        weights.append(w * post.acts if cfg.use_posting_acts else w)
    if not positions:
        return np.zeros(store.num_tokens, np.float32)
    pos, w = np.concatenate(positions), np.concatenate(weights)
    return np.bincount(pos, weights=w, minlength=store.num_tokens).astype(np.float32)


def top_features_near(
    queries: dict[tuple[int, int], HeadQuery], store, start: int, end: int, limit: int = 3
) -> dict[str, list[int]]:
    """For ``--show-spans``: per layer/head, the query features that have postings inside [start, end)."""
    why: dict[str, list[int]] = {}
    for (layer, kv), hq in queries.items():
        if hq.features.size == 0:
            continue
        post = store.postings(layer, kv, hq.features)
        inside = (post.positions >= start) & (post.positions < end)
        slots, counts = np.unique(post.feature_slot[inside], return_counts=True)
        order = np.argsort(-(counts * hq.weights[slots]))[:limit]
        if order.size:
            why[f"L{layer}/h{kv}"] = [int(hq.features[s]) for s in slots[order]]
    return why
