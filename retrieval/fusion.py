"""Hybrid fusion: BM25 passages + S3 spans + bias anchors -> one budgeted span list (``hybrid`` mode).

Ways to rank the candidates of the two retrievers (``FusionConfig.fusion``, i.e.
``RetrievalConfig.hybrid.fusion``):

``tiered``  BM25's best passages first, up to ``bm25_share`` of the budget left after the bias spans, then
            the S3 spans scoring at least ``s3_min_relevance`` of the best S3 span into what is left.
``linear``  a convex combination of the two retrievers' max-normalised scores (as in Elasticsearch's linear
            retriever and OpenSearch's normalisation processor; Bruch et al. 2023, "An Analysis of Fusion
            Functions for Hybrid Retrieval"): every candidate, whoever found it, is scored by both,
            ``fused = w * bm25 + (1 - w) * s3``, ``w = bm25_weight``. A candidate's BM25 score is its own
            (a passage) or that of the best BM25 passage overlapping it (an S3 span; 0 if none); its S3
            score is its own (an S3 span) or the highest smoothed S3 score inside it (a passage), both over
            the best of their retriever. Candidates below ``min_relevance`` of the best fused score are
            dropped; the rest fill the budget by fused score.
``adaptive`` per question, shares of the budget from BM25's term coverage and S3's peak
            prominence, the two rankings interleaved at those shares, no relevance floor (see
            :mod:`s3attn.retrieval.adaptive`).
``likelihood`` (default) the model reads each candidate alone and ranks them by how likely it then finds
            the question (query likelihood; it needs the model, so the ``Retriever`` runs it: see
            :mod:`s3attn.retrieval.likelihood`).
``rrf``     reciprocal rank fusion (Cormack et al. 2009; Elasticsearch's and Lucene's default hybrid):
            ``sum over the two rankings of 1 / (rrf_k + rank)``, a candidate taking in the other ranking the
            best rank of the items that overlap it.

Everything here is model-free numpy over global token positions; the chosen spans come back merged, in
document order, through :func:`s3attn.retrieval.spans.fuse`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s3attn.errors import S3Error
from s3attn.index_builder.schema import concat_ranges
from s3attn.retrieval.adaptive import DEFAULT_RULE, ShareRule, adaptive_spans
from s3attn.retrieval.spans import SOURCE_BIAS, SOURCE_BM25, Span, fuse
from s3attn.retrieval.sparse import SparseScores
from s3attn.retrieval.steps import StepScores, range_max_steps, steps_of

FUSIONS = ("adaptive", "likelihood", "tiered", "linear", "rrf")
MODEL_FUSIONS = ("likelihood",)  # need the model: run by the Retriever, not hybrid_spans


@dataclass
class FusionConfig:
    """How the hybrid mode ranks BM25 passages against S3 spans (see the module docstring)."""

    fusion: str = "likelihood"
    """How hybrid ranks BM25 passages against S3 spans: likelihood (the model ranks every candidate by the
    likelihood of the question after it; a forward pass over 1 + likelihood_pool budgets per question),
    adaptive (per question, budget shares from BM25's term coverage and S3's peak prominence; no model
    pass), linear (bm25_weight x BM25 + (1 - bm25_weight) x S3, each max-normalised, every candidate scored
    by both), tiered (BM25 first, up to bm25_share of the budget, then
    S3 spans) or rrf (reciprocal rank fusion). See s3attn.retrieval.fusion."""
    likelihood_pool: float = 3.0
    """likelihood: S3's candidates are its spans within this multiple of the budget (BM25's: its feed at the
    budget), so the model can bring in a find S3 ranked below the budget; the forward pass grows with it.
    3 was chosen on tuning seeds (bench/rerank_likelihood.py --s3-pool 3)."""
    coverage_center: float = DEFAULT_RULE.coverage_center
    """adaptive: BM25 term coverage at which both retrievers get the same share (above it BM25 gets more)."""
    coverage_power: float = DEFAULT_RULE.coverage_power
    """adaptive: how sharply the share moves with coverage around coverage_center (a logistic slope)."""
    prominence_scale: float = DEFAULT_RULE.prominence_scale
    """adaptive: S3's peak prominence s (0-1) pulls the budget to S3 when prominence_scale x s is above 1
    and pushes it to BM25 below 1; 0 ignores prominence."""
    min_share: float = DEFAULT_RULE.min_share
    """adaptive: least share of the budget (after the bias spans) each retriever with candidates gets, so
    its best candidates are always fed."""
    bm25_share: float = 0.6
    """tiered: share of the budget left after the bias spans that BM25 passages take first (S3 spans
    fill the rest, and any of it BM25 leaves unused)."""
    s3_min_relevance: float = 0.5
    """tiered: S3 spans scoring below this fraction of the best S3 span are dropped (0 keeps all), so weak
    co-activation does not fill the budget with noise; the budget may then be left partly unused."""
    bm25_weight: float = 0.6
    """linear: weight of the normalised BM25 score in the fused score (the S3 score gets the rest)."""
    rrf_k: float = 60.0
    """rrf: the rank constant k of 1 / (k + rank)."""
    min_relevance: float = 0.5
    """linear, rrf: candidates whose fused score is below this fraction of the best are dropped (0 keeps
    all), so the budget is not filled with weak candidates; hybrid may then feed fewer tokens than it."""


def share_rule(cfg: FusionConfig) -> ShareRule:
    """The adaptive fusion's share rule of ``cfg``."""
    return ShareRule(cfg.coverage_center, cfg.coverage_power, cfg.prominence_scale, cfg.min_share)


