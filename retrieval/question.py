"""Question -> question features -> postings -> per-token scores (the S3 half of retrieval).

The question, inside the chat prompt used for answering, runs through the model to the deepest indexed
layer; the head vectors of the question's own tokens go through the same SAEs as the index keys, and
their features are matched against the postings of the same (layer, KV head). ``QuestionConfig.site`` says
which vectors: ``query`` (the paper's way: each query head matched against its KV head's postings, GQA
map), ``key`` (the question's own key vectors, per KV head: the default, see below) or ``both``.
Per (layer, KV head) the activations are pooled over tokens (and the query heads of the group) with
``sum`` or ``max``, weighted by IDF(f) = 1 / (log(1 + df) + 1); features with more than ``stop_ratio``
times the average number of postings are skipped as stop features, and the ``max_features`` best are read.
A posting of feature f at position p adds ``weight_f * idf_f * act_p`` to the score of p; only the touched
positions are kept (``SparseScores``).

Why ``key`` by default: with the published SmolLM2 SAEs, query-vector features are at chance at finding
a needle (its 64-token window ranks at 0.70 of the windows of 16k-32k haystacks, on average), while the
question's key features, max-pooled, 64 per head, stop features (over 1 % of the tokens) skipped, put
it at 0.005 (top 5 % in 12 of 12). One SAE codes both sites, but its query and key latents barely
overlap, whereas a token's key in the question and the same token's key in the document share features.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from einops import rearrange

from s3attn.constants import SITE_CODES, SITE_KEY_NAME, SITE_QUERY
from s3attn.errors import S3Error
from s3attn.models.taps import prefix_cache, tap_heads
from s3attn.retrieval.config import QuestionConfig
from s3attn.retrieval.sparse import SparseScores, accumulate, coordinated, saturation_factors
from s3attn.saes.query_map import QueryMap


class HeadFeatures(NamedTuple):
    features: np.ndarray  # int64 [n]
    weights: np.ndarray  # float32 [n] pooled question activation x IDF
    df: np.ndarray  # int64 [n] postings of each whole list
    skipped: int = 0  # better-weighted features passed over: their list (tier 0) no longer fit max_postings
    depths: np.ndarray | None = None  # int64 [n] impact tiers read of each list; None: whole lists
    read: np.ndarray | None = None  # int64 [n] postings read of each list; None: df (whole lists)
    tiers: int | None = None  # (feature, tier) pairs read that hold postings; None: one per list


def read_stats(head_feats: dict[tuple[int, int], HeadFeatures]) -> dict[str, int]:
    """What one question reads: posting lists, postings, lists skipped for the posting budget, and impact
    tiers read (a list of an index in position order, format 1 or 2, is one tier)."""
    hs = head_feats.values()
    return {
        "lists": int(sum(h.features.size for h in hs)),
        "postings": int(sum(int((h.df if h.read is None else h.read).sum()) for h in hs)),
        "lists_skipped": int(sum(h.skipped for h in hs)),
        "tiers": int(sum(h.features.size if h.tiers is None else h.tiers for h in hs)),
    }


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


def check_site(site: str) -> tuple[str, ...]:
    """The tap sites (``SITE_KEY`` / ``SITE_QUERY`` codes) of a question site name; S3Error for other names."""
    if site not in SITE_CODES:
        raise S3Error(f"question site {site!r}: choose one of {', '.join(SITE_CODES)}")
    return SITE_CODES[site]


@torch.no_grad()
def question_codes(
    model,
    saes: dict[int, torch.nn.Module],
    kv_of_query: tuple[int, ...],
    input_ids: torch.Tensor,
    token_range: tuple[int, int],
    cache: Any = None,
    site: str = SITE_KEY_NAME,
    query_map: QueryMap | None = None,
    query_heads: Sequence[int] = (),
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Per (layer, KV head): (indices [n, k], acts [n, k]) over the question's tokens: its key vector of that
    KV head (``site`` key), every query head of the group (query), or both, rows stacked.

    ``cache``: KV cache of the tokens before ``input_ids`` (extended in place). ``query_map``: query vectors
    are mapped into the key space first (:class:`~s3attn.saes.query_map.QueryMap`). ``query_heads``: only
    these query heads are coded (empty: all).
    """
    sites = check_site(site)
    bad = sorted(h for h in query_heads if not 0 <= h < len(kv_of_query))
    if bad:
        raise S3Error(
            f"--query-heads {bad}: the model has query heads 0-{len(kv_of_query) - 1}; choose among them"
        )
    taps = tap_heads(model, input_ids[None], sorted(saes), sites=sites, cache=cache)
    lo, hi = token_range
    parts: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for layer, sae in saes.items():
        for tap_site in sites:  # rows of several sites are stacked, query rows first
            x_THD = (taps.queries if tap_site == SITE_QUERY else taps.keys)[layer][0, lo:hi]
            if tap_site == SITE_QUERY and query_map is not None:
                x_THD = query_map.apply(layer, x_THD.float())
            n_tok, n_heads, _ = x_THD.shape
            kv_of_head = kv_of_query if tap_site == SITE_QUERY else range(n_heads)
            enc = sae.encode(rearrange(x_THD, "t h d -> (t h) d").to(sae.dtype))  # as the index keys were
            idx_THK = rearrange(enc.top_indices, "(t h) k -> t h k", t=n_tok).cpu().numpy()
            act_THK = rearrange(enc.top_acts, "(t h) k -> t h k", t=n_tok).float().cpu().numpy()
            for kv in sorted(set(kv_of_query)):
                heads = [h for h, g in enumerate(kv_of_head) if g == kv]
                if tap_site == SITE_QUERY and query_heads:
                    heads = [h for h in heads if h in query_heads]
                if not heads:
                    continue
                parts.setdefault((layer, kv), []).append(
                    (
                        idx_THK[:, heads].reshape(-1, idx_THK.shape[-1]),
                        act_THK[:, heads].reshape(-1, act_THK.shape[-1]),
                    )
                )
    return {key: tuple(np.concatenate(arrays) for arrays in zip(*rows)) for key, rows in parts.items()}


