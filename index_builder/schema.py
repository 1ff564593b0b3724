"""On-disk schema of the posting-list index: record types, dtypes, codecs and chunk layouts, array paths,
checksums, quantization. Shared by the reading and the writing side; the typed metadata is in ``meta``.

Layout (see ``index_builder/SCHEMA.md`` for the full description)::

    INDEX/
      manifest.json                    live segments, written last by atomic rename
      index.lock                       fcntl lock of the one writer
      index.zarr/                      Zarr v3 group, attrs: kind, format_version, model_id, sae_release, ...
        segments/<name>/               group attrs: token_start, num_tokens, checksums
          tokens                       uint32[T]
          docs, doc_paths, doc_hashes  int64[3D], uint8[], uint8[]: the documents table (format 4; before,
                                       the group attrs' ``docs``)
          L<layer>/h<kv>/              group attrs: act_scale
            offsets                    uint64[F+1]  CSR offsets per feature
            pos_gaps                   uint32[N]    gaps of segment-relative positions, first of each list absolute
            act_u8                     uint8[N]     act = expm1(q / 255 * log1p(act_scale))

Every array of format 2 names its chunk layout in its attribute ``s3attn_layout`` (``LAYOUT_*`` below). In
format 3 each list is stored in impact tiers (``POSTING_ORDER_TIERS``, cuts by :func:`tier_ends`). In format 4
the documents table is three arrays (:data:`DOC_ARRAYS`) instead of the segment attributes' JSON.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from zarr.codecs import BloscCodec

from s3attn.constants import (
    INDEX_ACT_ARRAY,
    INDEX_DOC_HASHES_ARRAY,
    INDEX_DOC_PATHS_ARRAY,
    INDEX_DOCS_ARRAY,
    INDEX_GAPS_ARRAY,
    INDEX_OFFSETS_ARRAY,
    INDEX_TOKENS_ARRAY,
    SEGMENT_NAME_PREFIX,
    SEGMENT_TMP_PREFIX,
    SEGMENTS_DIR,
)
from s3attn.storage import Location, file_sizes

# ---- dtypes and chunking ---------------------------------------------------------------------------------
TOKEN_DTYPE = np.dtype("uint32")
OFFSET_DTYPE = np.dtype("uint64")
GAP_DTYPE = np.dtype("uint32")
ACT_DTYPE = np.dtype("uint8")
GAP_CHUNK = 4096
"""Entries per inner chunk of pos_gaps: a question decodes little beyond the lists it reads. (Was 16384: with
impact tiers, a top tier of a few hundred postings then decoded 16k entries in every segment;
``bench/bench_chunks.py`` prints bytes and decode time per chunk size.)"""
GAP_SHARD = 1 << 23
"""Entries per pos_gaps shard file (2048 inner chunks): few files, so a reader keeps them all open."""
ACT_CHUNK = 1 << 23
"""Entries per act_u8 chunk file (stored raw: a range is read straight into the result, see ``chunks``)."""
TOKEN_CHUNK = 4096
"""Token ids per inner chunk of ``tokens``: a span's text decodes a chunk or two of 16 KiB. (Was 65536 in one
chunk per file: a span then decoded 256 KiB, ~0.5 ms, and at 16M tokens a question's spans fall in as many
chunks as it has spans.)"""
TOKEN_SHARD = 1 << 23
"""Token ids per ``tokens`` shard file (2048 inner chunks)."""
ACT_LEVELS = 255  # q in [0, 255]
ACT_SCALE_ATTR = "act_scale"  # attribute of each L<layer>/h<kv> group: the scale of its act_u8
CHECKSUM_ALGO = "crc32"
DOC_DTYPE = np.dtype("int64")
STRINGS_DTYPE = np.dtype("uint8")
DOC_ARRAYS = (INDEX_DOCS_ARRAY, INDEX_DOC_PATHS_ARRAY, INDEX_DOC_HASHES_ARRAY)
"""Format 4: a segment's documents table (``doc_table.DocColumns``), each array in one Blosc zstd chunk."""


class DocRecord(NamedTuple):
    doc_id: int
    path: str
    content_hash: str
    token_start: int  # global position of the document's first token
    num_tokens: int


