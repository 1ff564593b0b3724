"""Format 4: a segment's documents table in three arrays (``docs``, ``doc_paths``, ``doc_hashes``), not in its
attributes' JSON; indexes of format 3 (``tests/data/index_v3``, made by the code of format 3) read as before,
and a writer moves their documents into arrays when it merges them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from s3attn.constants import INDEX_FORMAT_VERSION, INDEX_MANIFEST, INDEX_ROOT, SEGMENTS_DIR
from s3attn.errors import IndexCorruptError
from s3attn.index_builder.doc_table import DocColumns, DocTable, decode_strings, encode_strings
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.meta import SegmentAttrs
from s3attn.index_builder.reader import IndexReader
from s3attn.index_builder.schema import DOC_ARRAYS, DocRecord, SegmentData

DATA = Path(__file__).parent / "data"


@pytest.fixture
def index_v3(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of tests/data/index_v3 (format 3) and what the format-3 reader returned from it."""
    path = shutil.copytree(DATA / "index_v3", tmp_path / "index_v3")
    exp = dict(np.load(DATA / "index_v3_expected.npz"))
    exp["info"] = json.loads(str(exp["info"]))
    return path, exp


def _segment_json(index: Path, name: str) -> dict:
    return json.loads((index / INDEX_ROOT / SEGMENTS_DIR / name / "zarr.json").read_text())["attributes"]


def _expected_docs(exp: dict) -> list[DocRecord]:
    return [DocRecord(*d) for d in exp["info"]["documents"]]


def _assert_reads_as(st: IndexReader, exp: dict) -> None:
    assert st.verify() == []
    assert st.documents() == _expected_docs(exp)
    assert list(st.doc_table()) == list(DocTable.of(_expected_docs(exp)))
    assert st.tokens(0, st.num_tokens).tolist() == exp["tokens"].tolist()
    for layer, h in st.heads:
        post = st.postings(layer, h, np.arange(st.meta.num_latents))
        order = np.lexsort((post.feature_slot, post.positions))
        want = np.lexsort((exp[f"feature_slot_{layer}_{h}"], exp[f"positions_{layer}_{h}"]))
        assert np.array_equal(post.positions[order], exp[f"positions_{layer}_{h}"][want])
        assert np.array_equal(post.acts[order], exp[f"acts_{layer}_{h}"][want])


def test_index_of_format_3_reads_as_before(index_v3: tuple[Path, dict]) -> None:
    path, exp = index_v3
    assert "docs" in _segment_json(path, "seg-000002")  # the table is in the attributes there
    with IndexReader.open(path) as st:
        assert st.format_version == 3 and "documents" not in st.info()["bytes_by_array"]
        _assert_reads_as(st, exp)
        # b.md is cut across two segments: one row of the table
        assert [r[1:] for r in st.doc_table()] == [("a.txt", 0, 42), ("b.md", 42, 117), ("c.txt", 117, 151)]


def test_merge_moves_the_documents_of_format_3_into_arrays(index_v3: tuple[Path, dict]) -> None:
    path, exp = index_v3
    with IndexWriter.open(path) as st:
        assert st.merge(into_one=True) == 3
        name = st.segments[0].name
        assert st.format_version == INDEX_FORMAT_VERSION == 4 and st.info()["bytes_by_array"]["documents"] > 0
        _assert_reads_as(st, exp)
    attrs = _segment_json(path, name)
    assert "docs" not in attrs and set(DOC_ARRAYS) <= set(attrs["checksums"])
    with IndexReader.open(path) as st:  # a fresh reader of the merged index
        _assert_reads_as(st, exp)


