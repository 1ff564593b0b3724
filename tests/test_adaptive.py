"""Tests for s3attn.retrieval.adaptive: per-question shares from BM25 coverage and S3 prominence."""

from __future__ import annotations

import pytest

from s3attn.errors import S3Error
from s3attn.retrieval.adaptive import ShareRule, adaptive_spans, prominence, trust, trust_in
from s3attn.retrieval.fusion import FusionConfig, check_fusion_config
from s3attn.retrieval.spans import SOURCE_BIAS, Span


def _bm25(start: int, score: float, coverage: float, length: int = 128) -> Span:
    return Span(start, start + length, score, "bm25", {"terms": ["x"], "bm25": score, "coverage": coverage})


def _s3(start: int, score: float, length: int = 64) -> Span:
    return Span(start, start + length, score, "s3", {})


def _tokens(spans: list[Span]) -> set[int]:
    return {t for s in spans for t in range(s.start, s.end)}


def test_prominence_is_best_over_median():
    assert prominence([]) == 0.0
    assert prominence([_s3(0, 1.0), _s3(100, 1.0), _s3(200, 1.0)]) == 0.0
    assert prominence([_s3(0, 4.0), _s3(100, 1.0), _s3(200, 1.0)]) == pytest.approx(0.75)


def test_share_follows_the_evidence():
    s3 = [_s3(0, 4.0), _s3(100, 1.0), _s3(200, 1.0)]
    rule = ShareRule(coverage_center=0.3, coverage_power=3.0, prominence_scale=0.0, min_share=0.15)
    lexical = trust([_bm25(1000, 9.0, 1.0)], s3, rule)
    paraphrase = trust([_bm25(1000, 9.0, 0.1)], s3, rule)
    assert lexical.bm25_share == pytest.approx(0.85)  # all but S3's least share
    assert paraphrase.bm25_share == pytest.approx(0.15)  # BM25 keeps its least share
    assert trust([_bm25(1000, 9.0, 0.3)], s3, rule).bm25_share == pytest.approx(0.5)  # the centre
    assert trust([_bm25(1000, 9.0, 0.4)], s3, rule).bm25_share > 0.5
    # prominence: a prominent S3 peak (m * s > 1) pulls budget to S3, a flat one (< 1) pushes it to BM25
    pulled = trust([_bm25(1000, 9.0, 0.3)], s3, rule._replace(prominence_scale=2.0))  # m * s = 1.5
    flat = trust(
        [_bm25(1000, 9.0, 0.3)],
        [_s3(0, 1.1), _s3(100, 1.0), _s3(200, 1.0)],
        rule._replace(prominence_scale=2.0),
    )
    assert pulled.bm25_share < 0.5 < flat.bm25_share
    assert trust([], s3, rule).bm25_share == 0.0
    assert trust([_bm25(0, 1.0, 0.5)], [], rule).bm25_share == 1.0


def test_s3_only_find_survives_a_strong_bm25_passage():
    """The case the linear floor got wrong: BM25 likes a passage made of common words (low coverage); S3's
    best span elsewhere must be fed, and first among the S3 spans."""
    bm25 = [_bm25(5000 + 200 * i, 20.0 - i, 0.2) for i in range(10)]
    needle = _s3(300, 5.0)
    s3 = [needle] + [_s3(1000 + 200 * i, 1.0) for i in range(10)]
    spans, t = adaptive_spans([], bm25, s3, 512, ShareRule())
    assert t.bm25_share < 0.5
    assert _tokens([needle]) <= _tokens(spans)
    assert sum(s.length for s in spans) == 512
    assert all("slot" in s.why and s.why["bm25_share"] == round(t.bm25_share, 4) for s in spans)


def test_lexical_question_feeds_bm25_best_and_keeps_s3_best():
    bm25 = [_bm25(5000 + 200 * i, 20.0 - i, 1.0 if i == 0 else 0.3) for i in range(10)]
    s3 = [_s3(300 + 100 * i, 5.0 - 0.1 * i) for i in range(10)]
    bias = [Span(0, 64, 1.0, SOURCE_BIAS, {})]
    rule = ShareRule(coverage_center=0.3, coverage_power=3.0, prominence_scale=0.0, min_share=0.15)
    spans, t = adaptive_spans(bias, bm25, s3, 1024, rule)
    assert t.bm25_share == pytest.approx(0.85)
    covered = _tokens(spans)
    assert _tokens(bias) <= covered and _tokens(bm25[:1]) <= covered and _tokens(s3[:1]) <= covered
    assert sum(s.length for s in spans) == 1024
    # BM25 filled about its share of what the bias left
    bm25_tokens = len(covered & _tokens(bm25))
    assert 0.7 * 960 <= bm25_tokens <= 0.95 * 960


def test_one_side_runs_out_and_leaves_its_room():
    bm25 = [_bm25(5000, 10.0, 1.0)]
    s3 = [_s3(100 * i, 5.0 - 0.1 * i, 64) for i in range(20)]
    spans, _ = adaptive_spans([], bm25, s3, 1024, ShareRule())
    assert sum(s.length for s in spans) == 1024  # S3 filled what BM25 could not


def test_trust_line_and_options():
    spans, t = adaptive_spans([], [_bm25(0, 1.0, 0.9)], [_s3(500, 2.0), _s3(900, 1.0)], 256, ShareRule())
    assert trust_in(spans[0].why) == t._replace(
        bm25_coverage=round(t.bm25_coverage, 4),
        s3_prominence=round(t.s3_prominence, 4),
        bm25_share=round(t.bm25_share, 4),
    )
    assert "bm25 gets" in t.explain() and "90%" in t.explain()
    assert trust_in({}) is None
    assert FusionConfig().fusion == "likelihood"
    with pytest.raises(S3Error, match="--min-share"):
        check_fusion_config(FusionConfig(min_share=0.7))
    with pytest.raises(S3Error, match="--coverage-center"):
        check_fusion_config(FusionConfig(coverage_center=1.0))
    with pytest.raises(S3Error, match="--coverage-power"):
        check_fusion_config(FusionConfig(coverage_power=0))


def test_overlapping_candidates_cost_their_new_tokens_only():
    """BM25's overlapping windows advance its slot by the tokens they add, so at one share it reaches
    further down its ranking than when each window counted whole."""
    from s3attn.retrieval.adaptive import slotted

    windows = [_bm25(1000 + 64 * i, 10.0 - i, 1.0) for i in range(4)]  # 128-token windows, stride 64
    slots = [s.why["slot"] for s in sorted(slotted(windows, 0.5, {}), key=lambda x: x.why["slot"])]
    assert slots == [256.0, 384.0, 512.0, 640.0]