def doc_json(d: DocRecord) -> dict:
    """A document record as plain JSON types (callers may pass numpy integers)."""
    return {
        "doc_id": int(d.doc_id),
        "path": str(d.path),
        "content_hash": str(d.content_hash),
        "token_start": int(d.token_start),
        "num_tokens": int(d.num_tokens),
    }


class SegmentData(NamedTuple):
    token_ids: np.ndarray  # uint32 [T]
    docs: list[DocRecord]  # token_start GLOBAL
    token_start: int  # global position of the segment's first token
    codes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]  # (layer, kv) -> (indices_TK, acts_TK)


class Postings(NamedTuple):
    positions: np.ndarray  # int64 [N] GLOBAL token positions
    feature_slot: np.ndarray  # int32 [N] index into the requested features array
    acts: np.ndarray  # float32 [N] dequantized activations


# ---- codecs and chunk layouts ----------------------------------------------------------------------------
LAYOUT_BLOSC = "blosc"
"""Regular 1-D chunks, codecs ``bytes`` (little endian) + ``blosc``, one chunk per file ``c/<i>``."""
LAYOUT_SHARDED = "sharded-blosc"
"""``sharding_indexed``: inner chunks ``bytes`` + ``blosc``, shard index ``bytes`` + ``crc32c`` at the end."""
LAYOUT_RAW = "raw"
"""Codec ``bytes`` (little endian) only: a chunk file holds the entries as they are."""
LAYOUTS = (LAYOUT_BLOSC, LAYOUT_SHARDED, LAYOUT_RAW)
ARRAY_LAYOUT = {
    INDEX_TOKENS_ARRAY: LAYOUT_SHARDED,
    INDEX_OFFSETS_ARRAY: LAYOUT_BLOSC,
    INDEX_GAPS_ARRAY: LAYOUT_SHARDED,
    INDEX_ACT_ARRAY: LAYOUT_RAW,
    **dict.fromkeys(DOC_ARRAYS, LAYOUT_BLOSC),
}
"""The layout the writer gives each array kind, recorded on the array (``s3attn_layout``)."""
ARRAY_CHUNKS = {
    INDEX_TOKENS_ARRAY: (TOKEN_CHUNK, TOKEN_SHARD),
    INDEX_OFFSETS_ARRAY: (0, 0),
    INDEX_GAPS_ARRAY: (GAP_CHUNK, GAP_SHARD),
    INDEX_ACT_ARRAY: (ACT_CHUNK, 0),
    **dict.fromkeys(DOC_ARRAYS, (0, 0)),
}
"""Per array kind: (entries per chunk, 0 = the whole array in one; entries per shard file, 0 = not sharded).
Sharded exactly where :data:`ARRAY_LAYOUT` says ``sharded-blosc``."""


GAPS_CODEC = BloscCodec(cname="lz4hc", clevel=5, shuffle="bitshuffle")
"""pos_gaps: Blosc lz4hc with bitshuffle, decoded on every question (was zstd 5: at 4k-entry chunks lz4hc
decodes a chunk ~2.5x faster for ~7% more pos_gaps bytes on real text, ``bench/bench_chunks.py``)."""
INT_CODEC = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")
"""offsets: Blosc zstd with bitshuffle (read once per segment)."""
TOKENS_CODEC = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
"""tokens: Blosc zstd with byte shuffle (token ids of 4k-token chunks of real text: ~1.6 bytes/token and ~33 us
a chunk to decode here, against ~1.73 and ~38 us with bitshuffle)."""
STRINGS_CODEC = BloscCodec(cname="zstd", clevel=5, shuffle="noshuffle")
"""doc_paths, doc_hashes: Blosc zstd on the UTF-8 bytes (read once per segment)."""


def compressors(kind: str) -> list[BloscCodec]:
    """Standard Zarr v3 codecs per array kind: Blosc for integers (:data:`GAPS_CODEC`, :data:`TOKENS_CODEC`,
    :data:`INT_CODEC`) and strings (:data:`STRINGS_CODEC`), none for act_u8.

    Log-quantized activations compress to only ~0.8 bytes/posting with zstd; stored raw, a question reads
    just the bytes of its lists instead of decoding whole chunks (see ``chunks``).
    """
    if kind not in ARRAY_LAYOUT:
        raise ValueError(f"unknown array kind {kind!r}")
    if ARRAY_LAYOUT[kind] == LAYOUT_RAW:
        return []
    special = {INDEX_GAPS_ARRAY: GAPS_CODEC, INDEX_TOKENS_ARRAY: TOKENS_CODEC}
    special |= dict.fromkeys((INDEX_DOC_PATHS_ARRAY, INDEX_DOC_HASHES_ARRAY), STRINGS_CODEC)
    return [special.get(kind, INT_CODEC)]


