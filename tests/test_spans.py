"""Tests for s3attn.retrieval.spans and .peaks: smoothing, NMS peaks, span growth, fusion."""

from __future__ import annotations

import numpy as np
import pytest

from s3attn.retrieval.spans import (
    Span,
    bias_spans,
    find_peaks_nms,
    fuse,
    grow_spans,
    merge_why,
    smooth,
    split_at,
)


def _bumps(n: int, centres: list[int], heights: list[float], width: float) -> np.ndarray:
    x = np.arange(n)[:, None]
    return (np.asarray(heights) * np.exp(-0.5 * ((x - np.asarray(centres)) / width) ** 2)).sum(1)


# ---- smooth --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 2, 5, 8, 31])
def test_smooth_equals_convolve_on_interior(window):
    x = np.random.default_rng(window).random(200).astype(np.float32)
    got = smooth(x, window)
    ref = np.convolve(x.astype(np.float64), np.ones(window) / window, mode="same")
    assert got.shape == x.shape
    h = window
    np.testing.assert_allclose(got[h:-h], ref[h:-h], rtol=1e-5, atol=1e-6)
    if window == 1:
        np.testing.assert_array_equal(got, x)
    # edges average only the tokens inside the array
    assert got[0] == pytest.approx(x[: (window - 1) // 2 + 1].mean(), rel=1e-5)
    assert got[-1] == pytest.approx(x[len(x) - 1 - window // 2 :].mean(), rel=1e-5)


@pytest.mark.parametrize("window", [1, 2, 3, 8, 9, 33])
@pytest.mark.parametrize("n", [1, 5, 9, 10, 40])
def test_smooth_every_position_bruteforce(window, n):
    """Each token averages exactly the tokens of its window that lie inside the array."""
    x = np.random.default_rng(n * 100 + window).random(n).astype(np.float32)
    ref = [x[max(0, i - window // 2) : min(n, i + (window - 1) // 2 + 1)].mean() for i in range(n)]
    np.testing.assert_allclose(smooth(x, window), ref, rtol=1e-5, atol=1e-7)


# ---- peaks ---------------------------------------------------------------------------------------------


def _nms_reference(x: np.ndarray, min_distance: int, max_peaks: int, min_score: float = 0.0) -> list[int]:
    cands = [
        i
        for i in range(len(x))
        if (i == 0 or x[i] >= x[i - 1]) and (i == len(x) - 1 or x[i] >= x[i + 1]) and x[i] > min_score
    ]
    cands.sort(key=lambda i: (-x[i], i))
    out: list[int] = []
    for c in cands:
        if len(out) == max_peaks:
            break
        if all(abs(c - p) >= min_distance for p in out):
            out.append(c)
    return out


def test_nms_peaks_are_apart_include_global_max_and_match_reference():
    rng = np.random.default_rng(1)
    x = smooth(rng.random(3000), 5)
    peaks = find_peaks_nms(x, min_distance=40, max_peaks=30)
    assert peaks.dtype == np.int64 and 0 < len(peaks) <= 30
    assert peaks[0] == int(np.argmax(x))
    d = np.abs(peaks[:, None] - peaks[None, :]) + np.eye(len(peaks), dtype=np.int64) * 10**9
    assert d.min() >= 40
    assert np.all(np.diff(x[peaks]) <= 0)  # highest first
    assert peaks.tolist() == _nms_reference(x, 40, 30)


@pytest.mark.parametrize(("min_distance", "max_peaks"), [(1, 5), (7, 40), (30, 1000)])
def test_nms_with_many_ties_matches_reference(min_distance, max_peaks):
    # integer scores: many equal local maxima, and more candidates than one sorted block holds
    x = np.random.default_rng(min_distance).integers(0, 5, 3000).astype(np.float32)
    got = find_peaks_nms(x, min_distance=min_distance, max_peaks=max_peaks)
    assert got.tolist() == _nms_reference(x, min_distance, max_peaks)


@pytest.mark.parametrize("seed", range(6))
def test_nms_on_sparse_clustered_scores_matches_reference(seed, monkeypatch):
    """Scores like a real index's: mostly zero, a dense cluster of high maxima that suppress each other
    (so the best blocks run out and more are looked at), a length that is no multiple of the block."""
    import s3attn.retrieval.peaks as sp

    tiers: list[int] = []
    real = sp._candidates_by_score
    monkeypatch.setattr(sp, "_candidates_by_score", lambda *a: (tiers.append(1) or b for b in real(*a)))
    rng = np.random.default_rng(seed)
    n = 40_000 + int(rng.integers(1, 255))
    x = rng.random(n) * (rng.random(n) < 0.05)
    at = int(rng.integers(0, n - 2000))
    x[at : at + 2000] += 5 + rng.random(2000)  # one cluster: ~1000 local maxima above everything else
    x[-1] = 7.0  # the last token is a candidate too
    min_score = [0.0, 0.5][seed % 2]
    for min_distance, max_peaks in ((64, 20), (3, 300), (1000, 30)):
        tiers.clear()
        got = find_peaks_nms(x, min_distance=min_distance, max_peaks=max_peaks, min_score=min_score)
        want = _nms_reference(x, min_distance, max_peaks, min_score)
        assert got.tolist() == want, (min_distance, max_peaks)
        if min_distance == 1000:
            assert len(tiers) > 1  # the first blocks did not suffice: the lowering path ran


def test_nms_finds_three_bump_centres():
    x = _bumps(1000, [150, 480, 820], [3.0, 5.0, 2.0], 20.0)
    x += 0.01 * np.random.default_rng(2).random(1000)
    peaks = find_peaks_nms(smooth(x, 3), min_distance=50, max_peaks=10, min_score=0.5)
    assert sorted(peaks.tolist()) == pytest.approx([150, 480, 820], abs=2)
    assert len(peaks) == 3
    assert abs(int(peaks[0]) - 480) <= 2  # tallest first


def test_nms_edge_cases():
    assert find_peaks_nms(np.zeros(10), min_distance=2, max_peaks=5).size == 0  # nothing above min_score
    assert find_peaks_nms(np.array([1.0, 2.0, 3.0]), min_distance=1, max_peaks=0).size == 0
    assert find_peaks_nms(np.array([3.0, 2.0, 1.0, 5.0]), min_distance=1, max_peaks=5).tolist() == [3, 0]


# ---- grow_spans ----------------------------------------------------------------------------------------


def test_grow_spans_respects_frac_exactly():
    x = np.concatenate([np.zeros(50), np.arange(1, 11), np.arange(9, 0, -1), np.zeros(50)]).astype(np.float32)
    p = int(np.argmax(x))  # value 10 at index 59
    (span,) = grow_spans(x, np.array([p]), frac=0.5, max_len=256, min_len=1)
    above = np.flatnonzero(x >= 5.0)
    assert (span.start, span.end) == (int(above[0]), int(above[-1]) + 1)
    assert span.score == pytest.approx(10.0) and span.source == "s3" and span.why == {"peaks": [p]}
    (wide,) = grow_spans(x, np.array([p]), frac=0.2, max_len=256, min_len=1)
    assert wide.start < span.start and wide.end > span.end


def test_grow_spans_max_len_min_len_and_doc_boundaries():
    plateau = np.zeros(2000, dtype=np.float32)
    plateau[200:1200] = 1.0
    (s,) = grow_spans(plateau, np.array([700]), frac=0.5, max_len=64, min_len=16)
    assert s.end - s.start == 64 and s.start <= 700 < s.end and abs((s.start + s.end) / 2 - 700) <= 1

    spike = np.zeros(500, dtype=np.float32)
    spike[250] = 1.0
    (s,) = grow_spans(spike, np.array([250]), frac=0.5, max_len=64, min_len=16)
    assert s.end - s.start == 16 and s.start <= 250 < s.end

    # a bump straddling a document boundary at 1000: spans stay on their peak's side
    x = _bumps(2000, [990, 1012], [1.0, 1.0], 30.0).astype(np.float32)
    bounds = np.array([0, 1000, 1500])
    left, right = grow_spans(x, np.array([990, 1012]), frac=0.1, max_len=256, min_len=16, boundaries=bounds)
    assert left.end <= 1000 and left.start >= 0
    assert right.start >= 1000 and right.end <= 1500
    assert left.end == 1000 and right.start == 1000  # they grew up to the boundary
    # min_len widening near a boundary stays inside the document too
    spike = np.zeros(2000, dtype=np.float32)
    spike[1001] = 1.0
    (s,) = grow_spans(spike, np.array([1001]), frac=0.5, max_len=64, min_len=16, boundaries=bounds)
    assert (s.start, s.end) == (1000, 1016)


# ---- bias_spans ----------------------------------------------------------------------------------------


def test_bias_spans_per_document():
    spans = bias_spans([(0, 100), (100, 105), (105, 300)], first=8, last=16)
    got = [(s.start, s.end, s.why["bias"], s.why["doc"]) for s in spans]
    assert got == [
        (0, 8, "first", 0),
        (84, 100, "last", 0),
        (100, 105, "first", 1),
        (105, 113, "first", 2),
        (284, 300, "last", 2),
    ]
    assert all(s.source == "bias" for s in spans)


# ---- fuse ----------------------------------------------------------------------------------------------


def _s3(a: int, b: int, score: float, **why) -> Span:
    return Span(a, b, score, "s3", why or {"peaks": [(a + b) // 2]})


def test_fuse_merges_overlaps_and_adjacent_in_document_order_with_sources_and_why():
    s3 = [
        _s3(500, 540, 3.0, features=[1, 2]),
        _s3(100, 130, 5.0, features=[7]),
        _s3(530, 560, 2.0, features=[2, 9]),
    ]
    bm = [Span(130, 150, 1.0, "bm25", {"terms": ["zebra"], "bm25": 1.0})]
    bias = bias_spans([(0, 1000)], first=4, last=4)
    out = fuse([s3, bm, bias], budget=10_000)
    assert [(s.start, s.end) for s in out] == [(0, 4), (100, 150), (500, 560), (996, 1000)]
    assert out[1].source == "s3+bm25" and out[1].score == 5.0
    assert out[1].why == {"features": [7], "terms": ["zebra"], "bm25": 1.0}
    assert out[2].source == "s3" and out[2].score == 3.0 and out[2].why == {"features": [1, 2, 9]}
    assert out[0].source == "bias" and out[0].why == {"bias": "first", "doc": 0}


def test_fuse_exact_budget_priority_and_truncation():
    bias = bias_spans([(0, 1000)], first=4, last=4)  # 8 tokens
    s3 = [_s3(100, 140, 5.0), _s3(300, 340, 9.0), _s3(600, 640, 1.0)]
    out = fuse([s3, bias], budget=60)
    assert sum(s.end - s.start for s in out) == 60
    assert [s.start for s in out] == sorted(s.start for s in out)
    # bias (8) + best span 300..340 (40) + 12 tokens of 100..140 around its peak 120
    assert [(s.start, s.end) for s in out] == [(0, 4), (114, 126), (300, 340), (996, 1000)]


def test_fuse_tiers_take_a_source_before_higher_scores():
    bias = bias_spans([(0, 1000)], first=4, last=4)  # 8 tokens
    s3 = [_s3(100, 140, 9.0)]
    bm = [Span(300, 330, 0.5, "bm25", {}), Span(600, 630, 0.2, "bm25", {})]
    by_score = fuse([bias, bm, s3], budget=78)  # default: the s3 span outranks both passages
    assert [(s.start, s.end) for s in by_score] == [(0, 4), (100, 140), (300, 330), (996, 1000)]
    tiered = fuse([bias, bm, s3], budget=78, first=("bias", "bm25"))  # passages first, s3 gets the rest
    assert [(s.start, s.end) for s in tiered] == [(0, 4), (115, 125), (300, 330), (600, 630), (996, 1000)]


def test_fuse_budget_smaller_than_bias():
    bias = bias_spans([(0, 1000), (1000, 2000)], first=16, last=16)
    out = fuse([[_s3(500, 540, 9.0)], bias], budget=20)
    # the first anchor of doc 0 is taken whole, then the last anchor of doc 0 keeps its last 4 tokens
    assert [(s.start, s.end, s.source) for s in out] == [(0, 16, "bias"), (996, 1000, "bias")]
    assert fuse([bias], budget=0) == []


def test_fuse_random_property_total_is_min_budget_union():
    rng = np.random.default_rng(3)
    for trial in range(30):
        spans = []
        for _ in range(int(rng.integers(1, 15))):
            a = int(rng.integers(0, 500))
            spans.append(_s3(a, a + int(rng.integers(1, 60)), float(rng.random())))
        union = np.zeros(600, dtype=bool)
        for s in spans:
            union[s.start : s.end] = True
        budget = int(rng.integers(1, 400))
        out = fuse([spans], budget)
        total = sum(s.end - s.start for s in out)
        assert total == min(budget, int(union.sum())), trial
        starts = np.array([s.start for s in out])
        ends = np.array([s.end for s in out])
        assert np.all(starts[1:] > ends[:-1])  # sorted, disjoint, not adjacent
        for s in out:
            assert union[s.start : s.end].all()


def test_merge_why_rules():
    a = {"terms": ["x"], "bm25": 1.0, "bias": "first", "meta": {"f": [1]}}
    b = {"terms": ["y", "x"], "bm25": 3.0, "bias": "last", "meta": {"f": [2]}, "new": 1}
    assert merge_why(a, b) == {
        "terms": ["x", "y"],
        "bm25": 3.0,
        "bias": ["first", "last"],
        "meta": {"f": [1, 2]},
        "new": 1,
    }


def test_split_at_cuts_spans_at_document_starts():
    spans = [
        Span(10, 50, 0.5, "s3+bm25", {"x": 1}),
        Span(60, 70, 0.2, "bm25", {}),
        Span(100, 130, 0.1, "s3", {}),
    ]
    got = split_at(spans, np.array([0, 30, 40, 60, 100, 130]))
    assert [(s.start, s.end) for s in got] == [(10, 30), (30, 40), (40, 50), (60, 70), (100, 130)]
    assert {(s.score, s.source) for s in got[:3]} == {(0.5, "s3+bm25")} and got[0].why == {"x": 1}
    assert split_at(spans, np.array([], dtype=np.int64)) == spans
