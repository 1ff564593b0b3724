"""Per-token scores that are constant between run starts: ``StepScores``, what smoothing a question gives.

The smoothed S3 scores of a question change only where a touched token enters or leaves the smoothing
window, so they are held as runs (start, value): about two per touched token, where the tokens themselves
are the window's width per touched token (4x fewer entries at 16M tokens). Every value is the smoothed
score of its tokens bit for bit (a run ends wherever the smoothed value changes in any bit), so peaks, spans
and range maxima read from runs equal those read from one float per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from s3attn.index_builder.schema import concat_ranges
from s3attn.retrieval.sparse import SparseScores


class StepScores(NamedTuple):
    """Scores over ``[0, num_tokens)``: token ``i`` scores ``values_R[k]`` for the last ``starts_R[k] <= i``,
    and 0 before ``starts_R[0]``. Canonical: no run holds its predecessor's value (0 before the first)."""

    starts_R: np.ndarray  # int64 [R] sorted, unique run starts
    values_R: np.ndarray  # float [R] the score of every token from its start to the next run's start
    num_tokens: int  # the index's length

    @property
    def size(self) -> int:
        """Runs held (not the index's length)."""
        return int(self.starts_R.size)

    def ends(self) -> np.ndarray:
        """int64 [R]: the end (exclusive) of each run; the last run ends at ``num_tokens``."""
        return np.append(self.starts_R[1:], self.num_tokens).astype(np.int64)

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The scores at ``positions`` (any shape, inside ``[0, num_tokens)``)."""
        pos = np.asarray(positions, dtype=np.int64)
        k = np.searchsorted(self.starts_R, pos, side="right") - 1
        zero = np.zeros((), self.values_R.dtype)
        if not self.size:
            return np.zeros(pos.shape, self.values_R.dtype)
        return np.where(k >= 0, self.values_R[np.maximum(k, 0)], zero)

    def tokens(self) -> SparseScores:
        """The nonzero tokens as ``SparseScores`` (one entry per token: for tests and small indexes)."""
        nz = self.values_R != 0
        lens = (self.ends() - self.starts_R)[nz]
        return SparseScores(
            concat_ranges(self.starts_R[nz], lens), np.repeat(self.values_R[nz], lens), self.num_tokens
        )

    def dense(self) -> np.ndarray:
        """The scores as one array of the index's length (for tests and small indexes only)."""
        return self.tokens().dense()

    def restrict(self, ranges: Sequence[tuple[int, int]]) -> StepScores:
        """The same scores inside ``ranges`` (sorted, disjoint ``(start, end)``), 0 outside."""
        if not ranges:
            return empty_steps(self.values_R.dtype, self.num_tokens)
        edges = np.clip(np.asarray(ranges, dtype=np.int64).ravel(), 0, self.num_tokens)
        points = np.union1d(self.starts_R, edges[edges < self.num_tokens])
        k = np.searchsorted(edges, points, side="right")  # odd: inside a range
        return canonical(points, np.where(k % 2 == 1, self.at(points), 0).astype(self.values_R.dtype), self)


def empty_steps(dtype: np.dtype, num_tokens: int) -> StepScores:
    """0 everywhere."""
    return StepScores(np.zeros(0, np.int64), np.zeros(0, dtype), int(num_tokens))


def canonical(starts_R: np.ndarray, values_R: np.ndarray, like: StepScores | int) -> StepScores:
    """Runs from sorted starts (a repeated start: the last one holds), without the runs that repeat their
    predecessor's value; ``like``: the number of tokens, or scores with it."""
    n = like if isinstance(like, int) else like.num_tokens
    last = np.ones(starts_R.size, dtype=bool)
    last[:-1] = starts_R[1:] != starts_R[:-1]
    if not last.all():
        starts_R, values_R = starts_R[last], values_R[last]
    new = np.ones(values_R.size, dtype=bool)
    new[1:] = values_R[1:] != values_R[:-1]
    if values_R.size:
        new[0] = values_R[0] != 0
    if not new.all():  # copies only when some run repeats its predecessor
        starts_R, values_R = starts_R[new], values_R[new]
    return StepScores(starts_R.astype(np.int64, copy=False), values_R, int(n))


def segment_runs(
    lo_S: np.ndarray, hi_S: np.ndarray, v_T: np.ndarray, num_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, values) of the runs of disjoint sorted segments ``[lo, hi)`` whose tokens, laid end to end,
    score ``v_T``, every other token 0: a run starts at each segment's start and where a token's value
    differs from the one before it, and a zero run after each segment (before the next segment's first
    run when they abut; not yet canonical: see :func:`canonical`)."""
    if not v_T.size:
        return np.zeros(0, np.int64), np.zeros(0, v_T.dtype)
    lens = hi_S - lo_S
    base = np.cumsum(lens) - lens  # each segment's first entry in v_T
    new = np.empty(v_T.size, dtype=bool)
    new[0] = True
    np.not_equal(v_T[1:], v_T[:-1], out=new[1:])
    new[base] = True
    at = np.flatnonzero(new)
    seg = np.searchsorted(base, at, side="right") - 1
    starts = lo_S[seg] + (at - base[seg])
    ends = hi_S[hi_S < num_tokens]
    put = np.searchsorted(starts, ends, side="left")
    return np.insert(starts, put, ends), np.insert(v_T[at], put, np.zeros(ends.size, v_T.dtype))


def runs_of_tokens(g_T: np.ndarray, v_T: np.ndarray, num_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`segment_runs` of tokens ``g_T`` (sorted, unique) scoring ``v_T``: each stretch of consecutive
    tokens one segment."""
    gap = np.ones(g_T.size, dtype=bool)  # the token before is not in g_T
    gap[1:] = g_T[1:] != g_T[:-1] + 1
    first = np.flatnonzero(gap)
    last = np.append(first[1:], g_T.size) - 1
    return segment_runs(g_T[first], g_T[last] + 1, v_T, num_tokens)


def steps_of(scores: SparseScores | StepScores) -> StepScores:
    """``StepScores`` of ``SparseScores`` (each touched token its own run, unless it repeats its
    neighbour's value); ``StepScores`` as they are."""
    if isinstance(scores, StepScores):
        return scores
    starts, values = runs_of_tokens(scores.positions_N, scores.values_N, scores.num_tokens)
    return canonical(starts, values, scores.num_tokens)


def range_max_steps(a0: np.ndarray, a1: np.ndarray, scores: StepScores) -> np.ndarray:
    """float64: the max score inside each ``[a0, a1)`` (clipped to the index; 0 if empty), read from the
    runs that overlap it."""
    n, starts = scores.num_tokens, scores.starts_R
    a0, a1 = np.clip(a0, 0, n), np.clip(a1, 0, n)
    out = np.zeros(a0.size)
    ok = a1 > a0
    if not ok.any() or not scores.size:
        return out
    a0, a1 = a0[ok], a1[ok]
    k0 = np.searchsorted(starts, a0, side="right") - 1  # the run holding a0 (-1: before the first run)
    k1 = np.searchsorted(starts, a1)  # runs starting before a1
    first = np.maximum(k0, 0)
    count = k1 - first
    vals = scores.values_R[concat_ranges(first, count)].astype(np.float64)
    some = count > 0
    got = np.zeros(a0.size)
    got[some] = np.maximum.reduceat(vals, (np.cumsum(count) - count)[some]) if vals.size else 0.0
    got[k0 < 0] = np.where(some[k0 < 0], np.maximum(got[k0 < 0], 0.0), 0.0)  # tokens before the first run
    out[ok] = got
    return out