# ---- posting order inside a list --------------------------------------------------------------------------
POSTING_ORDER_POSITION = "position"
"""Formats 1 and 2: a list is its positions in increasing order (one tier)."""
POSTING_ORDER_TIERS = "impact-tiers"
"""Format 3: a list is its tiers one after the other, tier 0 first, positions increasing within a tier."""
TIER_DIVISORS = (4096, 1024, 256, 64, 16, 4, 1)
"""Tier t of a list of n postings holds its postings of rank [ceil(n / d[t-1]), ceil(n / d[t])) by stored
activation (q descending, ties by position; ceil(n / d[-1]) = 0): the top 1/4096 (at least one posting),
then up to the top 1/1024, ..., the top quarter, the rest. Cuts follow from n alone, so no array holds them."""


def tier_ends(lens: np.ndarray, divisors: tuple[int, ...] | list[int]) -> np.ndarray:
    """int64 [..., NT]: where each tier of lists of ``lens`` postings ends, counted from the list's start
    (``ceil(n / d)`` per divisor; the last is n when the last divisor is 1)."""
    n = np.asarray(lens, dtype=np.int64)[..., None]
    d = np.asarray(divisors, dtype=np.int64)
    return (n + d - 1) // d


def tier_sizes(lens: np.ndarray, divisors: tuple[int, ...] | list[int]) -> np.ndarray:
    """int64 [..., NT]: postings in each tier of lists of ``lens`` postings (see :data:`TIER_DIVISORS`)."""
    ends = tier_ends(lens, divisors)
    return np.diff(ends, axis=-1, prepend=0)


# ---- paths -----------------------------------------------------------------------------------------------
def segment_name(number: int) -> str:
    return f"{SEGMENT_NAME_PREFIX}{number:06d}"


def is_temp_name(name: str) -> bool:
    return name.startswith(SEGMENT_TMP_PREFIX)


def segment_path(name: str) -> str:
    """Zarr path of a segment group inside ``index.zarr``."""
    return f"{SEGMENTS_DIR}/{name}"


def head_group(layer: int, kv_head: int) -> str:
    """Path of a (layer, kv head) group relative to its segment."""
    return f"L{int(layer)}/h{int(kv_head)}"


def head_array(layer: int, kv_head: int, kind: str) -> str:
    """Path of ``offsets`` / ``pos_gaps`` / ``act_u8`` relative to its segment."""
    return f"{head_group(layer, kv_head)}/{kind}"


def disk_usage(index_dir: Path | Location) -> tuple[int, dict[str, int]]:
    """Bytes of every file under ``index_dir``: total, and by array kind (chunk files; the three arrays of
    format 4's documents table as ``documents``) or ``metadata``."""
    total, by_kind = 0, {}
    kinds = {k: k for k in (INDEX_TOKENS_ARRAY, INDEX_OFFSETS_ARRAY, INDEX_GAPS_ARRAY, INDEX_ACT_ARRAY)}
    kinds |= dict.fromkeys(DOC_ARRAYS, "documents")
    if isinstance(index_dir, Location):  # object storage: one listing
        for rel, size in file_sizes(index_dir).items():
            parts = rel.split("/")
            kind = next((kinds[k] for k in parts[:-1] if k in kinds), "metadata")
            total += size
            key = "metadata" if parts[-1] == "zarr.json" else kind
            by_kind[key] = by_kind.get(key, 0) + size
        return total, by_kind
    for dirpath, _dirs, files in os.walk(index_dir):
        parts = Path(dirpath).relative_to(index_dir).parts
        kind = next((kinds[k] for k in parts if k in kinds), "metadata")
        for f in files:
            size = (Path(dirpath) / f).stat().st_size
            total += size
            key = "metadata" if f == "zarr.json" else kind
            by_kind[key] = by_kind.get(key, 0) + size
    return total, by_kind


