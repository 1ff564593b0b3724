"""Per-token scores of the tokens a question touched: ``SparseScores``, and lookups on them.

A question reads at most ``QuestionConfig.max_postings`` postings, so its S3 scores are nonzero on at most that
many tokens, however long the index. ``SparseScores`` holds just those (sorted positions and their values);
every other token of the index scores 0. The question path (``score_tokens``, the sink and document-filter
zeroing, ``peaks.smooth``, ``peaks.find_peaks_nms``, ``spans.grow_spans``, ``fusion.range_max``) works on it,
so a question costs in proportion to the postings it reads, never an array of the index's length (smoothing
gives ``steps.StepScores``: runs of equal smoothed scores). The same functions still take a dense array (one
float per token) and give the same results: bit for bit at the default smoothing window (9), and on every
test; with windows of 64 or more a few random inputs differ in the last bit (~1e-7 relative), as the
convolution's dot products over a window may round differently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)


class SparseScores(NamedTuple):
    """Scores over ``[0, num_tokens)`` that are 0 except at ``positions_N``."""

    positions_N: np.ndarray  # int64 [N] sorted, unique global token positions
    values_N: np.ndarray  # float32 [N] their scores (a position absent here scores 0)
    num_tokens: int  # the index's length: the positions the scores are defined over

    @property
    def size(self) -> int:
        """Touched positions held (not the index's length)."""
        return int(self.positions_N.size)

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The scores at ``positions`` (any shape, inside ``[0, num_tokens)``), 0 where untouched."""
        pos = np.asarray(positions, dtype=np.int64)
        k = np.searchsorted(self.positions_N, pos)
        kc = np.minimum(k, max(self.size - 1, 0))
        hit = (k < self.size) & (self.positions_N[kc] == pos) if self.size else np.zeros(pos.shape, bool)
        zero = np.zeros((), self.values_N.dtype)
        return np.where(hit, self.values_N[kc] if self.size else zero, zero)

    def keep(self, mask_N: np.ndarray) -> SparseScores:
        """Only the touched positions where ``mask_N`` (bool [N]) is true; the others score 0."""
        return SparseScores(self.positions_N[mask_N], self.values_N[mask_N], self.num_tokens)

    def dense(self) -> np.ndarray:
        """The scores as one array of the index's length (for tests and small indexes only)."""
        out = np.zeros(self.num_tokens, self.values_N.dtype)
        out[self.positions_N] = self.values_N
        return out


def from_dense(scores_T: np.ndarray) -> SparseScores:
    """``SparseScores`` of a dense array: its nonzero tokens."""
    x_T = np.asarray(scores_T).ravel()
    pos = np.flatnonzero(x_T)
    return SparseScores(pos.astype(np.int64), x_T[pos], int(x_T.size))


def accumulate(
    positions: Sequence[np.ndarray], values: Sequence[np.ndarray], num_tokens: int
) -> SparseScores:
    """Sum the (position, value) pairs of several lists into ``SparseScores`` (float32).

    Each touched position's sum is taken in float32 in the order the pairs are given (unbuffered
    ``add.at`` over the compact positions), so it equals adding every pair into a dense float32 array."""
    if not positions:
        return SparseScores(np.zeros(0, np.int64), np.zeros(0, np.float32), int(num_tokens))
    pos_N = np.concatenate([np.asarray(p, dtype=np.int64) for p in positions])
    val_N = np.concatenate([np.asarray(v, dtype=np.float32) for v in values])
    uniq, inverse = np.unique(pos_N, return_inverse=True)
    out = np.zeros(uniq.size, np.float32)
    np.add.at(out, inverse, val_N)
    logger.debug("accumulated %d postings into %d touched tokens", pos_N.size, uniq.size)
    return SparseScores(uniq, out, int(num_tokens))


def length_of(scores) -> int:
    """The number of token positions ``scores`` is defined over (a dense array, ``SparseScores`` or
    ``steps.StepScores``)."""
    return scores.num_tokens if hasattr(scores, "num_tokens") else int(np.asarray(scores).size)


def values_at(scores, positions: np.ndarray) -> np.ndarray:
    """``scores[positions]`` of a dense array, ``SparseScores`` (0 where untouched) or ``steps.StepScores``."""
    if hasattr(scores, "at"):
        return scores.at(positions)
    return np.asarray(scores)[positions]


def in_ranges(positions_N: np.ndarray, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """bool [N]: which of ``positions_N`` lie inside one of ``ranges`` (disjoint ``(start, end)``, sorted)."""
    if not ranges:
        return np.zeros(np.shape(positions_N), dtype=bool)
    starts, ends = (np.asarray(c, dtype=np.int64) for c in zip(*ranges))
    k = np.searchsorted(starts, positions_N, side="right") - 1
    return (k >= 0) & (positions_N < ends[np.maximum(k, 0)])


def coordinated(
    scores: SparseScores, head_positions: Sequence[np.ndarray], window: int, power: float
) -> SparseScores:
    """``scores`` times ``(n / H) ** power`` per touched position, with ``n`` the number of the ``H`` (layer, KV
    head) pairs whose postings (sorted ``head_positions``) touch ``[p - window, p + window]``: Lucene's
    coordination factor, so a position that many heads agree on outranks one that a single head's frequent
    feature lifts."""
    if power <= 0 or not head_positions or scores.size == 0:
        return scores
    p = scores.positions_N
    n = np.zeros(p.size, np.float32)
    for pos in head_positions:
        srt = np.sort(np.asarray(pos, dtype=np.int64))
        n += (np.searchsorted(srt, p + window, side="right") - np.searchsorted(srt, p - window)) > 0
    factor = (n / len(head_positions)) ** power
    return SparseScores(p, (scores.values_N * factor).astype(np.float32), scores.num_tokens)


def saturation_factors(positions_N: np.ndarray, slots_N: np.ndarray, window: int, power: float) -> np.ndarray:
    """float32 [N]: ``1 / n ** power`` per posting, with ``n`` the postings of the same list (``slots_N``)
    within ``[p - window, p + window]`` of its position ``p``, itself included (of the postings given: with
    impact tiers, those read): BM25's term-frequency saturation, so a feature repeated throughout a passage
    adds about as much there as one it fires on once."""
    pos = np.asarray(positions_N, dtype=np.int64)
    if pos.size == 0:
        return np.ones(0, np.float32)
    span = int(pos.max()) + 2 * window + 2
    key_N = np.asarray(slots_N, dtype=np.int64) * span + pos + window
    srt = np.sort(key_N)
    n = np.searchsorted(srt, key_N + window, side="right") - np.searchsorted(srt, key_N - window)
    return (n.astype(np.float32) ** -float(power)).astype(np.float32)
