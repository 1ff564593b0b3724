"""The sparse kernels of the Top-k SAE (``s3attn.saes.sae``), all exact.

The pre-activations are computed in row blocks into a reused buffer and reduced to their top-k by a
pyramid of group maxima (``topk`` then sees ~k*8 candidates per row instead of all latents); ReLU is
applied to the ``k`` winners only (``relu`` is monotone, so the values equal those of
``topk(relu(pre))``); both backward passes are sparse (the activation gradient is a sampled dot product,
the weight gradients one embedding bag per latent over the ``N x d_in`` inputs, whose index sort the
encoder and decoder share); the losses have two-op backward passes. Nothing ``N x latents`` is kept for
backward. Few, large ops also matter on a shared CPU: each parallel region waits for descheduled threads.

Under ``torch.autocast`` (float32 parameters) the encoder matmul and its top-k search run in the autocast
dtype, as ``F.linear`` would; the selected values come back in float32, and the decoder, losses and all
backward passes stay float32 (mixed precision with float32 master weights, as eai-sparsify trains).
bfloat16 parameters run their sparse backward passes with float32 accumulation.
"""

from __future__ import annotations

import threading
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

# Pre-activation elements per encoder block on CPU (2**24 fp32 = 64 MiB: the whole 4096 x 4096 batch).
# Each block costs ~12 parallel regions, which are slow when other processes share the CPU; with the
# per-thread scratch buffer below, smaller blocks gain little cache benefit.
_CPU_BLOCK_ELEMS = 1 << 24
# Top-k search pyramid (CPU): group size, at most this many levels, top level at least this many x k wide.
_GROUP = 4
_PYRAMID_LEVELS = 2
_MIN_TOP_WIDTH = 4
# Dtypes the sparse kernels take directly; others (bf16, fp16) run their backward in fp32.
_SPARSE_DTYPES = (torch.float32, torch.float64)


_SCRATCH = threading.local()


def _scratch(numel: int, dtype: torch.dtype) -> Tensor:
    """A per-thread CPU buffer per dtype reused across calls: a fresh multi-MiB block costs page faults
    every time (one per dtype, so fp32 and bf16 SAEs stepped in turn do not reallocate each other's)."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    buf = bufs.get(dtype)
    if (
        buf is None
        or buf.numel() < numel
        or buf.is_inference() != torch.is_inference_mode_enabled()  # Lightning predict runs in inference mode
    ):
        buf = bufs[dtype] = torch.empty(numel, dtype=dtype)
    return buf[:numel]


def _matmul_dtype(x: Tensor) -> torch.dtype:
    """Dtype of the encoder matmul and top-k search: the autocast dtype when autocast is on for ``x``'s
    device and ``x`` is float32 (as ``F.linear`` would do there), else ``x``'s own dtype."""
    device_type = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _group_plan(num_latents: int, k: int) -> list[int]:
    """Group sizes of the max-pyramid used to find the top-k (empty: plain ``torch.topk``)."""
    plan, size = [], num_latents
    while len(plan) < _PYRAMID_LEVELS and size % _GROUP == 0 and size // _GROUP >= _MIN_TOP_WIDTH * k:
        plan.append(_GROUP)
        size //= _GROUP
    return plan


def _gather_cols(src_BM: Tensor, idx_BC: Tensor) -> Tensor:
    """``src.gather(1, idx)``; 2-byte floats move as int16 (the same bits): torch's multi-threaded CPU
    gather is ~2.5x slower for bfloat16 than for int16 or float32."""
    if src_BM.element_size() == 2 and src_BM.is_floating_point():
        return src_BM.view(torch.int16).gather(1, idx_BC).view(src_BM.dtype)
    return src_BM.gather(1, idx_BC)


