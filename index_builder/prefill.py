"""Tokens -> taps -> codes: streaming prefill of one document in chunks, no KV cache kept across chunks.

A document's tokens are cut into chunks of ``chunk`` tokens; each chunk is prefilled with up to
``overlap`` tokens of left context (their codes are discarded), the forward stops after the deepest
indexed layer, and every KV head's pre-RoPE key vector is encoded by that layer's SAE on the model's
device, cast to the SAE's dtype first (the model may run in bf16; the SAE stays float32). Memory is bounded
by one chunk, whatever the document's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from einops import rearrange

from s3attn.models.taps import tap_heads


class Chunk(NamedTuple):
    """Tokens to prefill: ``input_ids`` = left context + new tokens; codes kept for the last ``len - n_context``."""

    doc_idx: int
    start: int  # position of the first NEW token inside the document
    n_context: int
    input_ids: np.ndarray  # int64 [n_context + n_new]


class ChunkCodes(NamedTuple):
    doc_idx: int
    start: int
    num_tokens: int
    token_ids: np.ndarray  # uint32 [T] the new tokens
    codes: dict[
        tuple[int, int], tuple[np.ndarray, np.ndarray]
    ]  # (layer, kv_head) -> (indices_TK int32, acts_TK f32)


def plan_chunks(num_tokens: int, chunk: int, overlap: int) -> list[tuple[int, int, int]]:
    """(context_start, start, end) per chunk covering ``[0, num_tokens)``."""
    out = []
    for start in range(0, num_tokens, chunk):
        out.append((max(0, start - overlap), start, min(num_tokens, start + chunk)))
    return out


def iter_doc_chunks(
    doc_idx: int, token_stream: Iterator[list[int]], chunk: int, overlap: int
) -> Iterator[Chunk]:
    """Chunks of a document whose tokens arrive in pieces (bounded memory for huge documents)."""
    buf: list[int] = []
    head = 0  # buf[:head] is already chunked (dropped once per piece, so no quadratic copying)
    consumed = 0  # document position of buf[head]
    context: list[int] = []
    for piece in token_stream:
        del buf[:head]
        head = 0
        buf.extend(piece)
        while len(buf) - head >= chunk:
            new = buf[head : head + chunk]
            head += chunk
            yield Chunk(doc_idx, consumed, len(context), np.asarray(context + new, dtype=np.int64))
            context = new[-overlap:] if overlap > 0 else []
            consumed += chunk
    if len(buf) > head:
        yield Chunk(doc_idx, consumed, len(context), np.asarray(context + buf[head:], dtype=np.int64))


@torch.no_grad()
def encode_chunk(model, saes: dict[int, torch.nn.Module], chunk: Chunk) -> ChunkCodes:
    """Prefill one chunk to the deepest SAE layer and encode every new token's key heads."""
    device = next(model.parameters()).device
    ids = torch.as_tensor(chunk.input_ids, device=device)[None]
    layers = sorted(saes)
    taps = tap_heads(model, ids, layers, sites=("k",))
    codes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for layer in layers:
        sae = saes[layer]
        keys_THD = taps.keys[layer][0, chunk.n_context :]
        n_tok, n_heads, _ = keys_THD.shape
        # the keys in the SAE's dtype (float32: an fp32 encode of bf16 keys keeps the codes closest to an
        # fp32 build's, see bench/bench_precision_sae.py)
        enc = sae.encode(rearrange(keys_THD, "t h d -> (t h) d").to(sae.dtype))
        # compact in RAM until the segment is written: uint16 ids (F <= 65536), float16 activations
        id_dtype = torch.int32 if sae.cfg.num_latents > 65536 else torch.int16
        idx_THK = rearrange(enc.top_indices, "(t h) k -> t h k", t=n_tok).to(id_dtype).cpu().numpy()
        if id_dtype == torch.int16:
            idx_THK = idx_THK.view(np.uint16)
        act_THK = rearrange(enc.top_acts, "(t h) k -> t h k", t=n_tok).to(torch.float16).cpu().numpy()
        for head in range(n_heads):
            codes[(layer, head)] = (
                np.ascontiguousarray(idx_THK[:, head]),
                np.ascontiguousarray(act_THK[:, head]),
            )
    new_ids = chunk.input_ids[chunk.n_context :].astype(np.uint32)
    return ChunkCodes(chunk.doc_idx, chunk.start, len(new_ids), new_ids, codes)