class QuestionEncoder:
    """Prompt token ids + the question's token range -> :func:`question_codes`, computing only the question.

    Causal attention makes the question's query vectors independent of the tokens after it, so those are
    dropped; the KV cache of the tokens before it (the chat template's system prompt, constant across
    questions) is computed once and reused, so a question costs a forward over its own tokens only.
    ``half_weights``: run it through :func:`~s3attn.models.half.half_weight_view` (CPU only).
    The forward runs in inference mode (no autograd bookkeeping at all).
    """

    def __init__(
        self,
        model,
        saes: dict[int, torch.nn.Module],
        kv_of_query: tuple[int, ...],
        site: str = SITE_KEY_NAME,
        *,
        half_weights: bool = False,
        query_map: QueryMap | None = None,
        query_heads: Sequence[int] = (),
    ):
        from s3attn.models.half import half_weight_view

        self.model = half_weight_view(model, max(saes)) if half_weights else model
        self.saes, self.kv_of_query = saes, kv_of_query
        self.site, self.query_map, self.query_heads = site, query_map, tuple(query_heads)
        check_site(site)
        self._prefix: tuple[int, ...] | None = None
        self._cache: Any = None

    @torch.inference_mode()
    def codes(
        self, input_ids: torch.Tensor, token_range: tuple[int, int]
    ) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        lo, hi = token_range
        ids = input_ids[:hi].to(self.model.device)
        if lo == 0:
            return question_codes(
                self.model,
                self.saes,
                self.kv_of_query,
                ids,
                (0, hi),
                site=self.site,
                query_map=self.query_map,
                query_heads=self.query_heads,
            )
        prefix = tuple(ids[:lo].tolist())
        if prefix != self._prefix:
            self._cache, self._prefix = prefix_cache(self.model, ids[None, :lo]), prefix
        return question_codes(
            self.model,
            self.saes,
            self.kv_of_query,
            ids[lo:],
            (0, hi - lo),
            _fork(self._cache),
            self.site,
            self.query_map,
            self.query_heads,
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
    """float32 [F]: the question's activation per feature, pooled over its rows."""
    flat_i, flat_a = idx_NK.ravel(), act_NK.ravel().astype(np.float32)
    if pool == "max":
        out = np.zeros(num_latents, np.float32)
        np.maximum.at(out, flat_i, flat_a)
        return out
    return np.bincount(flat_i, weights=flat_a, minlength=num_latents).astype(np.float32)


def head_features(
    codes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]], store, cfg: QuestionConfig
) -> dict[tuple[int, int], HeadFeatures]:
    """Choose the features to read per (layer, KV head), with their weights."""
    num_latents = int(store.meta.num_latents)
    if cfg.read_layers:
        missing = sorted(set(cfg.read_layers) - set(store.meta.layers))
        if missing:
            raise S3Error(f"--read-layers {missing}: the index has layers {list(store.meta.layers)}")
        codes = {key: v for key, v in codes.items() if key[0] in cfg.read_layers}
    per_head = cfg.max_postings // max(1, len(codes))
    mean_df = store.num_tokens * int(store.meta.k) / num_latents
    stop_df = cfg.stop_ratio * mean_df if cfg.stop_ratio > 0 else np.inf
    out = {}
    for key, (idx, act) in codes.items():
        pooled = pool_features(idx, act, num_latents, cfg.pool)
        df = store.doc_freq(*key)
        w = pooled * idf_weights(df, store.num_tokens, cfg.idf)
        w[(df == 0) | (df > stop_df)] = 0.0
        nz = np.flatnonzero(w > 0)
        order = nz[np.argsort(-w[nz], kind="stable")]
        tf = _tier_freq(store, key, df, cfg)[order]
        keep, depths = _plan_tiers(tf, per_head, cfg.max_features)
        kept = np.flatnonzero(keep)
        skipped = int(kept[-1] + 1 - kept.size) if kept.size else int(min(order.size, cfg.max_features))
        top = order[keep]
        if tf.shape[1] == 1:  # whole lists (format 1 or 2, or tiers off): read as before
            out[key] = HeadFeatures(top.astype(np.int64), w[top].astype(np.float32), df[top], skipped)
            continue
        taken = tf[keep] * (np.arange(tf.shape[1]) < depths[keep][:, None])
        out[key] = HeadFeatures(
            top.astype(np.int64),
            w[top].astype(np.float32),
            df[top],
            skipped,
            depths[keep],
            taken.sum(axis=1),
            int(np.count_nonzero(taken)),
        )
    return out


