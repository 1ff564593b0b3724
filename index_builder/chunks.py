"""Range reads of posting arrays straight from their chunk files (the query hot path), without zarr-python.

zarr-python spends ~0.5 ms of event-loop and codec-pipeline work per chunk it touches; a question reads a few
hundred posting lists, each in one or two chunks, so that overhead alone would exceed the latency goal. The
posting arrays are plain Zarr v3 arrays on a local store, in one of three layouts (``schema.LAYOUT_*``) read
here directly:

- ``blosc``: regular 1-D chunks, codecs ``bytes`` + ``blosc``, one chunk per file (``c/<i>``): a chunk file
  is handed to Blosc whole;
- ``sharded-blosc``: ``sharding_indexed`` with inner codecs ``bytes`` + ``blosc`` and the default shard index
  (``bytes`` + ``crc32c``, at the end of the file): a shard's index is read once, then only the inner chunks a
  range touches are read (``pread``) and decoded, so small inner chunks decode little beyond what is asked;
- ``raw``: codec ``bytes`` only: the bytes of a range are read straight into the result (``preadv``),
  nothing is decoded.

An array of format 2 names its layout in its attribute ``s3attn_layout``, and the reader dispatches on that
name. Arrays of format 1 carry no such attribute: :func:`infer_layout_v1` (the reader of the previous format)
recognises their layout from their codecs. Decoded Blosc chunks are kept in an LRU (segments are immutable,
so a cached chunk never goes stale). Any other array (another store, codec, chunk grid or an unknown layout
name) is read through zarr, so the index stays a standard Zarr store either way.

A damaged chunk file (short, undecodable, a corrupt shard index, a whole-array Blosc chunk that does not match
the array's checksum) raises :class:`ChunkDamage`; ``segment_reader`` turns it into ``IndexCorruptError``.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import NamedTuple

import google_crc32c
import numpy as np
import zarr
from numcodecs.blosc import decompress

from s3attn.constants import INDEX_LAYOUT_ATTR
from s3attn.index_builder.schema import (
    LAYOUT_BLOSC,
    LAYOUT_RAW,
    LAYOUT_SHARDED,
    LAYOUTS,
    array_checksum,
    concat_ranges,
)
from s3attn.lru import ByteLRU

DECODED_CACHE_BYTES = 64 << 20
"""Decoded posting chunks kept per reader (LRU), in bytes."""
TEXT_CACHE_BYTES = 4 << 20
"""Decoded token chunks (span text) kept per reader, in bytes: an LRU of their own, so the token chunks that a
question's spans touch (more of them, the larger the index) neither push posting chunks out nor hold more than
this."""
SHARD_INDEX_BYTES = 1 << 20
"""Shard indexes (each inner chunk's offset and size, read from a shard file's tail) kept per reader (LRU), in
bytes. A question needs one only for a chunk the decoded LRU lacks; held for every shard read, they grew with
the index (6.8 MiB at 16M tokens)."""
MAX_OPEN_FILES = min(2048, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4)
"""Chunk files a reader keeps open (one descriptor each): past it, all are closed and reopened as needed,
so a large index stays well inside the process's descriptor limit."""

_EMPTY = np.uint64(2**64 - 1)  # shard index entry of an inner chunk that was not written (fill value)


class ChunkDamage(ValueError):
    """A chunk file that cannot be what its array's metadata says: cut short, an undecodable Blosc frame,
    a corrupt shard index, or a whole-array chunk that does not match the array's checksum. The message
    names the file relative to the array (``c/<i>``); the segment reader adds the index and the array."""


class Layout(NamedTuple):
    """How a 1-D array's entries map to files: entry e is in chunk e // chunk, file chunk // per_file."""

    kind: str  # one of schema.LAYOUTS: "blosc" | "sharded-blosc" | "raw"
    folder: Path  # the array's chunk folder (``.../c``)
    chunk: int  # entries per (inner) chunk
    per_file: int  # chunks per file: 1, or inner chunks per shard


def _chunk_folder(arr: zarr.Array) -> Path | None:
    """The folder of a 1-D, little-endian Zarr v3 array's ``c/<i>`` chunk files on a local store, else None."""
    meta = arr.metadata
    if getattr(meta, "zarr_format", None) != 3 or arr.ndim != 1 or arr.dtype.byteorder == ">":
        return None
    root = getattr(arr.store_path.store, "root", None)
    if root is None or meta.encode_chunk_key((0,)) != "c/0":
        return None
    return Path(root) / arr.store_path.path / "c"


