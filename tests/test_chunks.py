"""ChunkReader: direct chunk-file reads equal zarr's own reads in each layout it knows; others go to zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ShardingCodec

from s3attn.index_builder.chunks import ChunkReader, infer_layout_v1
from s3attn.index_builder.schema import compressors

BLOSC = BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")


def _ranges(rng, size: int, n: int):
    starts = rng.integers(0, size, n)
    lens = np.minimum(rng.integers(0, 300, n), size - starts)
    return starts, lens


def _expected(data: np.ndarray, starts, lens) -> np.ndarray:
    return np.concatenate([data[s : s + n] for s, n in zip(starts, lens)] + [data[:0]])


# layout name -> (dtype, create_array keyword arguments, path of a file the fill-value chunk leaves out)
LAYOUTS = {
    "blosc": (np.uint32, {"chunks": (1024,), "compressors": [BLOSC]}, "c/1"),
    "sharded-blosc": (
        np.uint32,
        {"chunks": (256,), "shards": (1024,), "compressors": compressors("pos_gaps")},
        None,
    ),
    "raw": (np.uint8, {"chunks": (1024,), "compressors": compressors("act_u8")}, "c/1"),
}


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_direct_reads_equal_zarr(tmp_path, kind):
    dtype, kwargs, absent = LAYOUTS[kind]
    rng = np.random.default_rng(0)
    data = rng.integers(1, 200, 5000).astype(dtype)
    data[1024:2048] = 0  # chunks equal to the fill value: zarr does not write them
    arr = zarr.open_group(tmp_path / "g.zarr", mode="w").create_array(
        "a", shape=data.shape, dtype=dtype, fill_value=0, **kwargs
    )
    arr[...] = data
    if absent:
        assert not (tmp_path / "g.zarr" / "a" / absent).exists()
    layout = infer_layout_v1(arr)
    assert layout is not None and layout.kind == kind
    reader = ChunkReader(max_bytes=3000)  # smaller than the chunks read: the LRU must evict
    for _ in range(3):
        starts, lens = _ranges(rng, data.size, 40)
        starts[:3], lens[:3] = [4900, 1000, 1100], [100, 1100, 500]  # edge chunk; over three chunks; fill
        np.testing.assert_array_equal(reader.read(arr, starts, lens), _expected(data, starts, lens))
    assert reader.cached_bytes <= max(3000, 1024 * data.itemsize)


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_open_files_stay_under_the_cap_and_close_reopens(tmp_path, kind, monkeypatch):
    """Descriptors are kept between reads but never more than MAX_OPEN_FILES (then all are closed and
    reopened); reads after close() open them again; a short raw chunk file is refused; no chunk file is
    memory-mapped (a reader's memory must not grow with the pages it has read)."""
    import s3attn.index_builder.chunks as ch

    monkeypatch.setattr(ch, "MAX_OPEN_FILES", 2)
    dtype, kwargs, _ = LAYOUTS[kind]
    data = np.random.default_rng(2).integers(1, 200, 5000).astype(dtype)
    arr = zarr.open_group(tmp_path / "g.zarr", mode="w").create_array(
        "a", shape=data.shape, dtype=dtype, fill_value=0, **kwargs
    )
    arr[...] = data
    reader = ChunkReader()
    starts, lens = np.array([0, 1500, 4000, 2500]), np.array([1100, 800, 1000, 10])  # every file
    for i in range(3):
        np.testing.assert_array_equal(reader.read(arr, starts, lens), _expected(data, starts, lens))
        held = reader._held[0]
        assert held <= 5  # one read may open all (5) it needs, the next one closes them first
        assert held > 0 or i > 0
        maps = Path("/proc/self/maps")
        assert not maps.exists() or str(tmp_path / "g.zarr") not in maps.read_text()
    reader.close()
    assert not reader._files and reader._held == [0]
    np.testing.assert_array_equal(reader.read(arr, starts, lens), _expected(data, starts, lens))
    if kind == "raw":
        chunk = tmp_path / "g.zarr" / "a" / "c" / "4"
        chunk.write_bytes(chunk.read_bytes()[:10])
        reader.close()
        with pytest.raises(ValueError, match="chunk file is short"):
            reader.read(arr, np.array([4090]), np.array([50]))


def test_corrupt_shard_index_is_refused(tmp_path):
    data = np.arange(4096, dtype=np.uint32)
    arr = zarr.open_group(tmp_path / "g.zarr", mode="w").create_array(
        "a", shape=data.shape, dtype=data.dtype, chunks=(256,), shards=(1024,), compressors=[BLOSC]
    )
    arr[...] = data
    shard = tmp_path / "g.zarr" / "a" / "c" / "2"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # inside the shard index
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="shard index is corrupt"):
        ChunkReader().read(arr, np.array([2100]), np.array([10]))


