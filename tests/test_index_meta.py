"""Typed index metadata (golden JSON), reading an index of format 1 (tests/data/index_v1), the recorded chunk
layouts of format 2, the impact tiers of format 3 (more in test_impact_tiers.py), and the split of
index_builder into reading and writing modules."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from s3attn.constants import INDEX_FORMAT_VERSION, INDEX_LAYOUT_ATTR, INDEX_MANIFEST
from s3attn.errors import S3Error
from s3attn.index_builder.chunks import array_layout
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.meta import IndexAttrs, Manifest, SegmentAttrs, SegmentMeta, read_manifest
from s3attn.index_builder.reader import IndexReader, doc_ranges
from s3attn.index_builder.schema import (
    ARRAY_LAYOUT,
    DOC_ARRAYS,
    LAYOUT_BLOSC,
    LAYOUT_RAW,
    LAYOUT_SHARDED,
    DocRecord,
    SegmentData,
    head_array,
)
from s3attn.index_builder.store import IndexStore

DATA = Path(__file__).parent / "data"
PACKAGE = Path(__file__).parent.parent / "index_builder"
READING = ("schema", "meta", "chunks", "doc_table", "segment_reader", "verify", "reader", "bm25")
WRITING = (
    "segment_writer",
    "segment_merge",
    "indexer",
    "store",
    "build",
    "prefill",
    "pipeline",
    "bm25_build",
    "cluster",
)

# ---- golden JSON -------------------------------------------------------------------------------------------
GOLDEN_MANIFEST = Manifest(
    generation=4,
    segments=(
        SegmentMeta("seg-000003", 0, 1000, 0, 2, 64000, "0badc0de", False),
        SegmentMeta("seg-000004", 1000, 500, 2, 1, 32000, "12345678", open_doc=True),
    ),
    format_version=3,
)
GOLDEN_ATTRS = IndexAttrs(
    model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    sae_release="smollm2-135m-k32",
    layers=(6, 12),
    num_kv_heads=3,
    k=32,
    num_latents=16384,
    head_dim=64,
    chunk=2048,
    overlap=64,
    sae_release_path="/data/releases/smollm2-135m-k32",
    model="smollm2",
    format_version=3,
    created="2026-01-02T03:04:05+00:00",
    extra={"note": "any other key the builder passed is kept"},
)
GOLDEN_SEGMENT = SegmentAttrs(  # format 4: the documents table in arrays, listed in the checksums
    token_start=1000,
    num_tokens=500,
    docs=None,
    checksums={
        "tokens": "0000abcd",
        "L6/h0/offsets": "1111abcd",
        "docs": "2222abcd",
        "doc_paths": "3333abcd",
        "doc_hashes": "4444abcd",
    },
)
GOLDEN_SEGMENT_V3 = SegmentAttrs(  # format 3: the documents table in the attributes
    token_start=1000,
    num_tokens=500,
    docs=(DocRecord(2, "docs/a.txt", "3f2a", 1000, 300), DocRecord(3, "docs/b.md", "9e01", 1300, 200)),
    checksums={"tokens": "0000abcd", "L6/h0/offsets": "1111abcd"},
    format_version=3,
)
GOLDEN_SEGMENT_V2 = dataclasses.replace(  # a segment of format 1 or 2: lists in position order, no new keys
    GOLDEN_SEGMENT_V3, format_version=None, posting_order="position", tier_divisors=(1,)
)

FORMAT_1_LAYOUT = {
    "tokens": LAYOUT_BLOSC,
    "offsets": LAYOUT_BLOSC,
    "pos_gaps": LAYOUT_SHARDED,
    "act_u8": LAYOUT_RAW,
}
"""The layouts format 1 wrote (tokens in one Blosc chunk per file; the writer now shards them)."""


def test_metadata_matches_the_golden_file() -> None:
    text = (DATA / "index_meta_golden.json").read_text()
    ours = {
        "manifest": GOLDEN_MANIFEST.to_json(),
        "index_attrs": GOLDEN_ATTRS.to_json(),
        "segment_attrs": GOLDEN_SEGMENT.to_json(),
        "segment_attrs_v3": GOLDEN_SEGMENT_V3.to_json(),
        "segment_attrs_v2": GOLDEN_SEGMENT_V2.to_json(),
    }
    assert json.dumps(ours, indent=2, sort_keys=True) + "\n" == text
    golden = json.loads(text)
    assert Manifest.from_json(golden["manifest"]) == GOLDEN_MANIFEST
    assert IndexAttrs.from_json(golden["index_attrs"]) == GOLDEN_ATTRS
    assert SegmentAttrs.from_json(golden["segment_attrs"]) == GOLDEN_SEGMENT
    assert SegmentAttrs.from_json(golden["segment_attrs_v3"]) == GOLDEN_SEGMENT_V3
    assert SegmentAttrs.from_json(golden["segment_attrs_v2"]) == GOLDEN_SEGMENT_V2
    assert GOLDEN_SEGMENT.tiers == (4096, 1024, 256, 64, 16, 4, 1) and GOLDEN_SEGMENT_V2.tiers == (1,)
    assert set(golden["segment_attrs_v3"]) - set(golden["segment_attrs_v2"]) == {
        "format_version",
        "posting_order",
        "tier_divisors",
    }
    assert set(golden["segment_attrs_v3"]) - set(golden["segment_attrs"]) == {"docs"}
    assert golden["segment_attrs"]["format_version"] == 4
    assert GOLDEN_ATTRS.heads == [(6, 0), (6, 1), (6, 2), (12, 0), (12, 1), (12, 2)]
    assert GOLDEN_MANIFEST.segments[1].token_end == 1500
    other = IndexAttrs.from_json({**golden["index_attrs"], "layers": [6, 13]})
    assert GOLDEN_ATTRS.identity_mismatch(other) == "layers"
    assert GOLDEN_ATTRS.identity_mismatch(IndexAttrs.from_json({**golden["index_attrs"], "chunk": 1})) is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m.pop("generation"), "'generation' is missing"),
        (lambda m: m["segments"][0].update(token_start="0"), "'token_start' must be an integer"),
        (lambda m: m["segments"][0].update(num_docs=True), "'num_docs' must be an integer"),
        (lambda m: m.update(segments={}), "'segments' must be a list"),
        (lambda m: m.update(kind="other"), "kind is 'other'"),
    ],
)
def test_bad_manifest_is_one_line_s3error(tmp_path: Path, change, words: str) -> None:
    manifest = GOLDEN_MANIFEST.to_json()
    change(manifest)
    (tmp_path / INDEX_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(S3Error) as err:
        read_manifest(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / INDEX_MANIFEST) in msg and "corrupt" in msg and words in msg


def test_newer_format_and_bad_attrs_are_refused(tmp_path: Path) -> None:
    manifest = {**GOLDEN_MANIFEST.to_json(), "format_version": INDEX_FORMAT_VERSION + 1}
    (tmp_path / INDEX_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(S3Error, match="newer than this s3attn; upgrade"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match=r"index attrs lack \['k'\]"):
        IndexAttrs.from_json({k: v for k, v in GOLDEN_ATTRS.to_json().items() if k != "k"})
    with pytest.raises(ValueError, match="list of integers"):
        IndexAttrs.from_json({**GOLDEN_ATTRS.to_json(), "layers": ["6"]})
    with pytest.raises(ValueError, match="'path' must be a string"):
        SegmentAttrs.from_json(
            {**GOLDEN_SEGMENT_V3.to_json(), "docs": [{**GOLDEN_SEGMENT_V3.to_json()["docs"][0], "path": 3}]}
        )
    with pytest.raises(ValueError, match="'docs' is missing"):  # up to format 3 the table is required
        SegmentAttrs.from_json({k: v for k, v in GOLDEN_SEGMENT_V3.to_json().items() if k != "docs"})
    with pytest.raises(ValueError, match="posting_order 'zigzag' is unknown"):
        SegmentAttrs.from_json({**GOLDEN_SEGMENT.to_json(), "posting_order": "zigzag"})
    for bad in ([4, 16, 1], [4, 2], [], [2, True]):
        with pytest.raises(ValueError, match="tier_divisors"):
            SegmentAttrs.from_json({**GOLDEN_SEGMENT.to_json(), "tier_divisors": bad})


# ---- an index of format 1 -----------------------------------------------------------------------------------
@pytest.fixture
def old_index(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of tests/data/index_v1 (built by the code of format 1, see tests/data/make_index_v1.py)."""
    path = shutil.copytree(DATA / "index_v1", tmp_path / "index_v1")
    return path, json.loads((DATA / "index_v1_expected.json").read_text())