def test_a_format_4_segment_beside_format_3_ones(index_v3: tuple[Path, dict]) -> None:
    """Appending writes the new segment's documents as arrays (a non-ASCII path, many documents); the table
    of the whole index joins both kinds."""
    path, exp = index_v3
    rng = np.random.default_rng(0)
    with IndexWriter.open(path) as st:
        start, k, f = st.num_tokens, st.meta.k, st.meta.num_latents
        docs = [DocRecord(10 + i, f"notes/été-{i}.md", f"hash{i}", start + 3 * i, 3) for i in range(40)]
        n = 3 * len(docs)
        codes = {
            h: (np.stack([rng.choice(f, k, replace=False) for _ in range(n)]), np.ones((n, k)))
            for h in st.heads
        }
        st.add_segment(SegmentData(rng.integers(0, 100, n).astype(np.uint32), docs, start, codes))
        new = st.segments[-1].name
        assert st.verify() == [] and st.documents() == _expected_docs(exp) + docs
    assert "docs" not in _segment_json(path, new)
    with IndexReader.open(path) as st:
        table = st.doc_table()
        assert list(table) == list(DocTable.of(_expected_docs(exp) + docs))
        assert table[3] == (10, "notes/été-0.md", start, start + 3) and len(table) == 3 + 40


def test_a_path_with_a_nul_is_refused_before_anything_is_written(index_v3: tuple[Path, dict]) -> None:
    path, _exp = index_v3
    before = sorted(p.name for p in (path / INDEX_ROOT / SEGMENTS_DIR).iterdir())
    manifest = (path / INDEX_MANIFEST).read_text()
    with IndexWriter.open(path) as st:
        start, k = st.num_tokens, st.meta.k
        codes = {h: (np.tile(np.arange(k), (2, 1)), np.ones((2, k))) for h in st.heads}
        doc = DocRecord(9, "bad\0name.txt", "h", start, 2)
        with pytest.raises(ValueError, match="NUL"):
            st.add_segment(SegmentData(np.zeros(2, np.uint32), [doc], start, codes))
    assert sorted(p.name for p in (path / INDEX_ROOT / SEGMENTS_DIR).iterdir()) == before
    assert (path / INDEX_MANIFEST).read_text() == manifest


def test_a_damaged_documents_array_is_named(index_v3: tuple[Path, dict]) -> None:
    path, _exp = index_v3
    with IndexWriter.open(path) as st:
        st.merge(into_one=True)
        name = st.segments[0].name
    chunk = path / INDEX_ROOT / SEGMENTS_DIR / name / "docs" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with IndexReader.open(path) as st:
        with pytest.raises(IndexCorruptError, match=f"{name}.*docs"):
            st.doc_table()
        assert any("docs" in p for p in st.verify())


def test_doc_columns_problems_name_what_is_wrong() -> None:
    recs = [DocRecord(0, "a", "h0", 100, 5), DocRecord(1, "b", "h1", 105, 7)]
    cols = DocColumns.of(recs)
    assert cols.records() == recs and cols.problems(100, 12, 2) == []
    assert "3 documents" not in cols.problems(100, 12, 2) and cols.problems(100, 12, 3) == [
        "2 documents, the manifest says 3"
    ]
    assert cols.problems(100, 13, 2) == ["documents cover 12 tokens, the segment has 13"]
    assert cols.problems(99, 13, 2) == ["document 0 does not start where the previous one ends"]
    gap = DocColumns(np.array([[0, 100, 5], [1, 106, 6]]), cols.paths, cols.hashes)
    assert gap.problems(100, 12, 2) == ["document 1 does not start where the previous one ends"]
    short = DocColumns(cols.table_D3, encode_strings(["a"], "path"), cols.hashes)
    assert short.problems(100, 12, 2) == ["the documents table holds 1 paths for 2 documents"]
    assert decode_strings(encode_strings(["", "é", "x y"], "path")) == ["", "é", "x y"]


def test_opening_format_3_parses_each_segment_attributes_once(
    index_v3: tuple[Path, dict], monkeypatch
) -> None:
    """The documents of a format-3 segment come from the same parse as its other attributes."""
    path, exp = index_v3
    calls: list[int] = []
    real = SegmentAttrs.from_json.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        SegmentAttrs, "from_json", classmethod(lambda cls, obj: calls.append(1) or real(cls, obj))
    )
    with IndexReader.open(path) as st:
        assert list(st.doc_table()) == list(DocTable.of(_expected_docs(exp)))
        assert len(calls) == len(st.segments) == 3
