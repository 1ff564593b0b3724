"""S3 scores -> smoothed scores -> peaks: the model-free numpy steps before spans are grown.

``smooth`` is a centred moving average over the per-token S3 scores; ``find_peaks_nms`` picks the peaks of
the smoothed scores by greedy non-maximum suppression. Both take a dense array (one float per token: only the
best-scoring 256-token blocks are read for peaks) or :class:`~s3attn.retrieval.sparse.SparseScores` (the
touched tokens only: the question path), with the same results.
:func:`s3attn.retrieval.spans.peak_spans` grows spans around the peaks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from s3attn.errors import S3Error
from s3attn.retrieval.sparse import SparseScores


def smooth(scores: np.ndarray | SparseScores, window: int) -> np.ndarray | SparseScores:
    """Centred moving average of ``window`` tokens (a direct convolution), same length; ``window`` 1 = identity.

    Token ``i`` averages ``scores[i - window // 2 : i + (window - 1) // 2 + 1]`` (the alignment of
    ``np.convolve(scores, ones(window) / window, "same")``); at the edges it divides by the number of
    tokens actually inside the array, so the first/last tokens are not pulled toward zero.
    ``SparseScores`` in, ``SparseScores`` out: the nonzero smoothed tokens, equal to the dense result's (to
    the last bit at small windows; see ``sparse``).
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


def _smooth_sparse(s: SparseScores, window: int) -> SparseScores:
    """Smoothing of the touched tokens' neighbourhoods only.

    The segments the smoothed scores can be nonzero at (:func:`_islands`) are laid end to end and smoothed
    by the same convolution as a dense array. Between two touched tokens of neighbouring segments the
    buffer holds ``window - 1`` zeros (the end of one reach, the start of the next), so a window that reads
    across the join reads zeros exactly where the whole index has untouched tokens: every sum reads the
    same values in the same order as over the whole index. The nonzero results, back at their global
    positions, are divided by the tokens of their window inside the index."""
    n, pos = s.num_tokens, s.positions_N
    out_dtype = np.result_type(s.values_N.dtype, np.float32)
    if window == 1 or pos.size == 0:
        return SparseScores(pos.copy(), s.values_N.astype(out_dtype, copy=True), n)
    lo, hi, seg_N = _islands(pos, window, n)
    lens = hi - lo
    base = np.cumsum(lens) - lens
    total = int(lens.sum())
    if total >= n:  # the neighbourhoods cover the whole (small) index: smooth it as it is
        out_T = _smooth_dense(s.dense(), window)
        nz = np.flatnonzero(out_T)
        return SparseScores(nz.astype(np.int64), out_T[nz], n)
    buf = np.zeros(total, out_dtype)
    buf[base[seg_N] + pos - lo[seg_N]] = s.values_N
    if total >= window:
        sums = np.convolve(buf, np.ones(window, dtype=out_dtype), "same")
    else:  # "same" returns max(total, window) sums; the full convolution's middle is the one wanted
        sums = np.convolve(buf, np.ones(window, dtype=out_dtype), "full")[(window - 1) // 2 :][:total]
    del buf
    g = np.ones(total, np.int64)  # the global position of each buffer entry, as steps from the previous one
    g[0] = lo[0]
    g[base[1:]] = lo[1:] - hi[:-1] + 1
    np.cumsum(g, out=g)
    keep = sums != 0
    if not keep.all():  # a zero score, or scores that cancel
        g, sums = g[keep], sums[keep]
    out = sums
    before, after = _reach(window)
    # windows cut by the index's ends (g < before, g > n - after: a prefix and a suffix of the sorted g)
    # are divided by the tokens inside
    k0, k1 = int(np.searchsorted(g, before)), int(np.searchsorted(g, n - after, side="right"))
    edge = np.r_[0:k0, k1 : g.size]
    cut = out[edge]
    out /= window
    if cut.size:
        g_e = g[edge]
        out[edge] = cut / (np.minimum(g_e + after, n) - np.maximum(g_e - before, 0)).astype(out_dtype)
    return SparseScores(g, out, n)


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


def _sparse_candidates(s: SparseScores, min_score: float, chunk: int) -> Iterator[np.ndarray]:
    """Yield the local maxima of ``s`` (``>=`` both neighbours, untouched ones scoring 0) above ``min_score``
    (>= 0) in blocks sorted by score descending, ties by position; every score in a block is above every
    score in later blocks. Only about the best ``chunk`` are sorted first, twice as many each time more are
    asked: the cut between blocks is read from a sample of the candidates' scores (sorted once), not
    partitioned out of all of them, and no array of all candidates is made."""
    pos, v = s.positions_N, s.values_N
    apart = np.diff(pos) != 1  # neighbours in the array that are not neighbours in the index
    ok = v > min_score  # an untouched neighbour scores 0, so it never beats a candidate
    ok[1:] &= apart | (v[1:] >= v[:-1])
    ok[:-1] &= apart | (v[:-1] >= v[1:])
    stride = max(1, v.size // (64 * chunk))
    sample = -np.sort(-v[::stride][ok[::stride]])  # the scores of every stride-th token's candidates
    upper, want = np.inf, chunk
    while True:
        k = max(want // stride, int(np.searchsorted(-sample, -upper, side="right")))  # below upper
        tau = float(sample[k]) if k < sample.size else -np.inf
        top = np.flatnonzero(ok & (v >= tau) & (v < upper))  # about the next ``want``, and ties at the cut
        if top.size:
            block, block_v = pos[top], v[top]
            yield block[np.lexsort((block, -block_v))]
        if tau == -np.inf:
            return
        upper, want = tau, 2 * want


def find_peaks_nms(
    scores: np.ndarray | SparseScores, *, min_distance: int, max_peaks: int, min_score: float = 0.0
) -> np.ndarray:
    """Greedy non-maximum suppression; int64 peak positions, highest score first.

    Candidates are local maxima (``>=`` both neighbours) with score ``> min_score``, sorted by score
    (ties: lower position first). The best remaining candidate is accepted and every candidate closer
    than ``min_distance`` to it is dropped, until ``max_peaks`` are accepted. Accepted peaks are
    therefore ``>= min_distance`` apart and the first one is the global maximum (when above min_score).
    ``SparseScores``: the candidates are its touched tokens, so ``min_score`` must be at least 0.
    """
    chunk = max(64, 4 * max_peaks)
    if isinstance(scores, SparseScores):
        if min_score < 0:
            raise S3Error(f"find_peaks_nms: min_score={min_score} must be >= 0 for sparse scores")
        if max_peaks <= 0 or scores.size == 0:
            return np.zeros(0, dtype=np.int64)
        return _greedy(_sparse_candidates(scores, min_score, chunk), min_distance, max_peaks)
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
