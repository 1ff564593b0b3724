"""S3 scores -> smoothed scores -> peaks: the model-free numpy steps before spans are grown.

``smooth`` is a centred moving average over the per-token S3 scores; ``find_peaks_nms`` picks the peaks of
the smoothed scores by greedy non-maximum suppression. Both take a dense array (one float per token: only the
best-scoring 256-token blocks are read for peaks) or :class:`~s3attn.retrieval.sparse.SparseScores` (the
touched tokens only: the question path), with the same results; smoothing those gives
:class:`~s3attn.retrieval.steps.StepScores` (runs of equal smoothed scores), and peaks are found on the runs.
:func:`s3attn.retrieval.spans.peak_spans` grows spans around the peaks.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import numpy as np

from s3attn.errors import S3Error
from s3attn.retrieval.sparse import SparseScores
from s3attn.retrieval.steps import (
    StepScores,
    canonical,
    empty_steps,
    runs_of_tokens,
    segment_runs,
    steps_of,
)


def smooth(scores: np.ndarray | SparseScores, window: int) -> np.ndarray | StepScores:
    """Centred moving average of ``window`` tokens (a direct convolution), same length; ``window`` 1 = identity.

    Token ``i`` averages ``scores[i - window // 2 : i + (window - 1) // 2 + 1]`` (the alignment of
    ``np.convolve(scores, ones(window) / window, "same")``); at the edges it divides by the number of
    tokens actually inside the array, so the first/last tokens are not pulled toward zero.
    ``SparseScores`` in, ``StepScores`` out: runs of equal smoothed scores, equal token by token to the
    dense result's (to the last bit at small windows; see ``sparse``).
    """
    if window < 1:
        raise S3Error(f"smooth: window={window} must be >= 1")
    if isinstance(scores, SparseScores):
        return _smooth_sparse(scores, window)
    return _smooth_dense(np.asarray(scores), window)


def _reach(window: int) -> tuple[int, int]:
    """(before, after): a smoothed token ``i`` averages ``[i - before, i + after)``, ``window`` tokens (the
    alignment of ``np.convolve(..., "same")``)."""
    return window // 2, (window - 1) // 2 + 1


def _smooth_dense(x_T: np.ndarray, window: int) -> np.ndarray:
    out_dtype = np.result_type(x_T.dtype, np.float32)
    if window == 1 or x_T.size == 0:
        return x_T.astype(out_dtype, copy=True)
    n = x_T.size
    before, after = _reach(window)  # token i sums [i - before, i + after)
    if n <= window:
        csum = np.concatenate([[0.0], np.cumsum(x_T, dtype=np.float64)])
        idx = np.arange(n)
        lo, hi = np.maximum(idx - before, 0), np.minimum(idx + after, n)
        return ((csum[hi] - csum[lo]) / (hi - lo)).astype(out_dtype)
    # window sums by direct convolution in the output dtype: one pass, ~4x faster than a float64 cumsum
    # on 1M tokens, and no cancellation error growing with the position
    out = np.convolve(x_T.astype(out_dtype, copy=False), np.ones(window, dtype=out_dtype), "same")
    out[before : n - after + 1] /= window
    out[:before] /= np.arange(after, after + before, dtype=out_dtype)
    out[n - after + 1 :] /= np.arange(window - 1, before, -1, dtype=out_dtype)
    return out


def _islands(pos_N: np.ndarray, window: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tokens the smoothed scores of sorted touched positions can be nonzero at, as disjoint segments
    ``[lo, hi)``: token ``i`` sums ``[i - before, i + after)`` (see :func:`smooth`), so a touched ``p`` reaches
    ``[p - after + 1, p + before + 1)``, ``window`` tokens; touched positions closer than ``window`` share a
    segment (their reaches overlap or abut). Clipped to ``[0, n)``. Also the segment of each position."""
    before, after = _reach(window)
    new = np.ones(pos_N.size, dtype=bool)
    new[1:] = np.diff(pos_N) >= window
    first = np.flatnonzero(new)
    last = np.append(first[1:], pos_N.size) - 1
    lo = np.maximum(pos_N[first] - after + 1, 0)
    hi = np.minimum(pos_N[last] + before + 1, n)
    return lo, hi, np.cumsum(new) - 1


_CHUNK = 1 << 15  # touched tokens smoothed at a time (cut between segments)