# ---- checksums -------------------------------------------------------------------------------------------
def crc_update(crc: int, arr: np.ndarray) -> int:
    """``crc`` (a running crc32) continued over the raw little-endian C-order bytes of ``arr``: the crc of
    consecutive pieces fed in order is the crc of their concatenation."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return zlib.crc32(memoryview(a).cast("B"), crc) & 0xFFFFFFFF


def crc_hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


def array_checksum(arr: np.ndarray) -> str:
    """crc32 of the raw little-endian C-order bytes of an array, as 8 hex digits."""
    return crc_hex(crc_update(0, arr))


def segment_checksum(checksums: dict[str, str], token_start: int, num_tokens: int) -> str:
    """One checksum for the manifest entry: crc32 over the canonical JSON of the per-array checksums."""
    blob = json.dumps(
        {"checksums": checksums, "token_start": token_start, "num_tokens": num_tokens}, sort_keys=True
    )
    return f"{zlib.crc32(blob.encode()) & 0xFFFFFFFF:08x}"


# ---- activation quantization -----------------------------------------------------------------------------
def act_scale_of(acts: np.ndarray) -> float:
    """The scale stored with a posting array: its max activation rounded UP to a power of two (1.0 when all
    acts are <= 0). Segments whose scales agree share one grid, so merging them copies ``q`` unchanged."""
    m = float(np.max(acts)) if acts.size else 0.0
    if not (m > 0 and np.isfinite(m)):
        return 1.0
    return float(2.0 ** np.ceil(np.log2(max(m, 2.0**-20))))


def quantize_acts(acts: np.ndarray, scale: float) -> np.ndarray:
    """Log quantization: q = round(log1p(act) / log1p(scale) * 255), acts clipped to [0, scale]."""
    a = np.clip(np.asarray(acts, dtype=np.float64), 0.0, scale)
    q = np.rint(np.log1p(a) * (ACT_LEVELS / np.log1p(scale)))
    return np.clip(q, 0, ACT_LEVELS).astype(ACT_DTYPE)


def dequantize_acts(q: np.ndarray, scale: float) -> np.ndarray:
    """Inverse of ``quantize_acts``: act = expm1(q / 255 * log1p(scale)), float32 (a 256-entry table)."""
    table = np.expm1(np.arange(ACT_LEVELS + 1) * (np.log1p(scale) / ACT_LEVELS)).astype(np.float32)
    return table[np.asarray(q, dtype=ACT_DTYPE)]


def act_error_bound(acts: np.ndarray, scale: float) -> np.ndarray:
    """Largest possible |dequantize(quantize(a)) - a| for acts in [0, scale] (half a step in log space)."""
    half = np.log1p(scale) / ACT_LEVELS / 2
    return (1.0 + np.asarray(acts, dtype=np.float64)) * np.expm1(half) + 1e-6 * (1.0 + scale)


# ---- vectorised helpers ----------------------------------------------------------------------------------
def concat_ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lens)])`` without a Python loop (int64)."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    before = np.cumsum(lens) - lens
    return np.repeat(np.asarray(starts, dtype=np.int64) - before, lens) + np.arange(total, dtype=np.int64)


def in_sorted(positions_N: np.ndarray, sorted_M: np.ndarray) -> np.ndarray:
    """bool [N]: which of ``positions_N`` occur in ``sorted_M`` (sorted ascending)."""
    if sorted_M.size == 0:
        return np.zeros(np.shape(positions_N), dtype=bool)
    k = np.minimum(np.searchsorted(sorted_M, positions_N), sorted_M.size - 1)
    return sorted_M[k] == positions_N


def decode_gaps(gaps: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Positions from concatenated gap lists (first entry of each list absolute), int64."""
    cs = np.cumsum(gaps, dtype=np.int64)
    lens = np.asarray(lens, dtype=np.int64)
    nz = lens > 0
    first = (np.cumsum(lens) - lens)[nz]
    base = cs[first] - gaps[first].astype(np.int64)  # running sum before each list
    return cs - np.repeat(base, lens[nz])


def encode_gaps(positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Gaps of sorted-per-list positions; the first entry of each non-empty list stays absolute."""
    pos = np.asarray(positions, dtype=np.int64)
    gaps = np.empty(pos.shape, dtype=np.int64)
    if pos.size:
        gaps[0] = pos[0]
        np.subtract(pos[1:], pos[:-1], out=gaps[1:])
        starts = np.asarray(offsets[:-1], dtype=np.int64)
        starts = starts[starts < pos.size]
        gaps[starts] = pos[starts]
    return gaps.astype(GAP_DTYPE)