def _tier_freq(store, key: tuple[int, int], df: np.ndarray, cfg: QuestionConfig) -> np.ndarray:
    """int64 [F, tiers]: postings per impact tier of each feature (one tier, the list, when the index
    keeps none, is read whole, or ``cfg.impact_tiers`` is off)."""
    tf = store.tier_freq(*key) if cfg.impact_tiers and hasattr(store, "tier_freq") else None
    if tf is None or tf.shape[1] == 1 or not tf[:, 1:].any():
        return df[:, None]
    return tf


def _plan_tiers(tf_sorted: np.ndarray, budget: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Which lists to read (bool mask) and how many impact tiers of each (int64), for ``tf_sorted`` [n,
    tiers] (postings per tier, best-weighted first): tier 0 of up to ``limit`` lists that still fit in
    ``budget`` postings (:func:`_fits`, as whole lists were chosen before tiers), then tier by tier, in weight
    order, the next tier of each list kept whose tiers so far were all read, while it fits."""
    keep = _fits(tf_sorted[:, 0], budget, limit)
    depths = keep.astype(np.int64)
    left = budget - int(tf_sorted[keep, 0].sum())
    rows = [(int(i), tf_sorted[i].tolist()) for i in np.flatnonzero(keep)]
    for t in range(1, tf_sorted.shape[1]):
        for i, sizes in rows:
            if depths[i] == t and sizes[t] <= left:
                depths[i], left = t + 1, left - sizes[t]
    return keep, depths


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


def score_tokens(store, head_feats: dict[tuple[int, int], HeadFeatures], cfg: QuestionConfig) -> SparseScores:
    """The IDF-weighted co-activation density of the tokens the postings read touch (every other token of
    the index scores 0): cost in proportion to the postings, not to the index's length. Of a list whose
    ``depths`` are given, only its top impact tiers are read (the postings of the highest activations).

    The (position, weight) pairs of every list read are concatenated and summed per touched position in
    float32, in reading order (:func:`s3attn.retrieval.sparse.accumulate`)."""
    positions, values = [], []
    for (layer, kv), hq in head_feats.items():
        if hq.features.size == 0:
            continue
        if hq.depths is None:
            post = store.postings(layer, kv, hq.features)
        else:  # the top impact tiers of each list (format 3)
            post = store.postings(layer, kv, hq.features, hq.depths)
        w = hq.weights[post.feature_slot]
        if cfg.saturation > 0:
            w = w * saturation_factors(
                post.positions, post.feature_slot, cfg.saturation_window, cfg.saturation
            )
        positions.append(post.positions)
        values.append(w * post.acts if cfg.use_posting_acts else w)
    summed = accumulate(positions, values, store.num_tokens)
    return coordinated(summed, positions, cfg.coordination_window, cfg.coordination)


def top_features_near(
    head_feats: dict[tuple[int, int], HeadFeatures], store, start: int, end: int, limit: int = 3
) -> dict[str, list[int]]:
    """For ``--show-spans``: per layer/head, the question features that have postings inside [start, end)."""
    why: dict[str, list[int]] = {}
    for (layer, kv), hq in head_feats.items():
        if hq.features.size == 0:
            continue
        post = store.postings(layer, kv, hq.features)
        inside = (post.positions >= start) & (post.positions < end)
        slots, counts = np.unique(post.feature_slot[inside], return_counts=True)
        order = np.argsort(-(counts * hq.weights[slots]))[:limit]
        if order.size:
            why[f"L{layer}/h{kv}"] = [int(hq.features[s]) for s in slots[order]]
    return why
