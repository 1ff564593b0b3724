"""SparseScores (s3attn.retrieval.sparse): the question path on the touched tokens only gives, bit for bit,
what the dense per-token arrays give, and never allocates anything of the index's length."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from s3attn.errors import S3Error
from s3attn.index_builder.schema import in_sorted
from s3attn.retrieval.fusion import range_max
from s3attn.retrieval.spans import Span, find_peaks_nms, grow_spans, peak_spans, smooth
from s3attn.retrieval.sparse import SparseScores, accumulate, from_dense, in_ranges
from s3attn.retrieval.steps import StepScores, steps_of


def _scattered(seed: int) -> np.ndarray:
    """float32 scores like a question's: mostly zero, touched tokens alone and in clusters, edges too."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12_000))
    x = np.zeros(n, np.float32)
    k = max(1, int(n * rng.choice([0.001, 0.01, 0.1, 0.6])))
    x[rng.integers(0, n, k)] = (rng.random(k) * rng.choice([1e-3, 1.0, 50.0])).astype(np.float32)
    if seed % 3 == 0:
        x[0] = x[-1] = 2.0
    return x


def test_accumulate_equals_adding_into_a_dense_array():
    rng = np.random.default_rng(0)
    n = 5000
    lists = [rng.integers(0, n, int(rng.integers(0, 3000))) for _ in range(7)]
    vals = [rng.random(p.size).astype(np.float32) * 3 for p in lists]
    ref = np.zeros(n, np.float32)
    for p, v in zip(lists, vals):
        np.add.at(ref, p, v)
    got = accumulate(lists, vals, n)
    assert got.positions_N.dtype == np.int64 and np.all(np.diff(got.positions_N) > 0)
    np.testing.assert_array_equal(got.dense(), ref)  # bit for bit: same float32 sums, same order
    empty = accumulate([], [], 10)
    assert empty.size == 0 and empty.num_tokens == 10 and not empty.dense().any()


@pytest.mark.parametrize("window", [1, 2, 3, 8, 9, 12, 32, 33, 64])
def test_sparse_smooth_equals_dense_bit_for_bit(window):
    for seed in range(12):
        x = _scattered(seed * 100 + window)
        got = smooth(from_dense(x), window)
        assert isinstance(got, StepScores) and got.num_tokens == x.size
        np.testing.assert_array_equal(got.dense(), smooth(x, window))


@pytest.mark.parametrize("window", [2, 3, 8, 9, 16])
def test_sparse_smooth_joins_neighbourhoods_exactly_at_the_window(window):
    """Touched tokens window - 1, window and window + 1 apart: reaches that overlap, abut and part; the
    compacted buffer must read zeros exactly where the whole index has untouched tokens."""
    n = 40 * window + 50
    x = np.zeros(n, np.float32)
    at = np.cumsum(np.tile([window - 1, window, window + 1, 3 * window], 8))[: 8 * 4]
    at = at[at < n - 1]
    rng = np.random.default_rng(window)
    x[at] = (rng.random(at.size) * 10 + 1).astype(np.float32)
    x[0] = x[-1] = 3.0  # both ends of the index too
    got = smooth(from_dense(x), window)
    np.testing.assert_array_equal(got.dense(), smooth(x, window))
    assert np.array_equal(got.tokens().positions_N, np.flatnonzero(smooth(x, window)))


@pytest.mark.parametrize("window", [8, 64, 65])
@pytest.mark.parametrize("at", [[0], [1, 3], [-1], [0, -1]])
def test_sparse_smooth_neighbourhoods_shorter_than_the_window(window, at):
    """A question touching only tokens at the ends of a long index: their neighbourhoods, clipped there, add
    up to fewer tokens than the window (this raised an IndexError before)."""
    x = np.zeros(5000, np.float32)
    x[at] = np.arange(1, len(at) + 1, dtype=np.float32)
    got = smooth(from_dense(x), window)
    np.testing.assert_array_equal(got.dense(), smooth(x, window))


def test_sparse_smooth_reads_only_the_touched_neighbourhoods():
    n = 10**12  # ~4 TB as a dense float32 array
    s = SparseScores(np.array([0, 5, 500_000, n - 1], np.int64), np.ones(4, np.float32), n)
    tracemalloc.start()
    try:
        sm = smooth(s, 9)
        peaks = find_peaks_nms(sm, min_distance=64, max_peaks=10)
        spans = grow_spans(sm, peaks, frac=0.35, max_len=160, min_len=48, boundaries=np.array([0, 400_000]))
        peak_mem = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_mem < 1 << 20
    assert sm.starts_R.min() == 0 and sm.tokens().positions_N.max() == n - 1 and sm.size < 40
    first, middle, last = sorted(peaks.tolist())
    assert first <= 5 and abs(middle - 500_000) <= 4 and last >= n - 5
    assert all(48 <= sp.end - sp.start <= 160 and 0 <= sp.start and sp.end <= n for sp in spans)