def array_layout(arr: zarr.Array) -> Layout | None:
    """The :class:`Layout` of ``arr`` when it can be read from its files here, else None (read via zarr).

    Dispatches on the layout the array names (``s3attn_layout``); an array without one was written in
    format 1 and its layout is inferred from its codecs (:func:`infer_layout_v1`)."""
    name = arr.attrs.get(INDEX_LAYOUT_ATTR)
    if name is None:
        return infer_layout_v1(arr)
    folder = _chunk_folder(arr)
    if name not in LAYOUTS or folder is None:
        return None
    chunk = int(arr.chunks[0])  # the inner chunk of a sharded array
    if name != LAYOUT_SHARDED:
        return Layout(name, folder, chunk, 1)
    shard = int(arr.shards[0]) if arr.shards else 0
    return Layout(name, folder, chunk, shard // chunk) if shard and shard % chunk == 0 else None


# ---- reader of format 1 (arrays without s3attn_layout): the layout recognised from the codec classes ------
def _little_bytes(codec: object) -> bool:
    endian = getattr(codec, "endian", None)
    return type(codec).__name__ == "BytesCodec" and (
        endian is None or getattr(endian, "value", endian) == "little"
    )


def _names(codecs) -> list[str]:
    return [type(c).__name__ for c in codecs]


def _v1_sharded(arr: zarr.Array, folder: Path) -> Layout | None:
    shard = arr.metadata.codecs[0]
    inner, index = list(shard.codecs), list(shard.index_codecs)
    location = getattr(shard.index_location, "value", shard.index_location)
    if (
        _names(inner) != ["BytesCodec", "BloscCodec"]
        or not _little_bytes(inner[0])
        or _names(index) != ["BytesCodec", "Crc32cCodec"]
        or not _little_bytes(index[0])
        or location != "end"
    ):
        return None
    chunk, shard_len = int(shard.chunk_shape[0]), int(arr.metadata.chunk_grid.chunk_shape[0])
    return Layout(LAYOUT_SHARDED, folder, chunk, shard_len // chunk) if shard_len % chunk == 0 else None


def infer_layout_v1(arr: zarr.Array) -> Layout | None:
    """Format 1 (no layout attribute): the :class:`Layout` recognised from the codec classes, else None."""
    folder = _chunk_folder(arr)
    if folder is None:
        return None
    codecs = list(arr.metadata.codecs)
    if len(codecs) == 1 and type(codecs[0]).__name__ == "ShardingCodec":
        return _v1_sharded(arr, folder)
    if not codecs or not _little_bytes(codecs[0]):
        return None
    size = int(arr.metadata.chunk_grid.chunk_shape[0])
    if len(codecs) == 1:
        return Layout(LAYOUT_RAW, folder, size, 1)
    return Layout(LAYOUT_BLOSC, folder, size, 1) if _names(codecs[1:]) == ["BloscCodec"] else None


# ---- range reads -------------------------------------------------------------------------------------------
def _pieces(starts: np.ndarray, lens: np.ndarray, size: int) -> tuple[list[int], ...]:
    """Ranges (all non-empty) cut at chunk edges: per piece its chunk id, first and end entry inside that
    chunk, and where it goes in the concatenated output. Array arithmetic for many ranges, plain Python
    for a few (a span's tokens), where numpy's per-call cost would dominate."""
    if starts.size <= 4:
        out: tuple[list[int], ...] = ([], [], [], [])
        at = 0
        for s, n in zip(starts.tolist(), lens.tolist()):
            pos, end = s, s + n
            while pos < end:
                c = pos // size
                stop = min(end, (c + 1) * size)
                for column, value in zip(out, (c, pos - c * size, stop - c * size, at)):
                    column.append(value)
                at += stop - pos
                pos = stop
        return out
    first_c, last_c = starts // size, (starts + lens - 1) // size
    per_range = last_c - first_c + 1
    chunk_P = concat_ranges(first_c, per_range)
    range_P = np.repeat(np.arange(starts.size), per_range)
    lo_P = np.maximum(starts[range_P], chunk_P * size) - chunk_P * size
    hi_P = np.minimum((starts + lens)[range_P], (chunk_P + 1) * size) - chunk_P * size
    at_P = np.cumsum(hi_P - lo_P) - (hi_P - lo_P)
    return chunk_P.tolist(), lo_P.tolist(), hi_P.tolist(), at_P.tolist()


class ChunkReader:
    """Concatenated ranges of 1-D Zarr arrays, read from their files with a shared decoded-chunk LRU.

    Ranges are cut at chunk edges with array arithmetic; the only Python loop is one slice copy per piece.
    File descriptors stay open until :meth:`close`: segments are immutable, and a file a merge deletes stays
    readable through an open descriptor.
    """

    def __init__(self, max_bytes: int = DECODED_CACHE_BYTES) -> None:
        self._cache = ByteLRU(max_bytes)  # (folder, chunk) -> decoded chunk
        self._layouts: dict[str, Layout | None] = {}
        self._shard_index = ByteLRU(SHARD_INDEX_BYTES)  # (folder, shard) -> (index, sentinel)
        self._files: dict[Path, _Files] = {}
        self._held = [0]  # descriptors open in self._files
        self.hits = 0  # decoded-chunk LRU lookups served from the cache (for benchmarks)
        self.misses = 0  # ... and decoded from the files

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded chunks held (``max_bytes`` at most, but for one chunk larger than that)."""
        return self._cache.nbytes

    def close(self) -> None:
        """Close every descriptor (a later read opens them again)."""
        for files in self._files.values():
            files.close()
        self._files.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit the os module may be gone already
            pass

    def read(
        self, arr: zarr.Array, starts: np.ndarray, lens: np.ndarray, checksum: str | None = None
    ) -> np.ndarray:
        """``concatenate([arr[s:s + n] for s, n in zip(starts, lens)])``.

        ``checksum``: the array's crc32 (``schema.array_checksum``); a Blosc chunk that holds the whole
        array is checked against it when it is decoded (once: it is cached). A damaged chunk file raises
        :class:`ChunkDamage`."""
        starts = np.asarray(starts, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        name = str(arr.store_path)
        layout = self._layouts.get(name, False)
        if layout is False:
            layout = self._layouts[name] = array_layout(arr)
        if layout is None:
            idx = concat_ranges(starts, lens)
            return np.asarray(arr.get_orthogonal_selection(idx)) if idx.size else np.zeros(0, arr.dtype)
        keep = lens > 0
        starts, lens = starts[keep], lens[keep]
        out = np.empty(int(lens.sum()), dtype=arr.dtype)
        if not out.size:
            return out
        chunk_ids, lo_P, hi_P, at_P = _pieces(starts, lens, layout.chunk)
        if self._held[0] > MAX_OPEN_FILES:
            self.close()
        folder = str(layout.folder)  # the cache keys' first half
        files = self._files.get(layout.folder)
        if files is None:
            files = self._files[layout.folder] = _Files(layout.folder, self._held)
        if layout.kind == LAYOUT_RAW:
            _read_raw(arr, files, out, chunk_ids, lo_P, hi_P, at_P)
            return out
        whole = checksum if arr.shape[0] <= layout.chunk else None  # one chunk holds the whole array
        views = {c: self._chunk(arr, layout, files, c, folder, whole) for c in dict.fromkeys(chunk_ids)}
        for c, lo, hi, at in zip(chunk_ids, lo_P, hi_P, at_P):
            data = views[c]
            if hi > data.size:
                raise ChunkDamage(f"c/{c // layout.per_file}: chunk file is short")
            out[at : at + hi - lo] = data[lo:hi]
        return out

    def _chunk(
        self,
        arr: zarr.Array,
        layout: Layout,
        files: _Files,
        c: int,
        folder: str,
        checksum: str | None = None,
    ) -> np.ndarray:
        """Decoded (inner) chunk ``c`` (LRU-cached, keyed by ``folder``, the array's chunk folder); checked
        against ``checksum`` when it is given (the chunk then holds the whole array)."""
        key = (folder, c)
        hit = self._cache.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        n = min(layout.chunk, arr.shape[0] - c * layout.chunk)
        frame = self._frame(layout, files, c, folder)
        if frame is None:  # never written: the fill value
            out = np.full(n, arr.fill_value, dtype=arr.dtype)
        else:  # Zarr v3 stores edge chunks whole (padded with the fill value)
            out = _decode(frame, arr.dtype, n, f"c/{c // layout.per_file}")
        if checksum is not None and array_checksum(out) != checksum:
            raise ChunkDamage(f"c/{c // layout.per_file}: does not match the array's checksum")
        self._cache.put(key, out, out.nbytes)
        return out

    def _frame(self, layout: Layout, files: _Files, c: int, folder: str) -> bytes | None:
        """The stored bytes of chunk ``c``, or None where it was not written."""
        shard, j = divmod(c, layout.per_file)
        fd = files.get(shard)
        if fd is None:
            return None
        if layout.kind == LAYOUT_BLOSC:
            return os.pread(fd, os.fstat(fd).st_size, 0)
        index, empty = self._index(layout, shard, fd, folder)
        offset, nbytes = index.item(2 * j), index.item(2 * j + 1)  # Python ints: no numpy scalars per miss
        if offset == empty and nbytes == empty:
            return None
        frame = os.pread(fd, nbytes, offset)
        if len(frame) != nbytes:
            raise ChunkDamage(f"c/{shard}: shard file is short")
        return frame

    def _index(self, layout: Layout, shard: int, fd: int, folder: str) -> tuple[np.ndarray, int]:
        """A shard's index: (offset, nbytes) of each inner chunk, flat, and the value both hold for a chunk
        not written. Kept (LRU, ``SHARD_INDEX_BYTES``) as uint32 where every entry fits, the sentinel (all
        ones) then uint32's own."""
        key = (folder, shard)
        got = self._shard_index.get(key)
        if got is None:
            size = 16 * layout.per_file
            file_size = os.fstat(fd).st_size
            tail = os.pread(fd, size + 4, file_size - size - 4) if file_size >= size + 4 else b""
            if len(tail) != size + 4 or google_crc32c.value(tail[:size]) != int.from_bytes(
                tail[size:], "little"
            ):
                raise ChunkDamage(f"c/{shard}: shard index is corrupt")
            index = np.frombuffer(tail, dtype="<u8", count=2 * layout.per_file)
            written = index[index != _EMPTY]
            small = np.iinfo(np.uint32).max
            if not written.size or int(written.max()) < small:
                index = np.where(index == _EMPTY, small, index).astype(np.uint32)
            got = (index, int(np.iinfo(index.dtype).max))
            self._shard_index.put(key, got, index.nbytes)
        return got


def _read_raw(
    arr: zarr.Array,
    files: _Files,
    out: np.ndarray,
    chunk_ids: list[int],
    lo_P: list[int],
    hi_P: list[int],
    at_P: list[int],
) -> None:
    """Pieces of raw chunk files straight into ``out`` (one ``preadv`` each, no copy, no memory map: a
    reader's memory does not grow with the pages it has read); a chunk never written is the fill value."""
    size = out.dtype.itemsize
    view = memoryview(out).cast("B")
    for c, lo, hi, at in zip(chunk_ids, lo_P, hi_P, at_P):
        fd = files.get(c)
        if fd is None:  # never written: zarr leaves chunks equal to the fill value out
            out[at : at + hi - lo] = arr.fill_value
        elif os.preadv(fd, [view[at * size : (at + hi - lo) * size]], lo * size) != (hi - lo) * size:
            raise ChunkDamage(f"c/{c}: chunk file is short")


def _decode(frame: bytes, dtype: np.dtype, n: int, name: str) -> np.ndarray:
    """The first ``n`` entries of a Blosc ``frame``; :class:`ChunkDamage` naming chunk file ``name`` when it
    does not decode or holds fewer."""
    try:
        raw = decompress(frame)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ChunkDamage(f"{name}: Blosc cannot decode it ({err})") from None
    if len(raw) < n * dtype.itemsize:
        raise ChunkDamage(f"{name}: decodes to {len(raw)} bytes, fewer than its {n} entries")
    return np.frombuffer(raw, dtype=dtype, count=n)


class _Files:
    """File descriptors of one array's chunk (or shard) files, opened on first use, closed by close()."""

    def __init__(self, folder: Path, held: list[int]) -> None:
        self.folder = folder
        self._fds: dict[int, int | None] = {}
        self._held = held  # descriptors open in all of one reader's _Files, shared

    def get(self, i: int) -> int | None:
        """Descriptor of file ``i``, or None when it does not exist."""
        if i not in self._fds:
            try:
                self._fds[i] = os.open(self.folder / str(i), os.O_RDONLY)
                self._held[0] += 1
            except FileNotFoundError:
                self._fds[i] = None
        return self._fds[i]

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
                self._held[0] -= 1
        self._fds.clear()
