"""Format 3: each posting list stored in impact tiers (tier 0 = its highest stored activations), so that a
question reads the top tiers of every chosen feature instead of skipping whole lists. Round trip against the
position-ordered layout, tier order, indexes of format 2 (tests/data/index_v2, made by the code of format 2)
read as before, merges that convert them, and the budgeted read of ``head_features``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from s3attn.constants import INDEX_FORMAT_VERSION, INDEX_MANIFEST
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.reader import IndexReader
from s3attn.index_builder.schema import (
    TIER_DIVISORS,
    DocRecord,
    SegmentData,
    array_checksum,
    decode_gaps,
    tier_ends,
    tier_sizes,
)
from s3attn.index_builder.segment_merge import merged_head
from s3attn.index_builder.segment_writer import (
    ArrayAppender,
    build_head_postings,
    feature_batches,
    impact_order,
    impact_stream,
)
from s3attn.index_builder.verify import tier_problems
from s3attn.retrieval.question import QuestionConfig, head_features, read_stats, score_tokens

DATA = Path(__file__).parent / "data"


def _codes(rng: np.random.Generator, n: int, k: int, num_f: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.stack([rng.choice(num_f, size=k, replace=False) for _ in range(n)])
    return idx, rng.gamma(2.0, 1.5, size=(n, k)).astype(np.float32)


def _lists(off: np.ndarray, positions: np.ndarray, q: np.ndarray) -> list[set[tuple[int, int]]]:
    return [set(zip(positions[a:b].tolist(), q[a:b].tolist())) for a, b in zip(off[:-1], off[1:])]


def test_tier_cuts_follow_from_the_list_length() -> None:
    assert TIER_DIVISORS[-1] == 1
    assert tier_ends(np.array([0, 1, 5, 100, 10000]), (16, 4, 1)).tolist() == [
        [0, 0, 0],
        [1, 1, 1],
        [1, 2, 5],
        [7, 25, 100],
        [625, 2500, 10000],
    ]
    sizes = tier_sizes(np.arange(50000), TIER_DIVISORS)
    assert (sizes.sum(axis=1) == np.arange(50000)).all() and (sizes >= 0).all()
    assert (sizes[1:, 0] >= 1).all()  # every non-empty list has a tier 0


def test_impact_order_round_trip() -> None:
    """A tiered head holds per feature exactly the (position, q) of the position-ordered one; tiers in
    impact order, positions increasing within each tier, offsets unchanged."""
    rng = np.random.default_rng(0)
    num_f, k, n = 96, 8, 3000
    hp = build_head_postings(*_codes(rng, n, k, num_f), num_f)
    tiered = impact_order(hp)
    off = hp.offsets.astype(np.int64)
    lens = np.diff(off)
    assert np.array_equal(tiered.offsets, hp.offsets) and tiered.act_scale == hp.act_scale
    sub = tier_sizes(lens, TIER_DIVISORS)
    pos_old = decode_gaps(hp.pos_gaps, lens)
    pos_new = decode_gaps(tiered.pos_gaps, sub.ravel())
    assert _lists(off, pos_old, hp.act_u8) == _lists(off, pos_new, tiered.act_u8)
    assert not np.array_equal(pos_old, pos_new)  # the order did change
    assert tier_problems(tiered.act_u8, lens, TIER_DIVISORS) == []
    assert tier_problems(hp.act_u8, lens, TIER_DIVISORS) != []  # position order is not impact order
    starts = np.cumsum(sub.ravel()) - sub.ravel()
    for f in rng.choice(num_f, 10, replace=False):
        q = tiered.act_u8[off[f] : off[f + 1]]
        assert q[0] == hp.act_u8[off[f] : off[f + 1]].max()  # tier 0 holds the list's best posting
        for t in range(len(TIER_DIVISORS)):
            a = int(starts[f * len(TIER_DIVISORS) + t])
            tier_pos = pos_new[a : a + int(sub[f, t])]
            assert (np.diff(tier_pos) > 0).all()
        cut = int(sub[f, :3].sum())  # the top three tiers hold the highest q of the list
        assert q[:cut].min() >= np.sort(hp.act_u8[off[f] : off[f + 1]])[::-1][cut - 1]


def _concat(pieces) -> tuple[np.ndarray, np.ndarray]:
    gaps, q = zip(*pieces)
    return np.concatenate(gaps), np.concatenate(q)


@pytest.mark.parametrize("batch", [1, 37, 500])
def test_tiers_in_batches_equal_tiers_at_once(batch: int) -> None:
    """Putting a head in impact tiers batch by batch (bounded memory) stores exactly what one batch does;
    batches hold whole lists, at least one each."""
    rng = np.random.default_rng(5)
    num_f, k, n = 96, 8, 3000
    hp = build_head_postings(*_codes(rng, n, k, num_f), num_f)
    whole = impact_order(hp, n)
    parts = list(impact_stream(hp, n, batch).pieces)
    assert len(parts) > 1
    gaps, q = _concat(parts)
    assert np.array_equal(gaps, whole.pos_gaps) and np.array_equal(q, whole.act_u8)
    ranges = list(feature_batches(hp.offsets, n, batch))
    assert ranges[0][0] == 0 and ranges[-1][1] == num_f and all(a < b for a, b in ranges)
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(ranges, ranges[1:]))


def test_array_appender_writes_whole_shards_and_the_checksum(tmp_path: Path) -> None:
    """Pieces of any size land in order; the checksum is the whole array's; too few entries is an error."""
    import zarr

    data = np.random.default_rng(6).integers(0, 1 << 30, 1000).astype(np.uint32)
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    arr = group.create_array("a", shape=(1000,), dtype="uint32", chunks=(16,), shards=(64,))
    out = ArrayAppender(arr)
    cuts = [0, 5, 5, 70, 71, 300, 1000]
    for a, b in zip(cuts, cuts[1:]):
        out.add(data[a:b])
        assert out.at % 64 == 0  # only whole shards are written before the end
    assert out.close() == array_checksum(data)
    assert np.array_equal(arr[...], data)
    short = ArrayAppender(group.create_array("b", shape=(10,), dtype="uint32", chunks=(4,)))
    short.add(data[:9])
    with pytest.raises(ValueError, match="9 entries written"):
        short.close()
    with pytest.raises(ValueError, match="more entries"):
        short.add(data[:2])