def _assert_postings(st: IndexReader, expected: dict) -> None:
    for key, exp in expected["heads"].items():
        layer, h = map(int, key.split(","))
        post = st.postings(layer, h, np.arange(expected["num_latents"]))
        assert post.positions.tolist() == exp["positions"], key
        assert post.feature_slot.tolist() == exp["feature_slot"], key
        np.testing.assert_array_equal(post.acts, np.asarray(exp["acts"], np.float32), err_msg=key)


def test_index_of_format_1_is_read(old_index: tuple[Path, dict]) -> None:
    path, expected = old_index
    with IndexReader.open(path) as st:
        assert st.format_version == 1 and st.meta.format_version == 1
        assert st.meta.dtype == "float32" and "dtype" not in st.attrs  # built before precision was recorded
        assert st.verify() == []
        assert [s.name for s in st.segments] == expected["segments"]
        assert [s.open_doc for s in st.segments] == expected["open_doc"] == [False, True, False]
        assert [list(d) for d in st.documents()] == expected["documents"]
        assert [list(r) for r in doc_ranges(st)] == expected["doc_ranges"]
        assert st.tokens(0, st.num_tokens).tolist() == expected["tokens"]
        paths = {d.path: d.doc_id for d in st.documents()}
        for (doc_id, start, end), (p, ids) in zip(doc_ranges(st), expected["token_ids_by_path"].items()):
            assert paths[p] == doc_id and st.tokens(start, end).tolist() == ids  # the documents' own tokens
        _assert_postings(st, expected)
        # a question's read: a few features, any order, repeats: each slot's list in position order
        exp = expected["heads"]["3,1"]
        features = np.array([7, 0, 7, 63, 12])
        got = st.postings(3, 1, features)
        want = [
            (slot, p)
            for slot, f in enumerate(features)
            for p, s in zip(exp["positions"], exp["feature_slot"])
            if s == f
        ]
        assert list(zip(got.feature_slot.tolist(), got.positions.tolist())) == want and len(want) > 0
        seg = st._reader(st.segments[1])
        for kind, layout in FORMAT_1_LAYOUT.items():  # no recorded layout: inferred as format 1 wrote it
            arr = seg.array(kind if kind == "tokens" else head_array(1, 0, kind))
            assert INDEX_LAYOUT_ATTR not in arr.attrs and array_layout(arr).kind == layout
    with IndexStore.open(path) as st:  # the previous entry reads it too
        assert st.verify() == [] and st.num_tokens == len(expected["tokens"])


