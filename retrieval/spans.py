"""Spans of global token positions: grown S3 peaks, bias anchors, BM25 hits, and their budgeted union.

Everything here works on global token positions of the index and plain numpy arrays (scores: dense, one per
token, or ``SparseScores``); no model, no BM25 search. The flow of
:class:`s3attn.retrieval.retriever.Retriever` (``s3_candidates``, ``retrieve``)::

    score_tokens(...)                  S3 scores of the touched tokens (SparseScores, s3attn.retrieval.sparse;
                                       s3attn.retrieval.question); sink tokens zeroed
    smooth(scores, window)             centred moving average (s3attn.retrieval.peaks): StepScores, runs
                                       of equal smoothed scores (s3attn.retrieval.steps)
    peak_spans(smoothed, budget, ...)  find_peaks_nms (greedy non-maximum suppression, in peaks.py), then
                                       grow_spans: each peak grows while score >= frac * peak, inside its
                                       document
    fuse([s3], budget)                 the S3 spans that fit the budget (mode ``s3``)
    bm25_spans(hits)                   BM25 passages as spans (modes ``bm25``, ``hybrid``)
    bias_spans(...)                    the first/last-token anchors (mode ``hybrid``)
    hybrid_spans(bias, bm25, s3, ...)  ranks the candidates (s3attn.retrieval.fusion), then
    fuse([...], budget, first=...)     priority selection under an exact token budget, merged, in
                                       document order

``Span.why`` conventions (callers add more keys): ``peaks`` (list of peak positions, s3), ``bias``
(``"first"``/``"last"``), ``doc`` (document index), ``terms`` (BM25 terms of the question), ``features``.
When spans merge, lists are united (order kept), nested dicts merged, numbers take the max, other
values that differ become a list of the distinct values.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from s3attn.errors import S3Error
from s3attn.index_builder.bm25 import Hit
from s3attn.retrieval.peaks import find_peaks_nms, smooth
from s3attn.retrieval.sparse import SparseScores, length_of, values_at
from s3attn.retrieval.steps import StepScores

__all__ = [
    "SOURCE_BIAS",
    "SOURCE_BM25",
    "SOURCE_S3",
    "Span",
    "StepScores",
    "bias_spans",
    "bm25_spans",
    "find_peaks_nms",
    "fuse",
    "grow_spans",
    "merge_why",
    "peak_spans",
    "smooth",
]

SOURCE_S3 = "s3"
SOURCE_BM25 = "bm25"
SOURCE_BIAS = "bias"
_SOURCE_ORDER = (SOURCE_BIAS, SOURCE_S3, SOURCE_BM25)


class Span(NamedTuple):
    start: int  # global token position, inclusive
    end: int  # global token position, exclusive
    score: float
    source: str  # "s3" | "bm25" | "bias", or several joined by "+" after fusion
    why: dict  # what retrieved it (features, terms, peaks, ...)

    @property
    def length(self) -> int:
        return max(0, self.end - self.start)


# ---- spans -------------------------------------------------------------------------------------------


def _doc_bounds(peaks_P: np.ndarray, n: int, boundaries: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Start/end of the document holding each peak; ``boundaries`` are sorted document start positions."""
    if boundaries is None or len(boundaries) == 0:
        return np.zeros_like(peaks_P), np.full_like(peaks_P, n)
    b_D = np.asarray(boundaries, dtype=np.int64)
    if np.any(np.diff(b_D) < 0):
        raise S3Error("grow_spans: boundaries must be sorted document start positions")
    k = np.searchsorted(b_D, peaks_P, side="right") - 1
    lo = np.where(k >= 0, b_D[np.clip(k, 0, None)], 0)
    nxt = np.clip(k + 1, 0, b_D.size - 1)
    hi = np.where(k + 1 < b_D.size, b_D[nxt], n)
    return lo, np.minimum(hi, n)


def _place(start: int, length: int, lo: int, hi: int) -> int:
    """Clip a window start so that ``[start, start + length)`` lies inside ``[lo, hi)``."""
    return max(lo, min(start, hi - length))


