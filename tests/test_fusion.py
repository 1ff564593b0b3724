"""Tests for s3attn.retrieval.fusion: cross-scoring of BM25 passages and S3 spans, linear / rrf / tiered."""

from __future__ import annotations

import numpy as np
import pytest

from s3attn.errors import S3Error
from s3attn.retrieval.fusion import (
    FusionConfig,
    fused_candidates,
    hybrid_spans,
    normalised,
    overlap_max,
    range_max,
)
from s3attn.retrieval.spans import Span, bias_spans


def plain(**options) -> FusionConfig:
    """A FusionConfig without the shipped relevance floor (linear: bm25_weight 0.5, min_relevance 0)."""
    return FusionConfig(**{"bm25_weight": 0.5, "min_relevance": 0.0, **options})


def _bm25(start: int, end: int, score: float) -> Span:
    return Span(start, end, score, "bm25", {"terms": ["x"], "bm25": score})


def _s3(start: int, end: int, score: float) -> Span:
    return Span(start, end, score, "s3", {"peaks": [(start + end) // 2]})


def test_range_max_matches_loop():
    rng = np.random.default_rng(0)
    x = rng.random(500)
    spans = [
        Span(a, a + int(w), 0.0, "bm25", {})
        for a, w in zip(rng.integers(0, 480, 40), rng.integers(1, 60, 40))
    ]
    spans.append(Span(490, 520, 0.0, "bm25", {}))  # runs past the end: clipped
    got = range_max(spans, x)
    ref = [x[s.start : min(s.end, x.size)].max() for s in spans]
    np.testing.assert_allclose(got, ref)
    assert range_max([], x).size == 0


def test_overlap_max_needs_a_shared_token():
    spans = [Span(0, 10, 0, "s3", {}), Span(10, 20, 0, "s3", {}), Span(50, 60, 0, "s3", {})]
    others = [Span(5, 10, 0, "bm25", {}), Span(19, 30, 0, "bm25", {})]
    got = overlap_max(spans, others, np.array([0.4, 0.9]))
    np.testing.assert_allclose(got, [0.4, 0.9, 0.0])  # [10, 20) touches [5, 10) at no token


def test_linear_scores_each_candidate_by_both_retrievers():
    sm = np.zeros(1000)
    sm[100:110] = 4.0  # best S3 peak, inside s3 span A
    sm[600:610] = 2.0  # half as strong, inside BM25 passage P2 only
    bm25 = [_bm25(90, 218, 10.0), _bm25(600, 728, 5.0), _bm25(800, 928, 2.0)]
    s3 = [_s3(80, 140, 4.0), _s3(300, 350, 3.0)]
    out = fused_candidates(bm25, s3, sm, fusion="linear", bm25_weight=0.6)
    by = {(c.start, c.source): c for c in out}
    # P1 overlaps the best S3 peak: 0.6 * 1 + 0.4 * 1
    assert by[(90, "bm25")].score == pytest.approx(1.0)
    assert by[(600, "bm25")].score == pytest.approx(0.6 * 0.5 + 0.4 * 0.5)
    assert by[(800, "bm25")].score == pytest.approx(0.6 * 0.2)
    # S3 span A overlaps P1 (BM25 1.0); span B has no BM25 support
    assert by[(80, "s3")].score == pytest.approx(1.0)
    assert by[(300, "s3")].score == pytest.approx(0.4 * 0.75)
    assert by[(300, "s3")].why["bm25_norm"] == 0.0 and by[(300, "s3")].why["s3_norm"] == 0.75
    # weight 1 is BM25 alone, weight 0 S3 alone
    only_b = {
        (c.start, c.source): c.score for c in fused_candidates(bm25, s3, sm, fusion="linear", bm25_weight=1)
    }
    assert only_b[(600, "bm25")] == pytest.approx(0.5) and only_b[(300, "s3")] == 0.0
    only_s = {
        (c.start, c.source): c.score for c in fused_candidates(bm25, s3, sm, fusion="linear", bm25_weight=0)
    }
    assert only_s[(800, "bm25")] == 0.0 and only_s[(300, "s3")] == pytest.approx(0.75)


def test_rrf_adds_the_other_ranking_where_candidates_overlap():
    sm = np.zeros(1000)
    bm25 = [_bm25(0, 128, 9.0), _bm25(500, 628, 3.0)]
    s3 = [_s3(520, 560, 5.0), _s3(900, 950, 1.0)]
    out = {(c.start, c.source): c.score for c in fused_candidates(bm25, s3, sm, fusion="rrf", rrf_k=60)}
    assert out[(0, "bm25")] == pytest.approx(1 / 61)
    assert out[(500, "bm25")] == pytest.approx(1 / 62 + 1 / 61)  # BM25 rank 2, overlaps S3 rank 1
    assert out[(520, "s3")] == pytest.approx(1 / 61 + 1 / 62)
    assert out[(900, "s3")] == pytest.approx(1 / 62)


def test_fused_candidates_refuses_bad_options():
    with pytest.raises(S3Error, match="bm25_weight"):
        fused_candidates([_bm25(0, 5, 1)], [], np.zeros(10), fusion="linear", bm25_weight=1.5)
    with pytest.raises(S3Error, match="fusion"):
        fused_candidates([], [], np.zeros(10), fusion="tiered")
    with pytest.raises(S3Error, match="choose one of"):
        hybrid_spans([], [], [], np.zeros(10), 10, plain(fusion="sum"))
    assert fused_candidates([], [], np.zeros(10), fusion="rrf") == []


@pytest.mark.parametrize("fusion", ["tiered", "linear", "rrf"])
def test_hybrid_spans_budget_bias_and_order(fusion):
    rng = np.random.default_rng(1)
    n = 5000
    sm = rng.random(n)
    bm25 = [
        _bm25(int(a), int(a) + 128, float(s)) for a, s in zip(rng.integers(0, n - 128, 30), rng.random(30))
    ]
    s3 = [_s3(int(a), int(a) + 64, float(sm[a : a + 64].max())) for a in rng.integers(0, n - 64, 20)]
    bias = bias_spans([(0, n)], 64, 64)
    out = hybrid_spans(bias, bm25, s3, sm, 700, plain(fusion=fusion))
    assert sum(s.length for s in out) == 700
    assert out[0].start == 0 and out[-1].end == n  # bias spans always kept
    assert all(a.end < b.start for a, b in zip(out, out[1:]))  # merged, document order


def test_linear_min_relevance_drops_weak_candidates():
    sm = np.zeros(1000)
    sm[10] = 1.0
    bm25 = [_bm25(0, 50, 10.0), _bm25(400, 450, 1.0)]
    s3 = [_s3(5, 20, 1.0)]
    keep_all = hybrid_spans([], bm25, s3, sm, 500, plain(fusion="linear", bm25_weight=0.5))
    strict = hybrid_spans([], bm25, s3, sm, 500, plain(fusion="linear", bm25_weight=0.5, min_relevance=0.5))
    assert any(s.start == 400 for s in keep_all)
    assert [(s.start, s.end) for s in strict] == [(0, 50)]


def test_tiered_matches_its_definition():
    """tiered: BM25 passages up to bm25_share of the budget after bias, then S3 spans >= s3_min_relevance."""
    bm25 = [_bm25(100, 200, 5.0), _bm25(300, 400, 4.0), _bm25(500, 600, 3.0)]
    s3 = [_s3(700, 750, 2.0), _s3(800, 850, 0.5)]
    out = hybrid_spans(
        [], bm25, s3, np.zeros(1000), 400, plain(fusion="tiered", bm25_share=0.5, s3_min_relevance=0.5)
    )
    assert [(s.start, s.end) for s in out] == [(100, 200), (300, 400), (700, 750)]
    assert normalised([]) == []
