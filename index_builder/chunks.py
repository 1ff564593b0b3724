"""Range reads of posting arrays by whole chunks, without zarr-python's per-call machinery (the query hot path).

zarr-python spends ~0.5 ms of event-loop and codec-pipeline work per chunk it touches; a question reads a few
hundred posting lists, each in one or two chunks, so that overhead alone exceeds the latency goal. The
posting arrays are plain Zarr v3 arrays written by us (``bytes`` little-endian + ``blosc``, regular 1-D
chunks, default chunk keys, local store): :class:`ChunkReader` reads such a chunk's file and hands it to
Blosc directly, and keeps recently decoded chunks in a small LRU (segments are immutable, so a cached chunk
never goes stale). Any other array layout (another store, codec or chunk grid) is read through zarr, so the
index stays a standard Zarr store either way.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import zarr
from numcodecs.blosc import decompress

from s3attn.index_builder.schema import concat_ranges

DECODED_CACHE_BYTES = 64 << 20
"""Decoded chunks kept per reader (LRU), in bytes."""


def _direct_layout(arr: zarr.Array) -> tuple[Path, int] | None:
    """(chunk folder, entries per chunk) when ``arr`` can be read chunk by chunk from files, else None."""
    meta = arr.metadata
    if getattr(meta, "zarr_format", None) != 3 or arr.ndim != 1 or arr.dtype.byteorder == ">":
        return None
    names = [type(c).__name__ for c in meta.codecs]
    if names != ["BytesCodec", "BloscCodec"]:
        return None
    endian = getattr(meta.codecs[0], "endian", None)
    if endian is not None and getattr(endian, "value", endian) != "little":
        return None
    root = getattr(arr.store_path.store, "root", None)
    if root is None:
        return None
    key = meta.encode_chunk_key((0,))
    if key != "c/0":
        return None
    return Path(root) / arr.store_path.path / "c", int(arr.chunks[0])


class ChunkReader:
    """Concatenated ranges of 1-D Zarr arrays, read by whole chunks with a shared decoded-chunk LRU."""

    def __init__(self, max_bytes: int = DECODED_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._layouts: dict[str, tuple[Path, int] | None] = {}

    def _chunk(self, arr: zarr.Array, folder: Path, size: int, i: int) -> np.ndarray:
        key = (str(folder), i)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        n = min(size, arr.shape[0] - i * size)
        path = folder / str(i)
        if path.is_file():  # Zarr v3 stores edge chunks whole (padded with the fill value)
            out = np.frombuffer(decompress(path.read_bytes()), dtype=arr.dtype)[:n]
        else:  # never written: zarr leaves chunks equal to the fill value out
            out = np.full(n, arr.fill_value, dtype=arr.dtype)
        self._cache[key] = out
        self._bytes += out.nbytes
        while self._bytes > self.max_bytes and len(self._cache) > 1:
            self._bytes -= self._cache.popitem(last=False)[1].nbytes
        return out

    def read(self, arr: zarr.Array, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """``concatenate([arr[s:s + n] for s, n in zip(starts, lens)])``."""
        starts = np.asarray(starts, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        name = str(arr.store_path)
        layout = self._layouts.get(name, False)
        if layout is False:
            layout = self._layouts[name] = _direct_layout(arr)
        if layout is None:
            idx = concat_ranges(starts, lens)
            return np.asarray(arr.get_orthogonal_selection(idx)) if idx.size else np.zeros(0, arr.dtype)
        folder, size = layout
        out = np.empty(int(lens.sum()), dtype=arr.dtype)
        at = 0
        for s, n in zip(starts.tolist(), lens.tolist()):
            pos, end = s, s + n
            while pos < end:
                i = pos // size
                stop = min(end, (i + 1) * size)
                chunk = self._chunk(arr, folder, size, i)
                out[at : at + stop - pos] = chunk[pos - i * size : stop - i * size]
                at += stop - pos
                pos = stop
        return out