def _pyramid_topk(pre_BM: Tensor, k: int, plan: list[int], out: tuple[Tensor, Tensor]) -> None:
    """Exact top-k values of each row via a pyramid of group maxima (indices unordered).

    Level ``i + 1`` holds, for each group ``c``, the max over the strided entries ``c, c + G, c + 2G, ...``
    of level ``i`` (``G`` = width / group size; strided so the max is a vectorised elementwise pass).
    The ``k`` largest entries of a level all lie in the ``k`` groups with the largest maxima (a group
    whose max is below ``k`` other maxima holds nothing above the k-th value; ties keep the same value
    multiset), so each level needs ``topk`` over ``k * group`` candidates only, never over a full row.
    """
    n = pre_BM.shape[0]
    levels = [pre_BM]
    for g in plan:
        levels.append(levels[-1].view(n, g, -1).amax(1))
    chosen = torch.topk(levels[-1], k, dim=1, sorted=False)[1]
    for i in range(len(plan) - 1, -1, -1):
        level, g = levels[i], plan[i]
        width = level.shape[1]
        offsets = torch.arange(0, width, width // g, device=level.device)
        cand = (chosen.unsqueeze(2) + offsets).view(n, k * g)
        if i:
            chosen = cand.gather(1, torch.topk(_gather_cols(level, cand), k, dim=1, sorted=False)[1])
        else:  # last level: write values and latent ids straight into the caller's slices
            pos = torch.empty_like(out[1])
            torch.topk(_gather_cols(level, cand), k, dim=1, sorted=False, out=(out[0], pos))
            torch.gather(cand, 1, pos, out=out[1])


@torch.no_grad()
def _topk_preacts(xc_ND: Tensor, W_MD: Tensor, b_M: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of ``xc @ W.T + b`` per row (raw values, unordered), one cache-sized row block at a time.

    Under autocast (float32 inputs) the matmul and the search run in the autocast dtype, on a buffer half
    the size; the ``k`` values come back in ``xc``'s dtype, so everything downstream stays float32.
    """
    out_dtype, dtype = xc_ND.dtype, _matmul_dtype(xc_ND)
    if dtype != out_dtype:
        vals_NK, idx_NK = _topk_preacts_in(xc_ND.to(dtype), W_MD.to(dtype), b_M.to(dtype), k)
        return vals_NK.to(out_dtype), idx_NK
    return _topk_preacts_in(xc_ND, W_MD, b_M, k)


def _topk_preacts_in(xc_ND: Tensor, W_MD: Tensor, b_M: Tensor, k: int) -> tuple[Tensor, Tensor]:
    n, num_latents = xc_ND.shape[0], W_MD.shape[0]
    vals_NK = torch.empty(n, k, dtype=xc_ND.dtype, device=xc_ND.device)
    idx_NK = torch.empty(n, k, dtype=torch.long, device=xc_ND.device)
    if n == 0:
        return vals_NK, idx_NK
    W_DM = W_MD.t()
    if xc_ND.device.type != "cpu":  # one pass: GPU topk is fast and blocks would only add launches
        with torch.autocast(xc_ND.device.type, enabled=False):  # all operands already share one dtype
            pre_NM = torch.addmm(b_M, xc_ND, W_DM)
        torch.topk(pre_NM, k, dim=1, sorted=False, out=(vals_NK, idx_NK))
        return vals_NK, idx_NK
    step = max(1, min(n, _CPU_BLOCK_ELEMS // num_latents))
    buf = _scratch(step * num_latents, xc_ND.dtype).view(step, num_latents)
    plan = _group_plan(num_latents, k)
    for start in range(0, n, step):
        stop = min(n, start + step)
        pre_BM = torch.addmm(b_M, xc_ND[start:stop], W_DM, out=buf[: stop - start])
        out = (vals_NK[start:stop], idx_NK[start:stop])
        if plan:
            _pyramid_topk(pre_BM, k, plan, out)
        else:
            torch.topk(pre_BM, k, dim=1, sorted=False, out=out)
    return vals_NK, idx_NK


def _csr(crow: Tensor, cols: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch's one-time "sparse CSR is beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, size, check_invariants=False)


def _sampled_dot(g_ND: Tensor, W_MD: Tensor, idx_NK: Tensor, finite_NK: Tensor) -> Tensor:
    """``out[n, j] = <g[n], W[idx[n, j]]>`` without gathering ``N x k x d`` rows (SDDMM).

    ``finite_NK`` is any finite tensor of the pattern's shape: with ``beta=0`` its values are multiplied by
    zero (passing one we already have saves filling a fresh zeros tensor).
    """
    n, k = idx_NK.shape
    if g_ND.device.type != "cpu":  # plain gather: memory is plentiful there, no sparse-kernel caveats
        return torch.bmm(W_MD[idx_NK], g_ND.unsqueeze(2)).squeeze(2)
    crow = torch.arange(0, n * k + 1, k, device=idx_NK.device)
    pattern = _csr(crow, idx_NK.reshape(-1), finite_NK.reshape(-1), (n, W_MD.shape[0]))
    return torch.sparse.sampled_addmm(pattern, g_ND, W_MD.t(), beta=0.0).values().view(n, k)


def _transpose(idx_NK: Tensor, num_rows: int, cache: dict | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(order, crow, cols)`` of the ``num_rows x N`` CSR matrix with an entry at ``(idx[n, j], n)``.

    ``cache`` (a dict living for one forward/backward) lets the encoder and decoder backward share it.
    """
    key = (idx_NK.data_ptr(), tuple(idx_NK.shape), num_rows)
    if cache is not None and key in cache:
        return cache[key]
    k = idx_NK.shape[1]
    # A one-row 2-D sort runs std::stable_sort; the 1-D int64 path is a radix sort with many parallel
    # barriers, ~100x slower when other processes share the CPU.
    keys, order = torch.sort(idx_NK.reshape(1, -1), dim=1, stable=True)
    keys, order = keys.view(-1), order.view(-1)
    crow = torch.searchsorted(keys, torch.arange(num_rows + 1, device=keys.device))
    result = (order, crow, torch.div(order, k, rounding_mode="floor"))
    if cache is not None:
        cache[key] = result
    return result


def _scatter_rows(
    idx_NK: Tensor, w_NK: Tensor, dense_ND: Tensor, num_rows: int, cache: dict | None
) -> Tensor:
    """``out[m] = sum over (n, j) with idx[n, j] == m of w[n, j] * dense[n]``.

    With the entries grouped by latent this is an embedding bag per latent over the rows of ``dense``:
    one op, no ``N*k x d`` intermediate (a CSR matmul is as fast alone but slower on a busy CPU).
    """
    order, crow, cols = _transpose(idx_NK, num_rows, cache)
    return F.embedding_bag(cols, dense_ND, crow[:-1], mode="sum", per_sample_weights=w_NK.reshape(-1)[order])


def _upcast(*ts: Tensor) -> list[Tensor]:
    return [t if t.dtype in _SPARSE_DTYPES else t.float() for t in ts]


class _TopKEncode(torch.autograd.Function):
    """``acts, idx = topk(relu(xc @ W.T + b))`` with a backward that touches only the chosen latents."""

    @staticmethod
    def forward(ctx, xc_ND: Tensor, W_MD: Tensor, b_M: Tensor, k: int, cache: dict | None = None):  # type: ignore[override]
        vals_NK, idx_NK = _topk_preacts(xc_ND, W_MD, b_M, k)
        acts_NK = vals_NK.relu_()
        ctx.save_for_backward(xc_ND, W_MD, acts_NK, idx_NK)
        ctx.mark_non_differentiable(idx_NK)
        ctx.cache = cache
        return acts_NK, idx_NK

    @staticmethod
    def backward(ctx, g_acts_NK: Tensor, _g_idx: Tensor | None):  # type: ignore[override]
        xc_ND, W_MD, acts_NK, idx_NK = ctx.saved_tensors
        g_NK = g_acts_NK * (acts_NK > 0)  # ReLU gate
        g_xc = g_W = g_b = None
        if ctx.needs_input_grad[0]:
            g_xc = F.embedding_bag(idx_NK, W_MD, per_sample_weights=g_NK.to(W_MD.dtype), mode="sum")
        if ctx.needs_input_grad[1]:
            g32, xc32 = _upcast(g_NK, xc_ND)
            g_W = _scatter_rows(idx_NK, g32, xc32, W_MD.shape[0], ctx.cache).to(W_MD.dtype)
        if ctx.needs_input_grad[2]:
            g_b = torch.zeros(W_MD.shape[0], dtype=torch.float32, device=W_MD.device)
            g_b = g_b.index_add_(0, idx_NK.reshape(-1), g_NK.reshape(-1).float()).to(W_MD.dtype)
        return g_xc, g_W, g_b, None, None


class _SparseDecode(torch.autograd.Function):
    """``out[n] = sum_j acts[n, j] * W[idx[n, j]]`` with sparse gradients for ``acts`` and ``W``."""

    @staticmethod
    def forward(ctx, acts_NK: Tensor, idx_NK: Tensor, W_MD: Tensor, cache: dict | None = None):  # type: ignore[override]
        ctx.save_for_backward(acts_NK, idx_NK, W_MD)
        ctx.cache = cache
        return F.embedding_bag(idx_NK, W_MD, per_sample_weights=acts_NK.to(W_MD.dtype), mode="sum")

    @staticmethod
    def backward(ctx, g_out_ND: Tensor):  # type: ignore[override]
        acts_NK, idx_NK, W_MD = ctx.saved_tensors
        g_out32, W32, acts32 = _upcast(g_out_ND.contiguous(), W_MD, acts_NK)
        g_acts = g_W = None
        if ctx.needs_input_grad[0]:
            g_acts = _sampled_dot(g_out32, W32, idx_NK, acts32).to(acts_NK.dtype)
        if ctx.needs_input_grad[2]:
            g_W = _scatter_rows(idx_NK, acts32, g_out32, W_MD.shape[0], ctx.cache).to(W_MD.dtype)
        return g_acts, None, g_W, None


class _SquaredError(torch.autograd.Function):
    """``sum((a - b)^2)`` in ``loss_dtype`` with a two-op backward (autograd's version takes about six)."""

    @staticmethod
    def forward(ctx, a_ND: Tensor, b_ND: Tensor, loss_dtype: torch.dtype):  # type: ignore[override]
        diff = a_ND.to(loss_dtype) - b_ND.to(loss_dtype)
        ctx.save_for_backward(diff)
        ctx.dtypes = (a_ND.dtype, b_ND.dtype)
        flat = diff.reshape(-1)
        return torch.dot(flat, flat)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (diff,) = ctx.saved_tensors
        g_a = diff * (2 * g)
        g_b = -g_a.to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return (g_a.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None), g_b, None


def _total_variance(x_ND: Tensor) -> Tensor:
    """``sum((x - mean(x, 0))^2)`` (no gradient needed: it only scales the losses)."""
    with torch.no_grad():
        return x_ND.var(0, correction=0).sum() * x_ND.shape[0]
