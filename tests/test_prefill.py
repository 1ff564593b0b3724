"""Tests of index_builder.prefill: chunk planning over streamed token pieces, and chunk -> codes vs a direct tap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model

from s3attn.index_builder.prefill import encode_chunk, iter_doc_chunks, plan_chunks
from s3attn.models.taps import tap_heads
from s3attn.saes import SaeConfig, TopKSAE

LAYERS = (1, 3)
K, F = 4, 64


@pytest.fixture(autouse=True)
def _one_thread():
    """The CPU is shared: one intra-op thread is much faster than two contended ones for tiny matmuls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_pieces(ids: list[int], rng: np.random.Generator) -> list[list[int]]:
    """``ids`` cut at random places (empty pieces included), as tokenized text blocks arrive."""
    cuts = np.sort(rng.integers(0, len(ids) + 1, size=6))
    bounds = [0, *cuts.tolist(), len(ids)]
    return [ids[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize(
    ("n", "chunk", "overlap"), [(0, 8, 2), (5, 8, 2), (8, 8, 2), (61, 8, 3), (40, 16, 0)]
)
def test_chunks_follow_the_plan_whatever_the_pieces(n: int, chunk: int, overlap: int) -> None:
    rng = np.random.default_rng(n)
    ids = rng.integers(4, 200, size=n).tolist()
    plan = plan_chunks(n, chunk, overlap)
    for trial in range(3):
        pieces = [ids] if trial == 0 else _random_pieces(ids, rng)
        chunks = list(iter_doc_chunks(7, iter(pieces), chunk, overlap))
        assert len(chunks) == len(plan)
        covered: list[int] = []
        for c, (ctx, start, end) in zip(chunks, plan):
            assert c.doc_idx == 7 and c.start == start and c.n_context == start - ctx
            assert c.input_ids.dtype == np.int64
            assert c.input_ids.tolist() == ids[ctx:end]  # left context + new tokens, nothing else
            covered += c.input_ids[c.n_context :].tolist()
        assert covered == ids  # every token is new in exactly one chunk, in order


def test_one_huge_piece_is_chunked_whole() -> None:
    """200k tokens in one piece, chunk 16 (re-slicing the rest of the buffer per chunk would be quadratic)."""
    ids = list(range(200_000))
    n_chunks, last = 0, None
    for c in iter_doc_chunks(0, iter([ids]), 16, 4):
        n_chunks += 1
        last = c
    assert n_chunks == 12_500 and last is not None and last.input_ids[-1] == 199_999


def _saes(seed: int) -> dict[int, TopKSAE]:
    torch.manual_seed(seed)
    return {layer: TopKSAE(SaeConfig(d_in=16, num_latents=F, k=K)).eval() for layer in LAYERS}


def _sorted_codes(idx: np.ndarray, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes as (int64 ids, float32 acts) sorted by id within each row (top-k order is unspecified)."""
    idx = np.asarray(idx).astype(np.int64)
    order = np.argsort(idx, axis=1)
    return np.take_along_axis(idx, order, 1), np.take_along_axis(np.asarray(acts, np.float32), order, 1)


# encode_chunk keeps codes compact in RAM until a segment is written: uint16 ids, float16 activations
ACT_RTOL, ACT_ATOL = 1e-3, 1e-4


@torch.no_grad()
def test_encode_chunk_equals_direct_tap_over_the_same_left_context() -> None:
    model, saes = tiny_model("llama"), _saes(1)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 60, size=45)
    chunks = list(iter_doc_chunks(0, iter([ids.tolist()]), 16, 5))
    assert [c.n_context for c in chunks] == [0, 5, 5]
    for c in chunks:
        cc = encode_chunk(model, saes, c)
        n_new = len(c.input_ids) - c.n_context
        assert cc.num_tokens == n_new and cc.start == c.start
        assert (
            cc.token_ids.dtype == np.uint32
            and cc.token_ids.tolist() == ids[c.start : c.start + n_new].tolist()
        )
        assert set(cc.codes) == {(layer, h) for layer in LAYERS for h in range(2)}
        # the same left context, tapped directly and encoded head by head
        taps = tap_heads(model, torch.as_tensor(c.input_ids)[None], list(LAYERS), sites=("k",))
        for layer in LAYERS:
            keys_THD = taps.keys[layer][0, c.n_context :]
            for h in range(keys_THD.shape[1]):
                enc = saes[layer].encode(keys_THD[:, h])
                want_idx, want_act = _sorted_codes(enc.top_indices.numpy(), enc.top_acts.numpy())
                assert cc.codes[(layer, h)][0].shape == (n_new, K)
                got_idx, got_act = _sorted_codes(*cc.codes[(layer, h)])
                np.testing.assert_array_equal(got_idx, want_idx)
                np.testing.assert_allclose(got_act, want_act, rtol=ACT_RTOL, atol=ACT_ATOL)


@torch.no_grad()
def test_first_chunk_codes_equal_a_whole_document_tap() -> None:
    """Causal attention: a chunk that starts at the document start sees exactly what a full pass sees."""
    model, saes = tiny_model("llama"), _saes(2)
    ids = np.random.default_rng(3).integers(4, 60, size=40)
    first = next(iter_doc_chunks(0, iter([ids.tolist()]), 16, 4))
    cc = encode_chunk(model, saes, first)
    full = tap_heads(model, torch.as_tensor(ids)[None], list(LAYERS), sites=("k",))
    for layer in LAYERS:
        for h in range(2):
            enc = saes[layer].encode(full.keys[layer][0, :16, h])
            want_idx, want_act = _sorted_codes(enc.top_indices.numpy(), enc.top_acts.numpy())
            got_idx, got_act = _sorted_codes(*cc.codes[(layer, h)])
            np.testing.assert_array_equal(got_idx, want_idx)
            np.testing.assert_allclose(got_act, want_act, rtol=ACT_RTOL, atol=ACT_ATOL)