@pytest.mark.parametrize(("min_distance", "max_peaks"), [(1, 5), (7, 40), (64, 22), (30, 1000)])
def test_sparse_nms_equals_dense(min_distance, max_peaks):
    for seed in range(10):
        x = smooth(_scattered(seed), 9)
        for min_score in (0.0, 0.01):
            want = find_peaks_nms(x, min_distance=min_distance, max_peaks=max_peaks, min_score=min_score)
            got = find_peaks_nms(
                from_dense(x), min_distance=min_distance, max_peaks=max_peaks, min_score=min_score
            )
            assert got.tolist() == want.tolist()
    with pytest.raises(S3Error, match="min_score"):
        find_peaks_nms(from_dense(np.ones(4)), min_distance=1, max_peaks=2, min_score=-1)
    assert find_peaks_nms(from_dense(np.zeros(4)), min_distance=1, max_peaks=2).size == 0


@pytest.mark.parametrize("frac", [0.0, 0.35, 1.0])
def test_sparse_peak_spans_equal_dense(frac):
    for seed in range(10):
        x = smooth(_scattered(seed), 9)
        bounds = np.unique(np.r_[0, np.random.default_rng(seed).integers(0, x.size, 5)])
        options = dict(budget=1024, min_distance=64, frac=frac, max_len=160, min_len=48, boundaries=bounds)
        want = peak_spans(x, **options)
        got = peak_spans(from_dense(x), **options)
        assert [(s.start, s.end, s.score, s.why) for s in got] == [
            (s.start, s.end, s.score, s.why) for s in want
        ]


def test_sparse_range_max_equals_dense():
    rng = np.random.default_rng(5)
    x = smooth(_scattered(3), 9)
    x[rng.integers(0, x.size, 20)] = -1.0  # negative scores: an untouched token (0) may be the max
    n = x.size
    spans = [
        Span(int(a), int(a + w), 0.0, "bm25", {})
        for a, w in zip(rng.integers(-5, n, 300), rng.integers(0, 200, 300))
    ]
    np.testing.assert_array_equal(range_max(spans, from_dense(x)), range_max(spans, x))


def test_lookups():
    s = SparseScores(np.array([2, 5, 9], np.int64), np.array([1.0, 2.0, 3.0], np.float32), 12)
    np.testing.assert_array_equal(s.at(np.array([[0, 2], [5, 11]])), [[0, 1], [2, 0]])
    assert s.at(np.array([1])).dtype == np.float32
    assert SparseScores(np.zeros(0, np.int64), np.zeros(0, np.float32), 5).at(np.array([3])).tolist() == [0]
    assert s.keep(np.array([True, False, True])).positions_N.tolist() == [2, 9]
    pos = np.array([0, 3, 4, 10, 12, 20])
    assert in_ranges(pos, [(3, 5), (10, 13)]).tolist() == [False, True, True, True, True, False]
    assert not in_ranges(pos, []).any()
    assert in_sorted(pos, np.array([3, 12, 30])).tolist() == [False, True, False, False, True, False]
    assert not in_sorted(pos, np.zeros(0, np.int64)).any()


