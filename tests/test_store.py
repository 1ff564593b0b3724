"""Tests of the posting-list storage layer (schema, segment reader/writer, IndexReader/IndexWriter through the
IndexStore entry) on small random codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

import s3attn.index_builder.indexer as indexer_mod
from s3attn.constants import INDEX_LOCK, INDEX_MANIFEST, INDEX_ROOT, SEGMENTS_DIR
from s3attn.errors import S3Error
from s3attn.index_builder.schema import (
    GAP_CHUNK,
    TOKEN_CHUNK,
    DocRecord,
    SegmentData,
    act_error_bound,
    act_scale_of,
    dequantize_acts,
    quantize_acts,
)
from s3attn.index_builder.store import IndexStore

F, K, USED_F = 256, 8, 240  # features >= USED_F never occur: their lists are empty
LAYERS, KV = [0, 2], 2
HEADS = [(layer, h) for layer in LAYERS for h in range(KV)]
DOC_TOKENS, DOCS_PER_SEG, NUM_SEGS = 500, 2, 3
ATTRS = dict(
    model_id="tiny",
    sae_release="rel-1",
    layers=LAYERS,
    num_kv_heads=KV,
    k=K,
    num_latents=F,
    head_dim=64,
    chunk=256,
)


def random_codes(rng: np.random.Generator, n: int) -> dict:
    codes = {}
    for key in HEADS:
        idx = np.argsort(rng.random((n, USED_F)), axis=1)[:, :K].astype(np.int64)  # distinct per row
        idx[: n // 2] = np.argsort(rng.random((n // 2, 41)), axis=1)[:, :K]  # skew: ids < 41 more frequent
        codes[key] = (idx, (rng.exponential(1.0, (n, K)) * (1 + key[0])).astype(np.float32))
    return codes


def make_segment(
    rng: np.random.Generator, token_start: int, doc_start: int, path_tag: str = ""
) -> SegmentData:
    n = DOC_TOKENS * DOCS_PER_SEG
    docs = [
        DocRecord(
            doc_start + i,
            f"docs/{path_tag}{doc_start + i}.txt",
            f"h{doc_start + i}",
            np.int64(token_start + i * DOC_TOKENS),  # numpy ints must be accepted
            DOC_TOKENS,
        )
        for i in range(DOCS_PER_SEG)
    ]
    return SegmentData(rng.integers(0, 49152, n).astype(np.uint32), docs, token_start, random_codes(rng, n))


def reference_lists(segments: list[SegmentData]) -> dict:
    """Brute force: (layer, kv) -> feature -> list of (global position, act), in position order."""
    ref: dict = {key: {} for key in HEADS}
    for seg in segments:
        for key in HEADS:
            idx, acts = seg.codes[key]
            for t in range(idx.shape[0]):
                for j in range(K):
                    ref[key].setdefault(int(idx[t, j]), []).append((seg.token_start + t, float(acts[t, j])))
    return ref


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rng = np.random.default_rng(1234)
    path = tmp_path_factory.mktemp("idx") / "index"
    segs = []
    with IndexStore.create(path, ATTRS) as st:
        for s in range(NUM_SEGS):
            seg = make_segment(rng, st.num_tokens, st.num_docs)
            if s == NUM_SEGS - 1:  # a larger activation scale in one head: merging must re-quantize
                seg.codes[(2, 1)][1][:] *= 10
            st.add_segment(seg)
            segs.append(seg)
    return path, segs, reference_lists(segs)


def copy_index(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(INDEX_LOCK))
    return dst


def all_postings(st: IndexStore) -> dict:
    return {key: st.postings(*key, np.arange(F)) for key in HEADS}


def test_postings_match_brute_force(built):
    path, segs, ref = built
    st = IndexStore.open(path)
    rng = np.random.default_rng(7)
    feature_sets = [np.arange(F), np.array([F - 1, 3, 250, 3, 0]), np.array([], dtype=np.int64)]
    feature_sets += [rng.integers(0, F, 17) for _ in range(4)]
    for key in HEADS:
        for feats in feature_sets:
            got = st.postings(*key, feats)
            exp = [(slot, p, a) for slot, f in enumerate(feats) for p, a in ref[key].get(int(f), [])]
            assert got.positions.dtype == np.int64 and got.feature_slot.dtype == np.int32
            assert got.acts.dtype == np.float32
            assert got.positions.tolist() == [e[1] for e in exp]
            assert got.feature_slot.tolist() == [e[0] for e in exp]
            exp_acts = np.array([e[2] for e in exp])
            # acts come from a per-segment scale; the largest scale bounds every error
            scale = max(act_scale_of(s.codes[key][1]) for s in segs)
            assert np.all(np.abs(got.acts - exp_acts) <= act_error_bound(exp_acts, scale))
    assert st.postings(0, 0, np.array([250])).positions.size == 0
    with pytest.raises(ValueError):
        st.postings(0, 0, np.array([F]))


def test_quantization_error_bounded():
    rng = np.random.default_rng(0)
    acts = np.concatenate([[0.0], rng.exponential(2.0, 10000), [0.001]]).astype(np.float32)
    scale = act_scale_of(acts)
    q = quantize_acts(acts, scale)
    assert acts.max() <= scale < 2 * acts.max() and np.log2(scale) == int(np.log2(scale))  # power of two
    assert q.dtype == np.uint8 and q[0] == 0 and quantize_acts(np.array([scale]), scale)[0] == 255
    back = dequantize_acts(q, scale)
    err = np.abs(back.astype(np.float64) - acts)
    assert np.all(err <= act_error_bound(acts, scale))
    assert np.all(err <= 0.01 * (1 + acts))  # log1p(scale)/255/2 ~ 0.5% relative for scale ~ 20
    assert dequantize_acts(np.array([255], np.uint8), scale)[0] == pytest.approx(scale, rel=1e-5)
    assert act_scale_of(np.zeros(3)) == 1.0 and quantize_acts(np.array([-1.0]), 1.0)[0] == 0


def test_documents_tokens_doc_freq(built):
    path, segs, ref = built
    st = IndexStore.open(path)
    docs = [d for s in segs for d in s.docs]
    assert st.documents() == docs and st.num_docs == len(docs) == 6
    assert st.num_tokens == NUM_SEGS * DOC_TOKENS * DOCS_PER_SEG
    all_tokens = np.concatenate([s.token_ids for s in segs])
    assert np.array_equal(st.tokens(0, st.num_tokens), all_tokens)
    assert np.array_equal(st.tokens(990, 2010), all_tokens[990:2010])  # spans three segments
    assert st.tokens(5, 5).size == 0
    with pytest.raises(ValueError):
        st.tokens(0, st.num_tokens + 1)
    assert st.has_document("docs/3.txt", "h3")
    assert not st.has_document("docs/3.txt", "other-hash") and not st.has_document("docs/9.txt", "h9")
    for key in HEADS:
        all_idx = np.concatenate([s.codes[key][0].ravel() for s in segs])
        df = st.doc_freq(*key)
        assert df.dtype == np.int64 and np.array_equal(df, np.bincount(all_idx, minlength=F))
        assert df[USED_F:].sum() == 0
    info = st.info()
    assert info["postings"] == st.num_tokens * K * len(HEADS) and info["segments"] == NUM_SEGS
    assert 0 < info["bytes_per_posting"] < 4 and info["bytes_by_array"]["pos_gaps"] > 0


def test_span_text_has_a_cache_of_its_own(built):
    """Token chunks (span text) go through a small LRU of their own: reading text neither adds to nor evicts
    the decoded posting chunks, so the posting cache's memory does not grow with the spans' spread."""
    path, segs, _ = built
    with IndexStore.open(path) as st:
        st.postings(*HEADS[0], np.arange(F))
        posting_keys = list(st._chunks._cache)
        assert posting_keys and all(folder.endswith("/pos_gaps/c") for folder, _ in posting_keys)
        assert np.array_equal(st.tokens(0, st.num_tokens), np.concatenate([s.token_ids for s in segs]))
        assert list(st._chunks._cache) == posting_keys
        text_keys = list(st._text_chunks._cache)
        assert len(text_keys) == NUM_SEGS and all(folder.endswith("/tokens/c") for folder, _ in text_keys)


def test_plain_zarr_reader(built):
    """Documents the schema: read one posting list with nothing but json + zarr-python + numpy."""
    path, _segs, ref = built
    manifest = json.loads((path / "manifest.json").read_text())
    layer, kv, feature = 2, 1, 5
    postings = []
    for seg in manifest["segments"]:
        base = f"segments/{seg['name']}/L{layer}/h{kv}"
        offsets = zarr.open_array(path / "index.zarr", path=f"{base}/offsets", mode="r")[
            feature : feature + 2
        ]
        lo, hi = int(offsets[0]), int(offsets[1])
        gaps = zarr.open_array(path / "index.zarr", path=f"{base}/pos_gaps", mode="r")[lo:hi]
        q = zarr.open_array(path / "index.zarr", path=f"{base}/act_u8", mode="r")[lo:hi]
        scale = zarr.open_group(path / "index.zarr", path=base, mode="r").attrs["act_scale"]
        seg_attrs = zarr.open_group(path / "index.zarr", path=f"segments/{seg['name']}", mode="r").attrs
        ends = [-(-(hi - lo) // d) for d in seg_attrs.get("tier_divisors", [1])]  # format 3: impact tiers
        for a, b in zip([0, *ends[:-1]], ends):  # each tier's positions as gaps, its first entry absolute
            pos = np.cumsum(gaps[a:b].astype(np.int64)) + seg["token_start"]
            postings += zip(pos.tolist(), np.expm1(q[a:b] / 255 * np.log1p(scale)).tolist())
    postings.sort()
    positions, acts = [p for p, _ in postings], [a for _, a in postings]
    assert positions == [p for p, _ in ref[(layer, kv)][feature]]
    exp_acts = np.array([a for _, a in ref[(layer, kv)][feature]])
    assert np.allclose(acts, exp_acts, rtol=0.02, atol=0.02)
    meta = json.loads((path / "index.zarr" / base / "pos_gaps" / "zarr.json").read_text())
    (shard,) = meta["codecs"]  # standard v3 codecs only: shards of Blosc-compressed inner chunks
    assert shard["name"] == "sharding_indexed" and meta["data_type"] == "uint32"
    inner = shard["configuration"]
    assert [c["name"] for c in inner["codecs"]] == ["bytes", "blosc"]
    assert [c["name"] for c in inner["index_codecs"]] == ["bytes", "crc32c"] and inner[
        "index_location"
    ] == "end"
    assert inner["chunk_shape"] == [min(GAP_CHUNK, meta["shape"][0])]
    seg_dir = path / "index.zarr" / "segments" / seg["name"]
    tok_meta = json.loads((seg_dir / "tokens" / "zarr.json").read_text())
    (tok_shard,) = tok_meta["codecs"]  # tokens: small inner chunks too, so a span decodes little
    assert tok_shard["name"] == "sharding_indexed" and tok_meta["data_type"] == "uint32"
    assert tok_shard["configuration"]["chunk_shape"] == [min(TOKEN_CHUNK, tok_meta["shape"][0])]
    act_meta = json.loads((path / "index.zarr" / base / "act_u8" / "zarr.json").read_text())
    assert [c["name"] for c in act_meta["codecs"]] == ["bytes"]  # raw: read in place
    assert zarr.open_group(path / "index.zarr", mode="r").attrs["kind"] == "s3attn-index"


def test_verify_reports_tampering(built, tmp_path):
    path = copy_index(built[0], tmp_path / "copy")
    assert IndexStore.open(path).verify() == []
    manifest = json.loads((path / INDEX_MANIFEST).read_text())
    seg0 = manifest["segments"][0]["name"]
    gaps = zarr.open_array(path / INDEX_ROOT, path=f"{SEGMENTS_DIR}/{seg0}/L0/h1/pos_gaps", mode="r+")
    off = zarr.open_array(path / INDEX_ROOT, path=f"{SEGMENTS_DIR}/{seg0}/L0/h1/offsets", mode="r")[...]
    n = int(off[4]) - int(off[3])
    i = int(off[3]) + -(-n // 4) + 1  # second entry of the last impact tier of feature 3's list
    assert int(off[4]) > i
    gaps[i] = 0  # duplicate position: breaks sort order, k per token and the checksum
    problems = IndexStore.open(path).verify()
    assert any("L0/h1/pos_gaps: checksum mismatch" in p for p in problems)
    assert any("strictly increasing" in p for p in problems)
    assert any("exactly k=8" in p for p in problems)
    # a damaged chunk file and a missing segment folder
    chunk = (
        path
        / INDEX_ROOT
        / SEGMENTS_DIR
        / manifest["segments"][1]["name"]
        / "L2"
        / "h0"
        / "act_u8"
        / "c"
        / "0"
    )
    chunk.write_bytes(b"garbage")
    shutil.rmtree(path / INDEX_ROOT / SEGMENTS_DIR / manifest["segments"][2]["name"])
    problems = IndexStore.open(path).verify()
    assert any(manifest["segments"][1]["name"] in p and "unreadable" in p for p in problems)
    assert any("missing on disk" in p for p in problems)


def test_merge_keeps_postings(built, tmp_path):
    path = copy_index(built[0], tmp_path / "copy")
    with IndexStore.open(path, write=True) as st:
        before = all_postings(st)
        old = [s.name for s in st.segments]
        scales = {key: [st._reader(e).act_scale(*key) for e in st.segments] for key in HEADS}
        assert st.merge(8) == 0  # three segments, fewer than 8 in the tier
        assert st.merge(2) == 2
        assert len(st.segments) == 2 and st.verify() == []
        assert st.segments[0].num_docs == 4 and st.segments[0].num_tokens == 2000
        assert not any((path / INDEX_ROOT / SEGMENTS_DIR / n).exists() for n in old[:2])
        assert st.merge(into_one=True) == 2 and len(st.segments) == 1 and st.verify() == []
        assert [p.name for p in (path / INDEX_ROOT / SEGMENTS_DIR).iterdir() if p.is_dir()] == [
            st.segments[0].name
        ]
        after = all_postings(st)
        assert st.documents() == [d for s in built[1] for d in s.docs]
        assert np.array_equal(st.tokens(0, 3000), np.concatenate([s.token_ids for s in built[1]]))
    for key in HEADS:
        b, a = before[key], after[key]
        assert np.array_equal(b.positions, a.positions) and np.array_equal(b.feature_slot, a.feature_slot)
        top = max(scales[key])
        seg_of = b.positions // 1000
        same = np.array(scales[key])[seg_of] == top
        assert same.any() and (key != (2, 1) or not same.all())
        assert np.array_equal(a.acts[same], b.acts[same])  # lists of the largest-scale segment: identical
        half_step = np.log1p(top) / 255 / 2  # others re-quantized (<= twice): half a step in log space each
        assert np.all(np.abs(a.acts - b.acts) <= (1 + b.acts) * np.expm1(2 * half_step) + 1e-5)


def test_failed_write_leaves_index_unchanged(built, tmp_path, monkeypatch):
    path = copy_index(built[0], tmp_path / "copy")
    manifest_before = (path / INDEX_MANIFEST).read_bytes()
    seg_dir = path / INDEX_ROOT / SEGMENTS_DIR
    dirs_before = sorted(p.name for p in seg_dir.iterdir())
    st = IndexStore.open(path, write=True)
    before = all_postings(st)
    seg = make_segment(np.random.default_rng(5), st.num_tokens, st.num_docs)
    calls = {"n": 0}
    real_setitem = zarr.Array.__setitem__

    def failing_setitem(self, key, value):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real_setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", failing_setitem)
    with pytest.raises(OSError):
        st.add_segment(seg)
    monkeypatch.setattr(zarr.Array, "__setitem__", real_setitem)
    assert calls["n"] == 5
    # a failure after the rename, while writing the manifest
    monkeypatch.setattr(
        indexer_mod, "atomic_write_json", lambda *a: (_ for _ in ()).throw(OSError("disk full"))
    )
    with pytest.raises(OSError):
        st.add_segment(seg)
    monkeypatch.undo()
    assert (path / INDEX_MANIFEST).read_bytes() == manifest_before
    assert sorted(p.name for p in seg_dir.iterdir()) == dirs_before
    assert len(st.segments) == NUM_SEGS and st.verify() == []
    after = all_postings(st)
    assert all(np.array_equal(before[k].positions, after[k].positions) for k in HEADS)
    assert st.add_segment(seg).startswith("seg-") and len(st.segments) == NUM_SEGS + 1 and st.verify() == []
    st.close()


def test_killed_writer_then_garbage_collect(built, tmp_path):
    path = copy_index(built[0], tmp_path / "copy")
    manifest_before = (path / INDEX_MANIFEST).read_bytes()
    script = textwrap.dedent(f"""
        import os, sys, numpy as np, zarr
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import make_segment
        from s3attn.index_builder.store import IndexStore
        st = IndexStore.open({str(path)!r}, write=True)
        seg = make_segment(np.random.default_rng(1), st.num_tokens, st.num_docs)
        real, n = zarr.Array.__setitem__, [0]
        def die(self, key, value):
            n[0] += 1
            if n[0] == 6:
                os._exit(9)  # killed mid-segment: no cleanup runs
            return real(self, key, value)
        zarr.Array.__setitem__ = die
        st.add_segment(seg)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    seg_dir = path / INDEX_ROOT / SEGMENTS_DIR
    assert (path / INDEX_MANIFEST).read_bytes() == manifest_before
    temps = [p.name for p in seg_dir.iterdir() if p.name.startswith(".tmp-")]
    assert len(temps) == 1
    reader = IndexStore.open(path)  # readers ignore the leftover
    assert len(reader.segments) == NUM_SEGS and reader.verify() == []
    with IndexStore.open(path, write=True):  # the dead writer's lock is gone; open-for-write cleans up
        assert not any(p.name.startswith(".tmp-") for p in seg_dir.iterdir())