def _tiny_index(tmp_path: Path) -> Path:
    """An index of format 3 built from random codes (two segments)."""
    rng = np.random.default_rng(1)
    attrs = {
        "model_id": "tiny",
        "sae_release": "rel",
        "layers": [0],
        "num_kv_heads": 2,
        "k": 6,
        "num_latents": 40,
        "head_dim": 8,
    }
    with IndexWriter.create(tmp_path / "idx", attrs) as st:
        start = 0
        for n in (700, 500):
            codes = {key: _codes(rng, n, 6, 40) for key in st.heads}
            doc = DocRecord(start // 100, f"d{start}.txt", "h", start, n)
            st.add_segment(SegmentData(rng.integers(0, 1000, n).astype(np.uint32), [doc], start, codes))
            start += n
        assert st.verify() == []
    return tmp_path / "idx"


def test_format_3_segment_reads_like_position_order(tmp_path: Path) -> None:
    path = _tiny_index(tmp_path)
    with IndexReader.open(path) as st:
        assert st.format_version == INDEX_FORMAT_VERSION
        for key in st.heads:
            df = st.doc_freq(*key)
            tf = st.tier_freq(*key)
            assert tf.shape == (40, len(TIER_DIVISORS)) and (tf.sum(axis=1) == df).all()
            feats = np.arange(40)
            whole = st.postings(*key, feats)
            assert np.array_equal(np.bincount(whole.feature_slot, minlength=40), df)
            for f in feats:  # read whole: each list in position order, as before
                assert (np.diff(whole.positions[whole.feature_slot == f]) > 0).all()
            for r in (st._reader(e) for e in st.segments):
                off, pos, _q, _s = r.read_head(*key)
                for a, b in zip(off[:-1].astype(int), off[1:].astype(int)):
                    assert (np.diff(pos[a:b]) > 0).all()
            top = st.postings(*key, feats, np.ones(40, np.int64))  # tier 0 of each segment
            assert np.array_equal(np.bincount(top.feature_slot, minlength=40), tf[:, 0])
            for f in feats:  # tier 0 holds each segment's best postings of the list
                got = top.acts[top.feature_slot == f]
                assert got.size and got.max() == whole.acts[whole.feature_slot == f].max()
            none = st.postings(*key, feats, np.zeros(40, np.int64))
            assert none.positions.size == 0


def test_merge_in_batches_equals_merge_at_once(tmp_path: Path) -> None:
    """A merge streams batches of lists (bounded memory); any batch size stores the same merged lists, and
    those are the segments' lists as sets, re-quantized to the larger scale."""
    path = _tiny_index(tmp_path)
    with IndexWriter.open(path) as st:
        readers = [st._reader(e) for e in st.segments]
        for key in st.heads:
            ref = merged_head(readers, key)
            gaps, q = _concat(ref.pieces)
            for batch in (1, 50):
                other = merged_head(readers, key, batch)
                assert np.array_equal(other.offsets, ref.offsets) and other.act_scale == ref.act_scale
                g2, q2 = _concat(other.pieces)
                assert np.array_equal(g2, gaps) and np.array_equal(q2, q)
        want = {key: _global_lists(readers, key) for key in st.heads}
        assert st.merge(into_one=True) == 2 and st.verify() == []
        merged = [st._reader(st.segments[0])]
        assert {key: _global_lists(merged, key) for key in st.heads} == want


def _global_lists(readers: list, key: tuple[int, int]) -> list[set[int]]:
    """Each feature's list over ``readers`` as a set of global positions."""
    lists: list[set[int]] = []
    for r in readers:
        off, pos, _q, _s = r.read_head(*key)
        bounds = list(zip(off[:-1].astype(int), off[1:].astype(int)))
        lists = lists or [set() for _ in bounds]
        for f, (a, b) in enumerate(bounds):
            lists[f] |= set((pos[a:b] + r.token_start).tolist())
    return lists


@pytest.fixture
def index_v2(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of tests/data/index_v2 (format 2, made by tests/data/make_index_v2.py) and what the format-2
    reader returned from it."""
    path = shutil.copytree(DATA / "index_v2", tmp_path / "index_v2")
    exp = dict(np.load(DATA / "index_v2_expected.npz"))
    return path, exp


def _question(rng: np.random.Generator, st: IndexReader) -> dict:
    return {key: _codes(rng, 6, st.meta.k, st.meta.num_latents) for key in st.heads}


def test_index_of_format_2_reads_as_before(index_v2: tuple[Path, dict]) -> None:
    path, exp = index_v2
    with IndexReader.open(path) as st:
        assert st.format_version == 2 and st.verify() == []
        assert st.tokens(0, st.num_tokens).tolist() == exp["tokens"].tolist()
        for layer, h in st.heads:
            post = st.postings(layer, h, np.arange(st.meta.num_latents))
            assert np.array_equal(post.positions, exp[f"positions_{layer}_{h}"])
            assert np.array_equal(post.feature_slot, exp[f"feature_slot_{layer}_{h}"])
            assert np.array_equal(post.acts, exp[f"acts_{layer}_{h}"])
            assert np.array_equal(st.doc_freq(layer, h), exp[f"doc_freq_{layer}_{h}"])
            assert np.array_equal(st.tier_freq(layer, h), exp[f"doc_freq_{layer}_{h}"][:, None])
        cfg = QuestionConfig(stop_ratio=0, max_postings=len(st.heads) * 40)
        feats = head_features(_question(np.random.default_rng(2), st), st, cfg)
        for hq in feats.values():  # whole lists, chosen as before (greedy in weight order)
            assert hq.depths is None and hq.df.sum() <= 40
        stats = read_stats(feats)
        assert stats["tiers"] == stats["lists"] and stats["lists_skipped"] > 0


def _convert(path: Path) -> Path:
    """A copy of the index with every segment merged into one of format 3."""
    new = shutil.copytree(path, path.with_name(path.name + "-v3"))
    with IndexWriter.open(new) as st:
        assert st.merge(into_one=True) == 3 and st.verify() == []
    return new


def _read(st: IndexReader, feats: dict) -> dict:
    out = {}
    for key, hq in feats.items():
        post = (
            st.postings(*key, hq.features) if hq.depths is None else st.postings(*key, hq.features, hq.depths)
        )
        out[key] = post
    return out


def test_small_budget_reads_top_tiers_of_every_feature(index_v2: tuple[Path, dict]) -> None:
    """Same question, same small budget: the converted index (format 3) reads at least as many features as
    the format-2 one, and the postings it reads have a higher mean activation; a huge budget reads all."""
    path, _exp = index_v2
    new = _convert(path)
    rng = np.random.default_rng(3)
    with IndexReader.open(path) as old, IndexReader.open(new) as st:
        assert json.loads((new / INDEX_MANIFEST).read_text())["format_version"] == INDEX_FORMAT_VERSION
        assert st.meta.format_version == 2  # created in format 2; its segments are format 3 now
        for key in st.heads:  # the merge converted the lists; as sets they are the old ones
            a, b = (s.postings(*key, np.arange(64)) for s in (old, st))
            assert np.array_equal(a.positions, b.positions) and np.array_equal(a.feature_slot, b.feature_slot)
        codes = _question(rng, st)
        small = QuestionConfig(stop_ratio=0, max_postings=len(st.heads) * 40)
        f2, f3 = head_features(codes, old, small), head_features(codes, st, small)
        s2, s3 = read_stats(f2), read_stats(f3)
        assert s3["lists"] >= s2["lists"] and s3["lists"] > s2["lists"]
        assert (
            s3["postings"] <= len(st.heads) * 40
            and s3["tiers"] > s3["lists"]
            and s3["lists_skipped"] < s2["lists_skipped"]
        )
        r2, r3 = _read(old, f2), _read(st, f3)
        assert sum(p.positions.size for p in r3.values()) == s3["postings"]
        mean2 = np.concatenate([p.acts for p in r2.values()]).mean()
        mean3 = np.concatenate([p.acts for p in r3.values()]).mean()
        assert mean3 > mean2
        off = head_features(
            codes, st, QuestionConfig(stop_ratio=0, max_postings=len(st.heads) * 40, impact_tiers=False)
        )
        assert read_stats(off) == s2  # tiers off: whole lists, as format 2 reads
        full = QuestionConfig(stop_ratio=0, max_postings=10**8)
        a, b = (
            score_tokens(old, head_features(codes, old, full), full),
            score_tokens(st, head_features(codes, st, full), full),
        )
        assert np.array_equal(a.positions_N, b.positions_N)
        np.testing.assert_allclose(a.values_N, b.values_N, rtol=1e-5)


def test_writer_adds_format_3_segment_to_format_2_index(index_v2: tuple[Path, dict]) -> None:
    """Appending to an index of format 2 writes a segment of format 3 and raises the manifest's format (a
    reader of format 2 then refuses it rather than misread); both kinds of segment read together."""
    path, exp = index_v2
    rng = np.random.default_rng(4)
    with IndexWriter.open(path) as st:
        n, start = 90, st.num_tokens
        codes = {key: _codes(rng, n, st.meta.k, st.meta.num_latents) for key in st.heads}
        doc = DocRecord(99, "new.txt", "h", start, n)
        st.add_segment(SegmentData(rng.integers(0, 100, n).astype(np.uint32), [doc], start, codes))
        assert st.format_version == INDEX_FORMAT_VERSION and st.verify() == []
        orders = [st._reader(e).attrs().posting_order for e in st.segments]
        assert orders == ["position"] * 3 + ["impact-tiers"]
        for layer, h in st.heads:
            tf, df = st.tier_freq(layer, h), st.doc_freq(layer, h)
            assert (tf.sum(axis=1) == df).all()
            assert (
                df - exp[f"doc_freq_{layer}_{h}"] == np.bincount(codes[(layer, h)][0].ravel(), minlength=64)
            ).all()
            post = st.postings(layer, h, np.arange(64))
            old = post.positions < start
            assert np.array_equal(post.positions[old], exp[f"positions_{layer}_{h}"])
    assert json.loads((path / INDEX_MANIFEST).read_text())["format_version"] == INDEX_FORMAT_VERSION
