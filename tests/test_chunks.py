"""ChunkReader: direct chunk-file reads equal zarr's own reads; other layouts fall back to zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from s3attn.index_builder.chunks import ChunkReader, _direct_layout
from s3attn.index_builder.schema import compressors


def _ranges(rng, size: int, n: int):
    starts = rng.integers(0, size, n)
    lens = np.minimum(rng.integers(0, 300, n), size - starts)
    return starts, lens


def _expected(data: np.ndarray, starts, lens) -> np.ndarray:
    return np.concatenate([data[s : s + n] for s, n in zip(starts, lens)] + [data[:0]])


@pytest.mark.parametrize("dtype,kind", [(np.uint32, "pos_gaps"), (np.uint8, "act_u8")])
def test_direct_reads_equal_zarr(tmp_path, dtype, kind):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 200, 5000).astype(dtype)
    data[1024:2048] = 0  # one chunk equal to the fill value: zarr does not write it
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    arr = group.create_array(
        "a", shape=data.shape, dtype=dtype, chunks=(1024,), compressors=compressors(kind)
    )
    arr[...] = data
    assert not (tmp_path / "g.zarr" / "a" / "c" / "1").exists()
    assert _direct_layout(arr) is not None
    reader = ChunkReader(max_bytes=3000)  # smaller than the chunks read: the LRU must evict
    for _ in range(3):
        starts, lens = _ranges(rng, data.size, 40)
        starts[:2], lens[:2] = [4900, 1000], [100, 1100]  # the edge chunk; a range over three chunks
        np.testing.assert_array_equal(reader.read(arr, starts, lens), _expected(data, starts, lens))
    assert reader._bytes <= max(3000, 1024 * data.itemsize)


def test_other_layouts_read_through_zarr(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, 4096).astype(np.uint32)
    sharded = zarr.open_group(tmp_path / "s.zarr", mode="w").create_array(
        "a", shape=data.shape, dtype=data.dtype, chunks=(256,), shards=(1024,),
        compressors=[BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")],
    )  # fmt: skip
    in_memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=data.shape, dtype=data.dtype, chunks=(512,)
    )
    for arr in (sharded, in_memory):
        arr[...] = data
        assert _direct_layout(arr) is None
        starts, lens = _ranges(rng, data.size, 20)
        np.testing.assert_array_equal(ChunkReader().read(arr, starts, lens), _expected(data, starts, lens))