def _smooth_sparse(s: SparseScores, window: int) -> StepScores:
    """Smoothing of the touched tokens' neighbourhoods only, held as runs.

    The touched tokens are taken about ``_CHUNK`` at a time, cut where their segments (:func:`_islands`)
    part; each piece's segments are laid end to end between zeros and smoothed by the same convolution as
    a dense array: every window reads the values a window over the whole index reads, in the same order,
    with as many zeros before and after the index's own ends as the dense array has. The results, back at
    their global positions, are divided by the tokens of their window inside the index and kept as runs of
    equal values, so a question holds about two entries per touched token, not the window's width."""
    n, pos = s.num_tokens, s.positions_N
    out_dtype = np.result_type(s.values_N.dtype, np.float32)
    if pos.size == 0:
        return empty_steps(out_dtype, n)
    if window == 1:
        return steps_of(SparseScores(pos, s.values_N.astype(out_dtype), n))
    before, after = _reach(window)
    if pos[0] < after and pos[-1] + before + 1 >= n and not (np.diff(pos) > window).any():
        out_T = _smooth_dense(s.dense(), window)  # the neighbourhoods cover the whole (small) index
        return canonical(*runs_of_tokens(np.arange(n, dtype=np.int64), out_T, n), n)
    starts_R = np.empty(2 * pos.size + window + 2, np.int64)  # about two runs per touched token
    values_R = np.empty(starts_R.size, out_dtype)
    k = 0
    for a, b in _pieces(pos, window):
        piece = SparseScores(pos[a:b], s.values_N[a:b], n)
        r_start, r_value = _smooth_islands(piece, window)
        if k + r_start.size > starts_R.size:  # more runs than two per token (rounding inside a run)
            starts_R = np.concatenate([starts_R, np.empty(starts_R.size, np.int64)])
            values_R = np.concatenate([values_R, np.empty(values_R.size, out_dtype)])
        starts_R[k : k + r_start.size], values_R[k : k + r_start.size] = r_start, r_value
        k += r_start.size
    return canonical(starts_R[:k], values_R[:k], n)


def _pieces(pos_N: np.ndarray, window: int) -> Iterator[tuple[int, int]]:
    """``[a, b)`` index ranges of about ``_CHUNK`` sorted touched positions, cut only where two of them are
    ``window`` or more apart (their smoothed neighbourhoods do not touch)."""
    a, size = 0, pos_N.size
    while a < size:
        b = min(a + _CHUNK, size)
        look = _CHUNK
        while b < size:
            apart = np.flatnonzero(np.diff(pos_N[b - 1 : b + look]) >= window)
            if apart.size:
                b += int(apart[0])
                break
            b, look = min(b + look, size), 2 * look
        yield a, b
        a = b