def test_create_open_errors_and_lock(built, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "x.txt").write_text("hello")
    with pytest.raises(S3Error, match="not empty"):
        IndexStore.create(other, ATTRS)
    path = copy_index(built[0], tmp_path / "copy")
    with pytest.raises(S3Error, match="model_id"):
        IndexStore.create(path, {**ATTRS, "model_id": "another"})
    with pytest.raises(S3Error, match="k="):
        IndexStore.create(path, {**ATTRS, "k": 16})
    with IndexStore.create(path, ATTRS) as st:  # same index: reopened for appending
        assert len(st.segments) == NUM_SEGS
        with pytest.raises(S3Error, match="another process"):
            IndexStore.open(path, write=True)
        assert IndexStore.open(path).num_tokens == 3000  # readers take no lock
        with pytest.raises(ValueError, match="token_start"):
            st.add_segment(make_segment(np.random.default_rng(2), 0, 0))
        bad = make_segment(np.random.default_rng(2), st.num_tokens, st.num_docs)
        bad.codes[(0, 0)][0][3, 1] = bad.codes[(0, 0)][0][3, 0]
        with pytest.raises(ValueError, match="twice"):
            st.add_segment(bad)
    IndexStore.open(path, write=True).close()  # lock released
    with pytest.raises(S3Error, match="read-only"):
        IndexStore.open(path).add_segment(make_segment(np.random.default_rng(2), 3000, 6))
    with pytest.raises(S3Error, match="no s3attn index"):
        IndexStore.open(tmp_path / "nowhere")
    (path / INDEX_MANIFEST).write_text("{not json")
    with pytest.raises(S3Error, match="corrupt"):
        IndexStore.open(path)
    fresh = IndexStore.create(tmp_path / "new" / "idx", ATTRS)
    assert fresh.segments == [] and fresh.num_tokens == 0 and fresh.verify() == [] and fresh.documents() == []
    assert fresh.postings(0, 0, np.array([1, 2])).positions.size == 0 and fresh.doc_freq(0, 0).sum() == 0
