"""Top-k sparse autoencoder (Gao et al. 2024 recipe, eai-sparsify compatible weights), written for speed.

``TopKSAE`` holds four parameters named as in eai-sparsify's ``SparseCoder`` (``encoder.weight``,
``encoder.bias``, ``W_dec``, ``b_dec``), so the same ``sae.safetensors`` loads in both. Encoding is
``x - b_dec -> Linear -> ReLU -> top-k``; decoding is a gather-sum of ``k`` decoder rows plus ``b_dec``.
Both run through the exact sparse kernels of ``s3attn.saes.kernels`` (blocked pyramid top-k, sparse
backward passes, two-op loss backward): nothing ``N x latents`` is kept for backward.

The module keeps no Python-side state besides its parameters, so it can be wrapped in DDP as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from s3attn.errors import S3Error
from s3attn.saes.kernels import _SparseDecode, _SquaredError, _TopKEncode, _total_variance


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

    def _encode(self, xc_ND: Tensor, k: int, cache: dict | None = None) -> EncoderOutput:
        acts, idx = _TopKEncode.apply(xc_ND, self.encoder.weight, self.encoder.bias, k, cache)
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
        cache: dict = {}  # the encoder and decoder backward share one sort of the chosen latent ids
        if self.cfg.multi_topk:
            acts4, idx4 = self._encode(xc, min(4 * k, self.cfg.num_latents), cache)
            top_acts, pos = acts4.topk(k, dim=1, sorted=False)
            top_idx = idx4.gather(1, pos)
        else:
            top_acts, top_idx = self._encode(xc, k, cache)
        dec = _SparseDecode.apply(top_acts, top_idx, self.W_dec, cache)
        sae_out = dec + self.b_dec

        # residual e = x - sae_out = xc - dec; losses in fp32 (fp64 for fp64 SAEs)
        loss_dtype = torch.promote_types(self.dtype, torch.float32)
        total_var = _total_variance(x.to(loss_dtype))
        fvu = _SquaredError.apply(xc, dec, loss_dtype) / total_var
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
                e_hat = _SparseDecode.apply(aux_acts, dead_ids[aux_pos], self.W_dec)
                target = (xc.detach() - dec.detach()).to(loss_dtype)
                denom = _total_variance(target).clamp_min(torch.finfo(loss_dtype).tiny)
                auxk = auxk_coef * _SquaredError.apply(e_hat, target, loss_dtype) / denom

        mtk = zero
        if self.cfg.multi_topk:
            dec4 = _SparseDecode.apply(acts4, idx4, self.W_dec, cache)
            mtk = _SquaredError.apply(xc, dec4, loss_dtype) / total_var

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
        norm2 = torch.linalg.vecdot(W, W).clamp_min_(torch.finfo(W.dtype).eps)
        coef = torch.linalg.vecdot(grad, W).div_(norm2)
        grad.addcmul_(W, coef.unsqueeze(1), value=-1)