def _smooth_islands(s: SparseScores, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, values) of the runs of the smoothed scores of ``s`` over the segments they can be nonzero
    at, a zero run after each segment (not yet canonical: see ``steps.canonical``)."""
    n, pos, vals = s.num_tokens, s.positions_N, s.values_N
    out_dtype = np.result_type(vals.dtype, np.float32)
    before, after = _reach(window)
    lo, hi, seg = _islands(pos, window, n)
    lens = hi - lo
    base = np.cumsum(lens) - lens
    total = int(base[-1] + lens[-1])
    front = 0 if lo[0] == 0 else before  # zeros as a window over the whole index reads them
    back = 0 if hi[-1] == n else after - 1
    buf = np.zeros(front + total + back, out_dtype)
    buf[front + base[seg] + pos - lo[seg]] = vals
    sums = np.convolve(buf, np.ones(window, dtype=out_dtype), "same")[front : buf.size - back]
    del buf
    # windows cut by the index's ends are divided by the tokens inside: the first tokens of the first
    # segment (global position < before), the last of the last one (> n - after)
    k0 = max(0, min(before - int(lo[0]), total))
    k1 = total - max(0, min(int(hi[-1]) - (n - after + 1), total))
    g_e = np.r_[lo[0] + np.arange(k0), hi[-1] - (total - k1) + np.arange(total - k1)].astype(np.int64)
    cut = np.r_[sums[:k0], sums[k1:]]
    sums /= window
    if cut.size:
        div = (np.minimum(g_e + after, n) - np.maximum(g_e - before, 0)).astype(out_dtype)
        sums[:k0], sums[k1:] = cut[:k0] / div[:k0], cut[k0:] / div[k0:]
    return segment_runs(lo, hi, sums, n)


_BLOCK = 256  # tokens per block of the block maxima that find_peaks_nms narrows its candidates with


def _local_maxima(x_T: np.ndarray, pos_P: np.ndarray, min_score: float) -> np.ndarray:
    """The positions of ``pos_P`` holding a local maximum (``>=`` both neighbours) above ``min_score``."""
    v_P = x_T[pos_P]
    ok = v_P > min_score
    left, right = pos_P > 0, pos_P < x_T.size - 1
    ok[left] &= v_P[left] >= x_T[pos_P[left] - 1]
    ok[right] &= v_P[right] >= x_T[pos_P[right] + 1]
    return pos_P[ok]


def _candidates_by_score(x_T: np.ndarray, min_score: float, chunk: int) -> Iterator[np.ndarray]:
    """Yield the local maxima of ``x_T`` above ``min_score`` in blocks sorted by score descending, ties by
    position; every score in a block is above every score in later blocks.

    Only the tokens of the best-scoring 256-token blocks are looked at: the candidates scoring at least
    ``tau`` all lie in blocks whose maximum is at least ``tau``. ``tau`` is lowered (the number of blocks
    looked at doubles) only when more candidates are asked for, so a whole-index pass is the block maxima.
    """
    n, B = x_T.size, _BLOCK
    full = n // B
    bmax = x_T[: full * B].reshape(full, B).max(axis=1) if full else np.zeros(0, x_T.dtype)
    if n > full * B:
        bmax = np.append(bmax, x_T[full * B :].max())
    order = np.argsort(-bmax, kind="stable")
    upper = np.inf  # candidates scoring >= upper were yielded already
    want = max(1, chunk // 2)  # blocks to look at first
    while True:
        last = want >= order.size
        tau = -np.inf if last else float(bmax[order[want - 1]])
        if tau <= min_score:
            tau, last = -np.inf, True
        blocks = np.sort(order[bmax[order] >= tau] if not last else order)
        pos_P = (blocks[:, None] * B + np.arange(B)[None, :]).ravel()
        cand = _local_maxima(x_T, pos_P[pos_P < n], min_score)
        v = x_T[cand]
        cand = cand[(v >= tau) & (v < upper)]  # position order
        if cand.size:
            yield cand[np.argsort(-x_T[cand], kind="stable")]
        if last:
            return
        upper, want = tau, 2 * want


def _score_blocks(v_C: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """Yield the indexes of ``v_C`` in blocks sorted by value descending, ties by index; every value in a
    block is above every value in later blocks. Only about the best ``chunk`` are sorted first, twice as
    many each time more are asked: the cut between blocks is read from a sample of the values (sorted
    once), not partitioned out of all of them."""
    stride = max(1, v_C.size // (64 * chunk))
    sample = -np.sort(-v_C[::stride])
    upper, want = np.inf, chunk
    while True:
        k = max(want // stride, int(np.searchsorted(-sample, -upper, side="right")))  # below upper
        tau = float(sample[k]) if k < sample.size else -np.inf
        top = np.flatnonzero((v_C >= tau) & (v_C < upper))  # about the next ``want``, and ties at the cut
        if top.size:
            yield top[np.argsort(-v_C[top], kind="stable")]
        if tau == -np.inf:
            return
        upper, want = tau, 2 * want


def _run_candidates(s: StepScores, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(runs, left_bad, right_bad): the runs (int32 indexes) holding candidate tokens, local maxima (``>=``
    both neighbours; untouched tokens score 0) above ``min_score`` (>= 0), and per run whether its first /
    last token is not one. Inside a run both neighbours are equal; its first token needs the run before not
    above it, its last the run after (the last run ends at the index's end: no token after it)."""
    starts, v = s.starts_R, s.values_R
    left_bad = np.empty(v.size, dtype=bool)  # the run before scores above this one
    left_bad[0] = starts[0] > 0 and v[0] < 0
    np.less(v[1:], v[:-1], out=left_bad[1:])
    right_bad = np.zeros(v.size, dtype=bool)  # the run after scores above this one
    np.less(v[:-1], v[1:], out=right_bad[:-1])
    ok = v > min_score
    ok &= np.diff(starts, append=s.num_tokens) > left_bad.astype(np.int8) + right_bad
    return np.flatnonzero(ok).astype(np.int32), left_bad, right_bad


def _first_free(accepted: list[int], t: int, end: int, dist: int) -> int | None:
    """The first token of ``[t, end)`` at least ``dist`` from every accepted peak (``accepted`` sorted)."""
    while t < end:
        k = bisect.bisect_left(accepted, t + dist) - 1  # the last accepted peak before t + dist
        if k < 0 or accepted[k] <= t - dist:
            return t
        t = accepted[k] + dist
    return None