def test_other_layouts_read_through_zarr(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, 4096).astype(np.uint32)
    group = zarr.open_group(tmp_path / "s.zarr", mode="w")
    index_first = group.create_array(
        "a", shape=data.shape, dtype=data.dtype, chunks=(1024,), fill_value=0,
        serializer=ShardingCodec(chunk_shape=(256,), codecs=[BytesCodec(), BLOSC], index_location="start"),
    )  # fmt: skip
    gzip = group.create_array(
        "b", shape=data.shape, dtype=data.dtype, chunks=(512,), compressors=[GzipCodec()]
    )
    in_memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=data.shape, dtype=data.dtype, chunks=(512,)
    )
    for arr in (index_first, gzip, in_memory):
        arr[...] = data
        assert infer_layout_v1(arr) is None
        starts, lens = _ranges(rng, data.size, 20)
        np.testing.assert_array_equal(ChunkReader().read(arr, starts, lens), _expected(data, starts, lens))


def test_recorded_layout_is_dispatched_on(tmp_path):
    """Format 2 arrays name their layout (``s3attn_layout``): the reader goes by that name, not the codecs;
    a name it does not know is read through zarr."""
    from s3attn.constants import INDEX_LAYOUT_ATTR
    from s3attn.index_builder.chunks import array_layout

    data = np.random.default_rng(3).integers(1, 200, 5000).astype(np.uint32)
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    kwargs = dict(shape=data.shape, dtype=data.dtype, fill_value=0)
    named = {
        "blosc": group.create_array("b", chunks=(1024,), compressors=[BLOSC], **kwargs),
        "sharded-blosc": group.create_array(
            "s", chunks=(256,), shards=(1024,), compressors=[BLOSC], **kwargs
        ),
        "future-codec": group.create_array("f", chunks=(1024,), compressors=[BLOSC], **kwargs),
    }
    for name, arr in named.items():
        arr[...] = data
        arr.attrs[INDEX_LAYOUT_ATTR] = name
        assert infer_layout_v1(arr) is not None  # the codecs alone would be recognised
    assert array_layout(named["blosc"])[2:] == (1024, 1) and array_layout(named["blosc"]).kind == "blosc"
    assert array_layout(named["sharded-blosc"])[2:] == (256, 4)
    assert array_layout(named["future-codec"]) is None
    starts, lens = _ranges(np.random.default_rng(4), data.size, 30)
    for arr in named.values():
        np.testing.assert_array_equal(ChunkReader().read(arr, starts, lens), _expected(data, starts, lens))


def test_shard_indexes_held_stay_under_their_budget(tmp_path, monkeypatch):
    """A reader holds shard indexes up to SHARD_INDEX_BYTES (least recently used dropped), so what it holds
    does not grow with the index; a dropped index is read again when a chunk of its shard is needed."""
    import s3attn.index_builder.chunks as ch

    monkeypatch.setattr(ch, "SHARD_INDEX_BYTES", 64)  # two of these shards' indexes (4 chunks, uint32)
    dtype, kwargs, _ = LAYOUTS["sharded-blosc"]
    data = np.random.default_rng(1).integers(1, 200, 5000).astype(dtype)
    arr = zarr.open_group(tmp_path / "g.zarr", mode="w").create_array(
        "a", shape=data.shape, dtype=dtype, fill_value=0, **kwargs
    )
    arr[...] = data
    reader = ChunkReader(max_bytes=1)  # every read decodes its chunks again, so each needs its shard index
    starts = np.arange(0, 5000, 250)
    lens = np.full(starts.size, 40)
    for _ in range(2):
        np.testing.assert_array_equal(reader.read(arr, starts, lens), _expected(data, starts, lens))
        assert len(reader._shard_index) == 2 and reader._shard_index.nbytes == 64


def test_byte_lru_drops_the_least_recent_past_its_budget():
    from s3attn.lru import ByteLRU

    lru = ByteLRU(10)
    lru.put("a", 1, 4)
    lru.put("b", 2, 4)
    assert lru.get("a") == 1  # "a" is now the most recent
    lru.put("c", 3, 4)  # 12 bytes: "b" goes
    assert list(lru) == ["a", "c"] and lru.nbytes == 8 and lru.get("b") is None
    lru.put("a", 4, 2)  # replacing a value counts its new size only
    assert lru.nbytes == 6 and lru.get("a") == 4
    lru.put("big", 5, 50)  # larger than the budget: held alone
    assert list(lru) == ["big"] and lru.nbytes == 50
