"""The BM25 reader at scale (found by bench/bench_scale.py): a loaded index does not read the passage texts
until asked, and search picks its best passages without sorting every positive score, with the same hits."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from s3attn.index_builder import bm25 as bm25_mod
from s3attn.index_builder.bm25 import BM25Index, Passage, holds, top_passages
from s3attn.index_builder.bm25_build import BM25Writer

WORDS = "river stone garden window paper music yellow market engine silver".split()


def _reference_top(scores: np.ndarray, top_k: int) -> np.ndarray:
    """The order search used before: a stable sort of every positive score."""
    pos = np.flatnonzero(scores > 0)
    return pos[np.argsort(-scores[pos], kind="stable")[:top_k]]


@pytest.mark.parametrize("seed", range(20))
def test_top_passages_is_the_stable_sort_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    scores = rng.integers(0, 6, n).astype(np.float64) * 0.5  # many ties and zeros
    for top_k in (0, 1, 3, 10, n, n + 5):
        np.testing.assert_array_equal(top_passages(scores, top_k), _reference_top(scores, top_k))


def test_holds_matches_isin_sorted_or_not():
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 50, 30)
    for column in (np.array([], np.int64), np.unique(rng.integers(0, 50, 20)), rng.integers(0, 50, 20)):
        np.testing.assert_array_equal(holds(column, rows), np.isin(rows, column))


def _tied_index(tmp_path):
    """Repeated passages (as in a tiled index): most scores tie."""
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 12)) for _ in range(8)] * 25
    passages = [Passage(i, 16 * i, 16 * i + 16) for i in range(len(texts))]
    BM25Writer.build(passages, texts).save(tmp_path / "bm25")
    return texts


def test_loaded_index_reads_texts_on_first_use_only(tmp_path, monkeypatch):
    texts = _tied_index(tmp_path)
    read = []
    real = pq.read_table
    monkeypatch.setattr(bm25_mod.pq, "read_table", lambda *a, **k: read.append(a) or real(*a, **k))
    index = BM25Index.load(tmp_path / "bm25")
    hits = index.search("river garden engine", 5)
    assert hits and read == []  # loading and searching never decode the texts
    assert index.texts == texts and len(read) == 1
    assert index.texts == texts and len(read) == 1  # read once


def test_search_with_ties_same_hits_as_full_sort(tmp_path):
    _tied_index(tmp_path)
    index = BM25Index.load(tmp_path / "bm25")
    bm = index.retriever
    for q in ("river garden engine", "silver", "yellow market paper music"):
        scores = np.asarray(bm.get_scores([w for w in q.split() if w in bm.vocab_dict]), np.float64)
        for top_k in (1, 7, 64, 500):
            got = [h.passage.doc_id for h in index.search(q, top_k)]
            assert got == _reference_top(scores, top_k).tolist()


def test_file_crc32_reads_in_blocks(tmp_path) -> None:
    """The load-time check streams a file (no copy of it held); same crc32 as the whole file's at any block."""
    import zlib

    data = np.random.default_rng(0).integers(0, 256, 10_000).astype(np.uint8).tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    whole = f"{zlib.crc32(data):08x}"
    assert {bm25_mod.file_crc32(path, block) for block in (1, 7, 4096, 1 << 20)} == {whole}
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped in the last block
    assert bm25_mod.file_crc32(path, 4096) != whole