def _greedy_runs(
    s: StepScores, min_score: float, min_distance: int, max_peaks: int, chunk: int
) -> np.ndarray:
    """Greedy NMS over the candidate tokens of runs (see :func:`find_peaks_nms`): the runs' candidates are
    taken in score-ordered blocks; a run's tokens share its score and come in position order, so the first
    free one is the next accepted, and the run stays first with the tokens past its suppression."""
    dist = max(int(min_distance), 1)
    runs_C, left_bad, right_bad = _run_candidates(s, min_score)
    accepted: list[int] = []  # sorted
    order: list[int] = []  # as accepted
    for block in _score_blocks(s.values_R[runs_C], chunk):
        r = runs_C[block].astype(np.int64)
        cs = s.starts_R[r] + left_bad[r]
        ce = np.where(r + 1 < s.size, s.starts_R[np.minimum(r + 1, s.size - 1)], s.num_tokens) - right_bad[r]
        if accepted:  # drop the runs inside the suppression of one accepted peak
            acc = np.asarray(accepted, dtype=np.int64)
            j = np.searchsorted(acc, cs, side="right") - 1
            q = acc[np.maximum(j, 0)]
            inside = (j >= 0) & (cs - q < dist) & (ce - 1 - q < dist)
            cs, ce = cs[~inside], ce[~inside]
        cs, ce = cs.tolist(), ce.tolist()
        i = 0
        while i < len(cs) and len(order) < max_peaks:
            t = _first_free(accepted, cs[i], ce[i], dist)
            if t is None:
                i += 1
                continue
            bisect.insort(accepted, t)
            order.append(t)
            cs[i] = t + dist
        if len(order) >= max_peaks:
            break
    return np.asarray(order, dtype=np.int64)


def find_peaks_nms(
    scores: np.ndarray | SparseScores | StepScores,
    *,
    min_distance: int,
    max_peaks: int,
    min_score: float = 0.0,
) -> np.ndarray:
    """Greedy non-maximum suppression; int64 peak positions, highest score first.

    Candidates are local maxima (``>=`` both neighbours) with score ``> min_score``, sorted by score
    (ties: lower position first). The best remaining candidate is accepted and every candidate closer
    than ``min_distance`` to it is dropped, until ``max_peaks`` are accepted. Accepted peaks are
    therefore ``>= min_distance`` apart and the first one is the global maximum (when above min_score).
    ``SparseScores`` or ``StepScores``: the candidates are the tokens of its runs, untouched tokens
    scoring 0, so ``min_score`` must be at least 0.
    """
    chunk = max(64, 4 * max_peaks)
    if isinstance(scores, (SparseScores, StepScores)):
        if min_score < 0:
            raise S3Error(f"find_peaks_nms: min_score={min_score} must be >= 0 for sparse scores")
        if max_peaks <= 0 or scores.size == 0:
            return np.zeros(0, dtype=np.int64)
        return _greedy_runs(steps_of(scores), min_score, min_distance, max_peaks, chunk)
    x_T = np.asarray(scores).ravel()
    if not np.issubdtype(x_T.dtype, np.floating):
        x_T = x_T.astype(np.float64)
    if max_peaks <= 0 or x_T.size == 0:
        return np.zeros(0, dtype=np.int64)
    return _greedy(_candidates_by_score(x_T, min_score, chunk), min_distance, max_peaks)


def _greedy(blocks: Iterator[np.ndarray], min_distance: int, max_peaks: int) -> np.ndarray:
    """Greedy NMS over candidate blocks in score order (see :func:`find_peaks_nms`)."""
    dist = max(int(min_distance), 1)
    accepted: list[int] = []
    # Candidates are consumed in score-ordered blocks (only the blocks needed are found and sorted), and
    # each accepted peak filters one short block; a new block is first cleared of everything near the
    # peaks accepted so far. Same result as one pass over all candidates sorted by score.
    for block in blocks:
        if accepted:
            acc = np.sort(np.asarray(accepted, dtype=np.int64))
            j = np.searchsorted(acc, block)
            near_right = np.abs(acc[np.minimum(j, acc.size - 1)] - block) < dist
            near_left = np.abs(acc[np.maximum(j - 1, 0)] - block) < dist
            block = block[~(near_left | near_right)]
        while block.size and len(accepted) < max_peaks:  # one pass per accepted peak
            p = int(block[0])
            accepted.append(p)
            block = block[np.abs(block - p) >= dist]
        if len(accepted) >= max_peaks:
            break
    return np.asarray(accepted, dtype=np.int64)
