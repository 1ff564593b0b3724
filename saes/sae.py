"""Top-k sparse autoencoder (Gao et al. 2024 recipe, eai-sparsify compatible weights), written for speed.

``TopKSAE`` holds four parameters named as in eai-sparsify's ``SparseCoder`` (``encoder.weight``,
``encoder.bias``, ``W_dec``, ``b_dec``), so the same ``sae.safetensors`` loads in both. Encoding is
``x - b_dec -> Linear -> ReLU -> top-k``; decoding is a gather-sum of ``k`` decoder rows plus ``b_dec``.

Nothing ``N x num_latents`` is ever kept: the encoder runs over row blocks (each block's pre-activations
stay in cache, are reduced to their top-k and dropped) and both backward passes are sparse (the gradient of
the ``k`` picked activations is a sampled dot product, the weight gradients are a sparse ``latents x N``
matrix times a dense ``N x d_in`` one). ReLU is applied to the ``k`` winners only: ``relu`` is monotone,
so the kept values equal those of ``topk(relu(pre))``.

The module keeps no Python-side state besides its parameters, so it can be wrapped in DDP as is.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3attn.errors import S3Error

# Pre-activation elements per encoder block on CPU (2**22 fp32 = 16 MiB: 1024 rows at 4096 latents).
_CPU_BLOCK_ELEMS = 1 << 22
# Top-k search pyramid (CPU): group size, at most this many levels, top level at least this many x k wide.
_GROUP = 4
_PYRAMID_LEVELS = 2
_MIN_TOP_WIDTH = 4
# Dtypes the sparse kernels take directly; others (bf16, fp16) run their backward in fp32.
_SPARSE_DTYPES = (torch.float32, torch.float64)


@dataclass
class SaeConfig:
    """Shape of one Top-k SAE (the fields eai-sparsify's ``cfg.json`` needs, minus the constant ones)."""

    d_in: int
    """Width of the input vectors (the attention head dimension)."""
    num_latents: int
    """Number of dictionary latents (the SAE width)."""
    k: int
    """Number of active latents per input vector."""
    normalize_decoder: bool = True
    """Keep decoder rows at unit norm and drop the gradient component parallel to them."""
    multi_topk: bool = False
    """Also train the reconstruction from the top 4k latents (Multi-TopK loss, weight 1/8)."""

    def __post_init__(self) -> None:
        for name in ("d_in", "num_latents", "k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise S3Error(f"SAE config: {name} must be a positive integer, got {value!r}")
        if self.k > self.num_latents:
            raise S3Error(f"SAE config: k={self.k} exceeds num_latents={self.num_latents}; lower k")

    @property
    def expansion_factor(self) -> int:
        """``num_latents // d_in`` (the multiple eai-sparsify records)."""
        return self.num_latents // self.d_in


class EncoderOutput(NamedTuple):
    top_acts: Tensor  # [N, k] activations of the chosen latents (>= 0), in the SAE dtype
    top_indices: Tensor  # [N, k] int64 latent ids, unordered within a row


class ForwardOutput(NamedTuple):
    sae_out: Tensor  # same shape as the input, SAE dtype
    top_acts: Tensor  # [N, k]
    top_indices: Tensor  # [N, k] int64
    fvu: Tensor  # 0-dim (fp32, fp64 for fp64 SAEs): sum(e^2) / sum((x - mean(x))^2)
    auxk_loss: Tensor  # 0-dim, already scaled by auxk_coef (add it to fvu)
    multi_topk_fvu: Tensor  # 0-dim; 0 unless cfg.multi_topk (trainers add it / 8)


def default_lr(num_latents: int) -> float:
    """Adam learning rate that scales as ``1/sqrt(width)``: ``2e-4`` at ``2**14`` latents."""
    return 2e-4 / math.sqrt(num_latents / 2**14)


# ---- sparse kernels ------------------------------------------------------------------------------------


def _group_plan(num_latents: int, k: int) -> list[int]:
    """Group sizes of the max-pyramid used to find the top-k (empty: plain ``torch.topk``)."""
    plan, size = [], num_latents
    while len(plan) < _PYRAMID_LEVELS and size % _GROUP == 0 and size // _GROUP >= _MIN_TOP_WIDTH * k:
        plan.append(_GROUP)
        size //= _GROUP
    return plan


def _pyramid_topk(pre_BM: Tensor, k: int, plan: list[int]) -> tuple[Tensor, Tensor]:
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
    vals, chosen = torch.topk(levels[-1], k, dim=1, sorted=False)
    for g, level in zip(reversed(plan), reversed(levels[:-1])):
        width = level.shape[1]
        offsets = torch.arange(0, width, width // g, device=level.device)
        cand = (chosen.unsqueeze(2) + offsets).view(n, k * g)
        vals, pos = torch.topk(level.gather(1, cand), k, dim=1, sorted=False)
        chosen = cand.gather(1, pos)
    return vals, chosen


@torch.no_grad()
def _topk_preacts(xc_ND: Tensor, W_MD: Tensor, b_M: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of ``xc @ W.T + b`` per row (raw values, unordered), one cache-sized row block at a time."""
    n, num_latents = xc_ND.shape[0], W_MD.shape[0]
    vals_NK = torch.empty(n, k, dtype=xc_ND.dtype, device=xc_ND.device)
    idx_NK = torch.empty(n, k, dtype=torch.long, device=xc_ND.device)
    if n == 0:
        return vals_NK, idx_NK
    W_DM = W_MD.t()
    if xc_ND.device.type != "cpu":  # one pass: GPU topk is fast and blocks would only add launches
        torch.topk(torch.addmm(b_M, xc_ND, W_DM), k, dim=1, sorted=False, out=(vals_NK, idx_NK))
        return vals_NK, idx_NK
    step = max(1, min(n, _CPU_BLOCK_ELEMS // num_latents))
    buf = torch.empty(step, num_latents, dtype=xc_ND.dtype)  # reused: stays in cache, no page faults
    plan = _group_plan(num_latents, k)
    for start in range(0, n, step):
        stop = min(n, start + step)
        pre_BM = torch.addmm(b_M, xc_ND[start:stop], W_DM, out=buf[: stop - start])
        if plan:
            vals_NK[start:stop], idx_NK[start:stop] = _pyramid_topk(pre_BM, k, plan)
        else:
            torch.topk(pre_BM, k, dim=1, sorted=False, out=(vals_NK[start:stop], idx_NK[start:stop]))
    return vals_NK, idx_NK


def _csr(crow: Tensor, cols: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch's one-time "sparse CSR is beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, size, check_invariants=False)


def _sampled_dot(g_ND: Tensor, W_MD: Tensor, idx_NK: Tensor) -> Tensor:
    """``out[n, j] = <g[n], W[idx[n, j]]>`` without gathering ``N x k x d`` rows (SDDMM)."""
    n, k = idx_NK.shape
    crow = torch.arange(0, n * k + 1, k, device=idx_NK.device)
    zeros = torch.zeros(n * k, dtype=g_ND.dtype, device=g_ND.device)
    pattern = _csr(crow, idx_NK.reshape(-1), zeros, (n, W_MD.shape[0]))
    return torch.sparse.sampled_addmm(pattern, g_ND, W_MD.t(), beta=0.0).values().view(n, k)


def _scatter_rows(idx_NK: Tensor, w_NK: Tensor, dense_ND: Tensor, num_rows: int) -> Tensor:
    """``out[m] = sum over (n, j) with idx[n, j] == m of w[n, j] * dense[n]``: a sparse ``M x N`` matmul."""
    n, k = idx_NK.shape
    flat = idx_NK.reshape(-1)
    order = torch.argsort(flat, stable=True)  # groups by latent; sample ids stay sorted (valid CSR)
    crow = torch.zeros(num_rows + 1, dtype=torch.long, device=flat.device)
    torch.cumsum(torch.bincount(flat, minlength=num_rows), 0, out=crow[1:])
    cols = torch.div(order, k, rounding_mode="floor")
    return _csr(crow, cols, w_NK.reshape(-1)[order], (num_rows, n)) @ dense_ND


def _upcast(*ts: Tensor) -> list[Tensor]:
    return [t if t.dtype in _SPARSE_DTYPES else t.float() for t in ts]


class _TopKEncode(torch.autograd.Function):
    """``acts, idx = topk(relu(xc @ W.T + b))`` with a backward that touches only the chosen latents."""

    @staticmethod
    def forward(ctx, xc_ND: Tensor, W_MD: Tensor, b_M: Tensor, k: int):  # type: ignore[override]
        vals_NK, idx_NK = _topk_preacts(xc_ND, W_MD, b_M, k)
        acts_NK = vals_NK.relu_()
        ctx.save_for_backward(xc_ND, W_MD, acts_NK, idx_NK)
        ctx.mark_non_differentiable(idx_NK)
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
            g_W = _scatter_rows(idx_NK, g32, xc32, W_MD.shape[0]).to(W_MD.dtype)
        if ctx.needs_input_grad[2]:
            g_b = torch.zeros(W_MD.shape[0], dtype=torch.float32, device=W_MD.device)
            g_b = g_b.index_add_(0, idx_NK.reshape(-1), g_NK.reshape(-1).float()).to(W_MD.dtype)
        return g_xc, g_W, g_b, None


class _SparseDecode(torch.autograd.Function):
    """``out[n] = sum_j acts[n, j] * W[idx[n, j]]`` with sparse gradients for ``acts`` and ``W``."""

    @staticmethod
    def forward(ctx, acts_NK: Tensor, idx_NK: Tensor, W_MD: Tensor):  # type: ignore[override]
        ctx.save_for_backward(acts_NK, idx_NK, W_MD)
        return F.embedding_bag(idx_NK, W_MD, per_sample_weights=acts_NK.to(W_MD.dtype), mode="sum")

    @staticmethod
    def backward(ctx, g_out_ND: Tensor):  # type: ignore[override]
        acts_NK, idx_NK, W_MD = ctx.saved_tensors
        g_out32, W32, acts32 = _upcast(g_out_ND.contiguous(), W_MD, acts_NK)
        g_acts = g_W = None
        if ctx.needs_input_grad[0]:
            g_acts = _sampled_dot(g_out32, W32, idx_NK).to(acts_NK.dtype)
        if ctx.needs_input_grad[2]:
            g_W = _scatter_rows(idx_NK, acts32, g_out32, W_MD.shape[0]).to(W_MD.dtype)
        return g_acts, None, g_W


# ---- module --------------------------------------------------------------------------------------------


class TopKSAE(nn.Module):
    """Top-k SAE with eai-sparsify parameter names; see the module docstring for the fast paths."""

    def __init__(
        self, cfg: SaeConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.Linear(cfg.d_in, cfg.num_latents, device=device, dtype=dtype)
        self.W_dec = nn.Parameter(self.encoder.weight.detach().clone())  # tied init
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, device=device, dtype=self.encoder.weight.dtype))
        with torch.no_grad():
            self.encoder.bias.zero_()
        if cfg.normalize_decoder:
            self.set_decoder_norm_to_unit_norm()

    @property
    def device(self) -> torch.device:
        return self.encoder.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.weight.dtype

    def _flat(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"TopKSAE: input width {x.shape[-1]} != d_in {self.cfg.d_in}")
        return x.reshape(-1, self.cfg.d_in).to(self.dtype)

    def _encode(self, xc_ND: Tensor, k: int) -> EncoderOutput:
        acts, idx = _TopKEncode.apply(xc_ND, self.encoder.weight, self.encoder.bias, k)
        return EncoderOutput(acts, idx)

    def encode(self, x_ND: Tensor) -> EncoderOutput:
        """Top-k latents of ``x`` ([N, d_in] or [..., d_in], flattened to N rows)."""
        return self._encode(self._flat(x_ND) - self.b_dec, self.cfg.k)

    def decode(self, top_acts: Tensor, top_indices: Tensor) -> Tensor:
        """``sum_j top_acts[n, j] * W_dec[top_indices[n, j]] + b_dec`` -> [N, d_in]."""
        return _SparseDecode.apply(top_acts, top_indices, self.W_dec) + self.b_dec

    def forward(
        self, x_ND: Tensor, *, dead_mask: Tensor | None = None, auxk_coef: float = 1 / 32
    ) -> ForwardOutput:
        """Reconstruct ``x``; FVU, AuxK (on the latents ``dead_mask`` marks dead) and Multi-TopK losses."""
        x = self._flat(x_ND)
        xc = x - self.b_dec
        k = self.cfg.k
        if self.cfg.multi_topk:
            acts4, idx4 = self._encode(xc, min(4 * k, self.cfg.num_latents))
            top_acts, pos = acts4.topk(k, dim=1, sorted=False)
            top_idx = idx4.gather(1, pos)
        else:
            top_acts, top_idx = self._encode(xc, k)
        sae_out = self.decode(top_acts, top_idx)

        loss_dtype = torch.promote_types(self.dtype, torch.float32)
        x32 = x.to(loss_dtype)
        e = x32 - sae_out.to(loss_dtype)
        total_var = (x32 - x32.mean(0)).pow(2).sum()
        fvu = e.pow(2).sum() / total_var
        zero = fvu.new_zeros(())

        auxk = zero
        if dead_mask is not None and auxk_coef != 0:
            dead_ids = torch.nonzero(dead_mask.to(device=x.device, dtype=torch.bool).reshape(-1)).squeeze(1)
            n_dead = int(dead_ids.numel())
            if n_dead > 0:
                k_aux = min(self.cfg.d_in // 2, n_dead)
                W_sub = self.encoder.weight.index_select(0, dead_ids)
                b_sub = self.encoder.bias.index_select(0, dead_ids)
                aux_acts, aux_pos = _TopKEncode.apply(xc, W_sub, b_sub, max(1, k_aux))
                e_hat = _SparseDecode.apply(aux_acts, dead_ids[aux_pos], self.W_dec).to(loss_dtype)
                target = e.detach()
                denom = (target - target.mean(0)).pow(2).sum().clamp_min(torch.finfo(loss_dtype).tiny)
                auxk = auxk_coef * (e_hat - target).pow(2).sum() / denom

        mtk = zero
        if self.cfg.multi_topk:
            out4 = self.decode(acts4, idx4).to(loss_dtype)
            mtk = (x32 - out4).pow(2).sum() / total_var

        return ForwardOutput(sae_out.reshape(x_ND.shape), top_acts, top_idx, fvu, auxk, mtk)

    @torch.no_grad()
    def init_b_dec(self, x_ND: Tensor, method: str = "geometric_median", *, iters: int = 100) -> None:
        """Set ``b_dec`` to the mean or the geometric median (Weiszfeld iterations) of a batch."""
        x = self._flat(x_ND).float()
        if method == "mean":
            center = x.mean(0)
        elif method == "geometric_median":
            center = x.mean(0)
            scale = (x - center).norm(dim=1).mean().clamp_min(1e-12)
            for _ in range(iters):
                dist = (x - center).norm(dim=1).clamp_min(1e-8 * scale)
                w = dist.reciprocal()
                new = (w[:, None] * x).sum(0) / w.sum()
                moved = (new - center).norm()
                center = new
                if moved <= 1e-6 * scale:
                    break
        else:
            raise S3Error(f"init_b_dec: method must be 'mean' or 'geometric_median', got {method!r}")
        self.b_dec.copy_(center.to(self.dtype))

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        eps = torch.finfo(self.W_dec.dtype).eps
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True) + eps)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project each decoder row's gradient onto the row's orthogonal complement (no-op without grad)."""
        grad = self.W_dec.grad
        if grad is None:
            return
        W = self.W_dec
        norm2 = W.pow(2).sum(1, keepdim=True).clamp_min(torch.finfo(W.dtype).eps)
        coef = (grad * W).sum(1, keepdim=True) / norm2
        grad.sub_(coef * W)