def check_fusion(fusion: str, option: str = "fusion") -> str:
    """``fusion`` if it is one of FUSIONS, else a one-line S3Error naming ``option``."""
    if fusion not in FUSIONS:
        raise S3Error(f"{option} {fusion}: choose one of {', '.join(FUSIONS)}")
    return fusion


def check_fusion_config(cfg: FusionConfig) -> FusionConfig:
    """``cfg`` if its values are valid, else a one-line S3Error naming the option."""
    check_fusion(cfg.fusion, "--fusion")
    if not 0.0 <= cfg.min_share <= 0.5:
        raise S3Error(f"--min-share {cfg.min_share}: must be in [0, 0.5]")
    if cfg.prominence_scale < 0:
        raise S3Error(f"--prominence-scale {cfg.prominence_scale}: must be at least 0")
    if not 0.0 < cfg.coverage_center < 1.0:
        raise S3Error(f"--coverage-center {cfg.coverage_center}: must be in (0, 1)")
    if cfg.coverage_power <= 0:
        raise S3Error(f"--coverage-power {cfg.coverage_power}: must be above 0")
    for name in ("bm25_share", "s3_min_relevance", "bm25_weight", "min_relevance"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise S3Error(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be in [0, 1]")
    if cfg.rrf_k <= 0:
        raise S3Error(f"--rrf-k {cfg.rrf_k}: must be above 0")
    if not 1.0 <= cfg.likelihood_pool <= 8.0:
        raise S3Error(f"--likelihood-pool {cfg.likelihood_pool}: must be in [1, 8]")
    return cfg


def normalised(spans: list[Span]) -> list[Span]:
    """Scores divided by the best one (unchanged when none is positive)."""
    top = max((s.score for s in spans), default=0.0)
    return [s._replace(score=s.score / top) for s in spans] if top > 0 else spans


def _bounds(spans: list[Span]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([s.start for s in spans], dtype=np.int64),
        np.array([s.end for s in spans], dtype=np.int64),
    )


def overlap_max(spans: list[Span], others: list[Span], values: np.ndarray) -> np.ndarray:
    """float64 [len(spans)]: per span, the max of ``values`` (one per ``others`` item) over the ``others``
    that share at least one token with it; 0 where none does."""
    if not spans or not others:
        return np.zeros(len(spans))
    a0, a1 = _bounds(spans)
    b0, b1 = _bounds(others)
    hit_AB = (a0[:, None] < b1[None, :]) & (b0[None, :] < a1[:, None])
    vals = np.where(hit_AB, np.asarray(values, dtype=np.float64)[None, :], 0.0)
    return vals.max(axis=1)


def range_max(spans: list[Span], scores_T: np.ndarray | SparseScores | StepScores) -> np.ndarray:
    """float64 [len(spans)]: the max of ``scores_T`` inside each span (one reduceat, no Python loop);
    ``SparseScores`` / ``StepScores``: read from the runs inside the spans, untouched tokens scoring 0."""
    if not spans:
        return np.zeros(0)
    a0, a1 = _bounds(spans)
    if isinstance(scores_T, (SparseScores, StepScores)):
        return range_max_steps(a0, a1, steps_of(scores_T))
    n = scores_T.size
    a0, a1 = np.clip(a0, 0, n), np.clip(a1, 0, n)
    out = np.zeros(len(spans))
    ok = a1 > a0
    if ok.any():
        # the spans' tokens gathered end to end (not the whole score array), then one reduceat
        lens = a1[ok] - a0[ok]
        vals = np.asarray(scores_T)[concat_ranges(a0[ok], lens)].astype(np.float64)
        out[ok] = np.maximum.reduceat(vals, np.cumsum(lens) - lens)
    return out


def _ranks(spans: list[Span]) -> np.ndarray:
    """1-based rank of each span by score (descending, ties by start)."""
    order = sorted(range(len(spans)), key=lambda i: (-spans[i].score, spans[i].start))
    rank = np.empty(len(spans), dtype=np.float64)
    rank[order] = np.arange(1, len(spans) + 1)
    return rank


def fused_candidates(
    bm25: list[Span],
    s3: list[Span],
    smoothed: np.ndarray | SparseScores | StepScores,
    *,
    fusion: str,
    bm25_weight: float = FusionConfig.bm25_weight,
    rrf_k: float = FusionConfig.rrf_k,
) -> list[Span]:
    """Both retrievers' candidates, each scored by ``fusion`` (``linear`` or ``rrf``); ``why`` gains
    ``fused`` (the score) and, for ``linear``, the ``bm25_norm`` / ``s3_norm`` it was made of.

    ``bm25``: passages, scores raw or normalised; ``s3``: S3 spans whose score is their smoothed peak;
    ``smoothed``: the smoothed S3 scores (what the S3 spans' peaks were read from): ``StepScores`` (the
    question path) or one per token.
    """
    if fusion not in ("linear", "rrf"):
        raise S3Error(f"fusion {fusion!r}: fused_candidates takes linear or rrf")
    if not 0.0 <= bm25_weight <= 1.0:
        raise S3Error(f"bm25_weight={bm25_weight} must be in [0, 1]")
    s3_top = max((x.score for x in s3), default=0.0)  # the best smoothed peak
    bm25, s3 = normalised(bm25), normalised(s3)
    cands = bm25 + s3
    if not cands:
        return []
    own_b = np.array([x.score for x in bm25], dtype=np.float64)
    own_s = np.array([x.score for x in s3], dtype=np.float64)
    if fusion == "linear":
        inside_s = range_max(bm25, smoothed) / s3_top if s3_top > 0 else np.zeros(len(bm25))
        b = np.concatenate([own_b, overlap_max(s3, bm25, own_b)])
        s = np.clip(np.concatenate([inside_s, own_s]), 0.0, 1.0)
        fused = bm25_weight * b + (1.0 - bm25_weight) * s
        extra = [{"bm25_norm": round(float(x), 4), "s3_norm": round(float(y), 4)} for x, y in zip(b, s)]
    else:
        inv_b, inv_s = 1.0 / (rrf_k + _ranks(bm25)), 1.0 / (rrf_k + _ranks(s3))
        b = np.concatenate([inv_b, overlap_max(s3, bm25, inv_b)])
        s = np.concatenate([overlap_max(bm25, s3, inv_s), inv_s])
        fused = b + s
        extra = [{} for _ in cands]
    return [
        c._replace(score=float(f), why={**c.why, **e, "fused": round(float(f), 5)})
        for c, f, e in zip(cands, fused, extra)
    ]


def hybrid_spans(
    bias: list[Span],
    bm25_hits: list[Span],
    s3: list[Span],
    smoothed: np.ndarray | SparseScores | StepScores,
    budget: int,
    cfg: FusionConfig,
) -> list[Span]:
    """The ``hybrid`` mode's spans within ``budget``: the bias spans first, then the candidates of
    ``bm25_hits`` (BM25 passages) and ``s3`` (S3 spans) ranked by ``cfg.fusion`` (see the module docstring);
    ``smoothed``: the smoothed S3 scores the spans were read from (see :func:`fused_candidates`)."""
    if check_fusion(cfg.fusion) in MODEL_FUSIONS:
        raise S3Error(
            f"fusion {cfg.fusion}: it needs the model; the Retriever runs it (retrieval.likelihood)"
        )
    if cfg.fusion == "adaptive":
        return adaptive_spans(bias, bm25_hits, s3, budget, share_rule(cfg))[0]
    if cfg.fusion == "tiered":
        rest = max(0, budget - sum(s.length for s in bias))
        bm25 = normalised(fuse([bm25_hits], int(rest * cfg.bm25_share))) if bm25_hits else []
        strong = [s for s in normalised(s3) if s.score >= cfg.s3_min_relevance]
        # BM25's passages (capped at their share) are kept whole; S3 spans fill the rest
        return fuse([bias, bm25, strong], budget, first=(SOURCE_BIAS, SOURCE_BM25))
    cands = fused_candidates(
        bm25_hits, s3, smoothed, fusion=cfg.fusion, bm25_weight=cfg.bm25_weight, rrf_k=cfg.rrf_k
    )
    best = max((c.score for c in cands), default=0.0)
    cands = [c for c in cands if c.score >= cfg.min_relevance * best]
    return fuse([bias, cands], budget, first=(SOURCE_BIAS,))