def grow_spans(
    scores: np.ndarray | SparseScores | StepScores,
    peaks: np.ndarray,
    *,
    frac: float = 0.5,
    max_len: int = 256,
    min_len: int = 16,
    boundaries: np.ndarray | None = None,
) -> list[Span]:
    """One ``source="s3"`` span per peak, in the order of ``peaks``.

    ``scores`` should be the smoothed scores. A span grows left and right from its peak while the
    score stays ``>= frac * scores[peak]``; if that run is longer than ``max_len`` it is cut to
    ``max_len`` tokens centred on the peak, if shorter than ``min_len`` it is widened around its middle
    to ``min_len``. It never crosses a document boundary (``boundaries``: sorted global document start
    positions; the peak's document ends at the next boundary or at the scores' length). Score = peak score.
    ``SparseScores``: untouched tokens score 0 (below any positive threshold).
    """
    if not 0.0 <= frac <= 1.0:
        raise S3Error(f"grow_spans: frac={frac} must be in [0, 1]")
    if max_len < 1:
        raise S3Error(f"grow_spans: max_len={max_len} must be >= 1")
    n = length_of(scores)
    peaks_P = np.asarray(peaks, dtype=np.int64).ravel()
    if peaks_P.size and (peaks_P.min() < 0 or peaks_P.max() >= n):
        raise S3Error(f"grow_spans: peak positions must be in [0, {n})")
    lo_P, hi_P = _doc_bounds(peaks_P, n, boundaries)
    min_len = min(max(int(min_len), 1), max_len)
    # every peak's window [p - max_len + 1, p + max_len) at once: a token below the threshold or outside
    # the peak's document stops the growth; the left run starts after the last stop before the peak, the
    # right run ends at the first stop from the peak on
    L = max_len
    pos_PW = peaks_P[:, None] + np.arange(-(L - 1), L)[None, :]
    stop_PW = (pos_PW < lo_P[:, None]) | (pos_PW >= hi_P[:, None])
    peak_P = values_at(scores, peaks_P)
    stop_PW |= values_at(scores, np.clip(pos_PW, 0, max(n - 1, 0))) < (frac * peak_P)[:, None]
    left, right = stop_PW[:, :L], stop_PW[:, L - 1 :]
    last_left = L - 1 - np.argmax(left[:, ::-1], axis=1)  # column of the last stop left of the peak
    starts = np.where(left.any(axis=1), peaks_P - (L - 1) + last_left + 1, peaks_P - (L - 1))
    ends = np.where(right.any(axis=1), peaks_P + np.argmax(right, axis=1), peaks_P + L)
    out: list[Span] = []
    columns = (a.tolist() for a in (peaks_P, peak_P, lo_P, hi_P, starts, ends))
    for p, peak, lo, hi, start, end in zip(*columns):
        start = min(start, p)  # a negative peak score would put p itself below threshold
        end = max(end, p + 1)
        if end - start > max_len:  # centre on the peak inside the run
            start = _place(p - (max_len - 1) // 2, max_len, start, end)
            end = start + max_len
        target = min(min_len, hi - lo)
        if end - start < target:  # widen around the span's middle, inside the document
            start = _place(start - (target - (end - start)) // 2, target, lo, hi)
            end = start + target
        out.append(Span(start, end, peak, SOURCE_S3, {"peaks": [p]}))
    return out


def bias_spans(doc_ranges: list[tuple[int, int]], first: int, last: int) -> list[Span]:
    """StreamingLLM-style anchors: the first ``first`` and last ``last`` tokens of every range given.

    Per document: pass each document's ``(start, end)``. For one sink + recent window over the whole
    index pass ``[(0, num_tokens)]``. Short documents give one span (first and last overlap: the
    ``first`` span is clipped to the document, the ``last`` one is dropped if fully inside it).
    Spans come in document order, first before last; ``score`` 0.0, ``why={"bias": ..., "doc": i}``.
    """
    out: list[Span] = []
    for i, (s, e) in enumerate(doc_ranges):
        s, e = int(s), int(e)
        if e <= s:
            continue
        f_end = min(e, s + max(int(first), 0))
        l_start = max(s, e - max(int(last), 0))
        if f_end > s:
            out.append(Span(s, f_end, 0.0, SOURCE_BIAS, {"bias": "first", "doc": i}))
        if l_start < e and e > f_end:
            out.append(Span(l_start, e, 0.0, SOURCE_BIAS, {"bias": "last", "doc": i}))
    return out


# ---- fusion ------------------------------------------------------------------------------------------


def _merge_value(a: object, b: object) -> object:
    if isinstance(a, dict) and isinstance(b, dict):
        return merge_why(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return a + [x for x in b if x not in a]
    num = (int, float, np.integer, np.floating)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return max(a, b)
    if a == b:
        return a
    items = a if isinstance(a, list) else [a]
    return items + [x for x in (b if isinstance(b, list) else [b]) if x not in items]


def merge_why(a: dict, b: dict) -> dict:
    """Merge two ``why`` dicts (see the module docstring for the rules)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_value(out[k], v) if k in out else v
    return out


def _join_sources(sources: list[str]) -> str:
    parts = {p for s in sources for p in s.split("+") if p}
    ordered = [s for s in _SOURCE_ORDER if s in parts] + sorted(parts - set(_SOURCE_ORDER))
    return "+".join(ordered)


def _anchor(span: Span) -> float:
    """Where a truncated span keeps its tokens: the start of a ``first`` anchor, the end of a ``last``
    anchor, the mean peak of an s3 span, else the middle."""
    bias = span.why.get("bias")
    if bias == "first":
        return span.start
    if bias == "last":
        return span.end - 1
    peaks = span.why.get("peaks")
    if isinstance(peaks, list) and peaks:
        return float(np.mean(peaks))
    return (span.start + span.end - 1) / 2


def _islands(start_S: np.ndarray, end_S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of intervals [start, end) as sorted disjoint islands (lo, hi); touching ones join."""
    order = np.argsort(start_S, kind="stable")
    s, e = start_S[order].astype(np.int64), np.maximum.accumulate(end_S[order].astype(np.int64))
    new = np.ones(s.size, dtype=bool)
    new[1:] = s[1:] > e[:-1]  # starts after everything before it ends: a new island
    first = np.flatnonzero(new)
    last = np.append(first[1:], s.size) - 1
    return s[first], e[last]


class _Compact(NamedTuple):
    """Token coverage in compact coordinates: the union of the spans as disjoint islands laid end to end,
    one uncovered token between islands (so runs never join across a gap), not the whole range the spans
    are spread over (up to the index's length)."""

    lo: np.ndarray  # int64 [I] global start of each island
    base: np.ndarray  # int64 [I] compact start of each island
    at: list[int]  # compact start of each span
    size: int  # compact tokens in all


def _compact(spans: list[Span]) -> _Compact:
    start_S = np.array([s.start for s in spans])
    isl_lo, isl_hi = _islands(start_S, np.array([s.end for s in spans]))
    base = np.cumsum(isl_hi - isl_lo + 1) - (isl_hi - isl_lo + 1)
    where = np.searchsorted(isl_lo, start_S, side="right") - 1
    at = (base[where] + start_S - isl_lo[where]).tolist()
    return _Compact(isl_lo, base, at, int(base[-1] + isl_hi[-1] - isl_lo[-1]))


def _priority_order(spans: list[Span], first: tuple[str, ...]) -> list[int]:
    """Span indices in the order :func:`fuse` takes them."""

    def priority(i: int) -> tuple:
        s = spans[i]
        sources = s.source.split("+")
        tier = next((t for t, src in enumerate(first) if src in sources), len(first))
        if tier < len(first) and first[tier] == SOURCE_BIAS:
            return (tier, 0.0, 0, i)
        return (tier, -s.score, s.start, i)

    return sorted(range(len(spans)), key=priority)


def _take(
    spans: list[Span], order: list[int], comp: _Compact, budget: int
) -> tuple[np.ndarray, list[tuple[Span, int, int]]]:
    """Cover the spans in ``order`` until ``budget`` tokens are covered: (covered tokens, compact; the taken
    spans with their effective global start and end). The overflowing span keeps the tokens nearest its
    anchor."""
    covered = np.zeros(comp.size, dtype=bool)
    left = int(budget)
    taken: list[tuple[Span, int, int]] = []
    for i in order:
        if left <= 0:
            break
        s = spans[i]
        a = comp.at[i]
        new_K = np.flatnonzero(~covered[a : a + s.length]) + a
        if new_K.size <= left:
            covered[new_K] = True
            left -= new_K.size
            taken.append((s, s.start, s.end))
            continue
        shift = s.start - a  # compact -> global inside this span
        dist = np.abs(new_K + shift - _anchor(s))
        keep = new_K[np.argsort(dist, kind="stable")[:left]]
        covered[keep] = True
        left = 0
        taken.append((s, int(keep.min()) + shift, int(keep.max()) + shift + 1))
    return covered, taken


def _runs(covered: np.ndarray, comp: _Compact) -> tuple[np.ndarray, np.ndarray]:
    """The maximal runs of covered tokens, back in global positions: (starts, ends)."""
    edges = np.diff(np.concatenate([[False], covered, [False]]).astype(np.int8))
    run_s, run_e = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    k_s = np.searchsorted(comp.base, run_s, side="right") - 1
    k_e = np.searchsorted(comp.base, run_e - 1, side="right") - 1
    return comp.lo[k_s] + run_s - comp.base[k_s], comp.lo[k_e] + run_e - comp.base[k_e]


def _merged_runs(run_s: np.ndarray, run_e: np.ndarray, taken: list[tuple[Span, int, int]]) -> list[Span]:
    """One span per run: the max score, joined sources and merged ``why`` of the taken spans touching it."""
    members: list[list[Span]] = [[] for _ in range(run_s.size)]
    for s, a, b in taken:
        # runs overlapping [a, b): first run whose end > a .. last run whose start < b
        r0 = int(np.searchsorted(run_e, a, side="right"))
        r1 = int(np.searchsorted(run_s, b, side="left"))
        for r in range(r0, r1):
            members[r].append(s)
    out: list[Span] = []
    for r in range(run_s.size):
        group = sorted(members[r], key=lambda s: -s.score)
        why: dict = {}
        for s in group:
            why = merge_why(why, s.why)
        out.append(
            Span(
                int(run_s[r]),
                int(run_e[r]),
                max((s.score for s in group), default=0.0),
                _join_sources([s.source for s in group]),
                why,
            )
        )
    return out


def fuse(span_lists: list[list[Span]], budget: int, *, first: tuple[str, ...] = (SOURCE_BIAS,)) -> list[Span]:
    """Budgeted union of spans from several sources, merged and in document order.

    Priority: spans of the sources in ``first``, tier by tier in that order (bias spans in the order
    given, cheap anchors; other tiers by score), then all others by score (descending; ties by start).
    Spans are taken in that order, each costing only the tokens not yet covered, until ``budget`` tokens
    are covered; the span that overflows keeps only as many new tokens as fit, those nearest its anchor
    (see :func:`_anchor`). The covered tokens are then cut into maximal runs (overlapping and adjacent
    spans merge); each run gets the max score, the joined sources (``"bias+s3+bm25"`` order) and the
    merged ``why`` of the taken spans touching it. Total length is ``min(budget, size of the union)``.
    Scores of different sources are compared as they are: callers mixing sources should put them on one
    scale first.
    """
    spans = [s for lst in span_lists for s in lst if s.end > s.start]
    if budget <= 0 or not spans:
        return []
    comp = _compact(spans)
    covered, taken = _take(spans, _priority_order(spans, first), comp, budget)
    return _merged_runs(*_runs(covered, comp), taken)


def peak_spans(
    smoothed: np.ndarray | SparseScores | StepScores,
    *,
    budget: int,
    min_distance: int,
    frac: float,
    max_len: int,
    boundaries: np.ndarray | None,
    min_len: int = 16,
    max_peaks: int | None = None,
    min_score: float = 0.0,
) -> list[Span]:
    """Smoothed scores (dense or ``SparseScores``) -> NMS peaks -> grown s3 spans (best peak first, not yet
    budgeted).

    ``max_peaks`` defaults to ``budget // min_len + 1`` (more spans could not fit).
    """
    if max_peaks is None:
        max_peaks = max(1, budget // max(1, min(min_len, max_len)) + 1)
    peaks = find_peaks_nms(smoothed, min_distance=min_distance, max_peaks=max_peaks, min_score=min_score)
    return grow_spans(smoothed, peaks, frac=frac, max_len=max_len, min_len=min_len, boundaries=boundaries)


def split_at(spans: list[Span], boundaries: np.ndarray) -> list[Span]:
    """Each span cut at the document starts inside it (a fused run may join the end of one document to the
    start of the next); the pieces keep its score, source and ``why``."""
    b_D = np.asarray(boundaries, dtype=np.int64)
    out: list[Span] = []
    for s in spans:
        cuts = b_D[np.searchsorted(b_D, s.start, side="right") : np.searchsorted(b_D, s.end, side="left")]
        edges = [s.start, *cuts.tolist(), s.end]
        out += [s._replace(start=int(a), end=int(z)) for a, z in zip(edges[:-1], edges[1:], strict=True)]
    return out


def bm25_spans(hits: list[Hit]) -> list[Span]:
    """BM25 search hits as ``source="bm25"`` spans,
    ``why={"terms": [...], "bm25": score, "coverage": term coverage, "doc_id": id}``."""
    return [
        Span(
            h.passage.start,
            h.passage.end,
            h.score,
            SOURCE_BM25,
            {"terms": list(h.terms), "bm25": h.score, "coverage": h.coverage, "doc_id": h.passage.doc_id},
        )
        for h in hits
    ]