def test_coordination_scales_by_the_share_of_heads_nearby():
    from s3attn.retrieval.sparse import SparseScores, coordinated

    scores = SparseScores(np.array([10, 50, 90]), np.array([1.0, 1.0, 1.0], np.float32), 100)
    heads = [np.array([10, 52]), np.array([12]), np.array([88, 95])]
    out = coordinated(scores, heads, window=4, power=1.0)
    # position 10: heads 0 and 1 nearby (2/3); 50: head 0 (1/3); 90: head 2 (1/3)
    np.testing.assert_allclose(out.values_N, [2 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    assert coordinated(scores, heads, window=4, power=0.0) is scores
    np.testing.assert_allclose(coordinated(scores, heads, 4, 2.0).values_N, [4 / 9, 1 / 9, 1 / 9], rtol=1e-6)


@pytest.mark.parametrize("window", [2, 9, 16])
def test_sparse_smooth_in_small_pieces_equals_dense(window, monkeypatch):
    """Touched tokens smoothed a few at a time (cut only between neighbourhoods that do not touch) give the
    dense result, and peaks and spans read from those runs are the dense ones."""
    import s3attn.retrieval.peaks as peaks

    monkeypatch.setattr(peaks, "_CHUNK", 3)
    for seed in range(10):
        x = _scattered(seed * 7 + window)
        got = smooth(from_dense(x), window)
        dense = smooth(x, window)
        np.testing.assert_array_equal(got.dense(), dense)
        assert got.size <= 2 * np.count_nonzero(x) + window + 2
        options = dict(budget=1024, min_distance=16, frac=0.35, max_len=160, min_len=16, boundaries=None)
        want = [(s.start, s.end, s.score) for s in peak_spans(dense, **options)]
        assert [(s.start, s.end, s.score) for s in peak_spans(got, **options)] == want


def test_step_scores_lookups_and_restrict_equal_the_dense_array():
    for seed in range(8):
        x = smooth(_scattered(seed), 9)
        x[np.random.default_rng(seed).integers(0, x.size, 5)] = -0.5  # runs below 0 too
        st = steps_of(from_dense(x))
        assert st.size <= 2 * np.count_nonzero(x) + 1
        np.testing.assert_array_equal(st.dense(), x)
        probe = np.random.default_rng(seed).integers(0, x.size, 200)
        np.testing.assert_array_equal(st.at(probe), x[probe])
        cuts = np.unique(np.random.default_rng(seed + 1).integers(0, x.size + 3, 6))
        ranges = [(int(a), int(b)) for a, b in zip(cuts[::2], cuts[1::2])]
        want = np.zeros_like(x)
        for a, b in ranges:
            want[a:b] = x[a:b]
        np.testing.assert_array_equal(st.restrict(ranges).dense(), want)
        assert st.restrict([]).size == 0


def test_saturation_factors_count_a_lists_postings_nearby():
    from s3attn.retrieval.sparse import saturation_factors

    got = saturation_factors(np.array([0, 5, 100, 3, 200]), np.array([0, 0, 0, 1, 1]), 10, 1.0)
    np.testing.assert_allclose(got, [0.5, 0.5, 1.0, 1.0, 1.0])  # list 0 has 2 postings near 0; list 1's apart
    rng = np.random.default_rng(0)
    pos, slots = rng.integers(0, 400, 300), rng.integers(0, 5, 300)
    for window, power in ((0, 1.0), (7, 0.5), (50, 1.0)):
        near = (np.abs(pos[:, None] - pos[None, :]) <= window) & (slots[:, None] == slots[None, :])
        want = near.sum(axis=1).astype(np.float64) ** -power
        np.testing.assert_allclose(saturation_factors(pos, slots, window, power), want, rtol=1e-6)
    assert saturation_factors(np.zeros(0, np.int64), np.zeros(0, np.int64), 8, 1.0).size == 0


def test_saturation_lets_distinct_features_outscore_one_repeated_feature():
    """A passage where one question feature fires 16 times outscores one where three fire once each, unless
    the repeats are saturated (score_tokens with QuestionConfig.saturation)."""
    from types import SimpleNamespace

    from s3attn.retrieval.question import HeadFeatures, QuestionConfig, score_tokens

    rep, once = np.arange(100, 132, 2), np.array([500, 502, 504])
    post = SimpleNamespace(
        positions=np.concatenate([rep, once]),
        feature_slot=np.array([0] * rep.size + [1, 2, 3]),
        acts=np.ones(rep.size + 3, np.float32),
    )
    store = SimpleNamespace(num_tokens=1000, postings=lambda layer, kv, feats: post)
    feats = {(0, 0): HeadFeatures(np.arange(4), np.ones(4, np.float32), np.array([16, 1, 1, 1]))}

    def passage_sums(saturation: float) -> tuple[float, float]:
        s = score_tokens(store, feats, QuestionConfig(saturation=saturation)).dense()
        return float(s[100:132].sum()), float(s[500:505].sum())

    assert passage_sums(0.0) == (16.0, 3.0)
    repeated, distinct = passage_sums(1.0)  # the default window (128) holds all 16 repeats
    assert repeated == pytest.approx(1.0) and distinct == 3.0


@pytest.mark.parametrize("option", ["saturation", "saturation_window"])
def test_negative_saturation_options_are_refused_naming_the_option(option):
    from s3attn.errors import S3Error
    from s3attn.retrieval.question import QuestionConfig
    from s3attn.retrieval.retriever import RetrievalConfig, check_retrieval

    cfg = RetrievalConfig(question=QuestionConfig(**{option: -1}))
    with pytest.raises(S3Error, match=f"--{option.replace('_', '-')} -1: must be at least 0"):
        check_retrieval(cfg)
    assert check_retrieval(RetrievalConfig()) is not None