def test_writer_on_format_1_keeps_postings(old_index: tuple[Path, dict]) -> None:
    """A writer merges old segments into a segment of the current format (recorded layouts, impact tiers):
    the manifest's format rises to the current one (readers of format 1 or 2 would misread tiered lists, and
    of 3 find no documents table in the attributes, so they refuse it), the root attributes keep saying format 1 (it was created in it), and it reads the same."""
    path, expected = old_index
    with IndexWriter.open(path) as st:
        assert st.merge(into_one=True) == 3 and len(st.segments) == 1 and st.verify() == []
        assert st.format_version == INDEX_FORMAT_VERSION == 4 and st.meta.format_version == 1
        assert st._reader(st.segments[0]).attrs().posting_order == "impact-tiers"
        seg = st._reader(st.segments[0])
        for kind, layout in ARRAY_LAYOUT.items():
            arr = seg.array(kind if kind in ("tokens", *DOC_ARRAYS) else head_array(3, 1, kind))
            assert arr.attrs[INDEX_LAYOUT_ATTR] == layout == array_layout(arr).kind
    with IndexReader.open(path) as st:
        assert st.tokens(0, st.num_tokens).tolist() == expected["tokens"]
        assert [list(r) for r in doc_ranges(st)] == expected["doc_ranges"]
        for key, exp in expected["heads"].items():
            post = st.postings(*map(int, key.split(",")), np.arange(expected["num_latents"]))
            assert (
                post.positions.tolist() == exp["positions"]
                and post.feature_slot.tolist() == exp["feature_slot"]
            )


def test_new_index_is_the_current_format_with_recorded_layouts(
    old_index: tuple[Path, dict], tmp_path: Path
) -> None:
    """Copy the old index's documents into a new index (same codes): same postings, format 4 (lists in impact
    tiers, recorded in the segment's attributes; the documents table in arrays), layouts named."""
    path, expected = old_index
    with IndexReader.open(path) as old:
        attrs = old.meta
        codes = {}
        for key in old.heads:
            post = old.postings(*key, np.arange(attrs.num_latents))
            order = np.lexsort((post.feature_slot, post.positions))
            codes[key] = (
                post.feature_slot[order].reshape(-1, attrs.k),
                post.acts[order].reshape(-1, attrs.k),
            )
        tokens, docs = old.tokens(0, old.num_tokens), old.documents()
    with IndexWriter.create(tmp_path / "new", attrs) as st:
        st.add_segment(SegmentData(tokens, docs, 0, codes))
        assert st.format_version == st.meta.format_version == INDEX_FORMAT_VERSION == 4
        assert st.verify() == []
        _assert_postings(st, expected)  # read whole, every list comes back in position order
        seg = st._reader(st.segments[0])
        gaps = seg.array(head_array(1, 1, "pos_gaps"))
        assert gaps.attrs[INDEX_LAYOUT_ATTR] == LAYOUT_SHARDED
        assert seg.attrs().format_version == 4 and seg.tiers() == (4096, 1024, 256, 64, 16, 4, 1)
    assert json.loads((tmp_path / "new" / INDEX_MANIFEST).read_text())["format_version"] == 4


# ---- reading modules import no writing module --------------------------------------------------------------
def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` anywhere in the file (module level or inside functions) names."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_reading_modules_import_no_writing_module() -> None:
    ours = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "cli", "config"}
    assert ours == set(READING) | set(WRITING)  # every module is on one side
    writers = {f"s3attn.index_builder.{m}" for m in WRITING}
    for name in READING:
        bad = _imported_modules(PACKAGE / f"{name}.py") & writers
        assert not bad, f"{name}.py (reading) imports {sorted(bad)} (writing)"
