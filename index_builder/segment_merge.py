"""Merging adjacent segments into one, batch of lists by batch of lists: a merge's memory is bounded by
``segment_writer.BATCH_POSTINGS`` (plus the merged segment's token ids), not by the size of a head, so a
16M-token segment merges within a small machine's RAM.

For each batch of consecutive features, each input segment's lists are read as one range of its arrays (any
format: position order or impact tiers), decoded, shifted to the merged segment's positions and re-quantized
to the merged scale where theirs differs; ``segment_writer.tier_batch`` puts them in impact tiers. Every
input array is read once, front to back, its crc32 checked against the segment's checksum table when it has
been read whole, before anything is published: a merge never copies damage into a new segment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from s3attn.constants import INDEX_ACT_ARRAY, INDEX_GAPS_ARRAY
from s3attn.index_builder.chunks import ChunkReader
from s3attn.index_builder.schema import (
    OFFSET_DTYPE,
    crc_hex,
    crc_update,
    dequantize_acts,
    head_array,
    quantize_acts,
    tier_sizes,
)
from s3attn.index_builder.segment_reader import SegmentReader
from s3attn.index_builder.segment_writer import BATCH_POSTINGS, HeadStream, feature_batches, tier_batch

MERGE_CACHE_BYTES = 8 << 20
"""Decoded-chunk cache of a merge's reads: each chunk is read once, but a batch may end inside one."""


class _ListRanges:
    """One input segment's lists of one head, read in consecutive feature ranges, its crc32 kept."""

    def __init__(
        self, reader: SegmentReader, key: tuple[int, int], scale: float, shift: int, chunks: ChunkReader
    ) -> None:
        self.r, self.key, self.scale, self.shift, self.chunks = reader, key, scale, shift, chunks
        self.off = reader.offsets(*key)
        self.own_scale = reader.act_scale(*key)
        self.tiers = reader.tiers()
        self.paths = {kind: head_array(*key, kind) for kind in (INDEX_GAPS_ARRAY, INDEX_ACT_ARRAY)}
        self.crc = dict.fromkeys(self.paths, 0)

    def _read(self, kind: str, a: int, b: int) -> np.ndarray:
        data = self.r.read(self.chunks, self.paths[kind], np.array([a]), np.array([b - a]))
        self.crc[kind] = crc_update(self.crc[kind], data)
        return data

    def read(self, f0: int, f1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(list of each posting counted from f0, merged-segment positions, q on the merged scale) of lists
        [f0, f1); ranges must come in order, each starting where the last ended."""
        a, b = int(self.off[f0]), int(self.off[f1])
        lens = np.diff(self.off[f0 : f1 + 1])
        gaps, q = self._read(INDEX_GAPS_ARRAY, a, b), self._read(INDEX_ACT_ARRAY, a, b)
        positions = self.r.positions(gaps, tier_sizes(lens, self.tiers).ravel(), self.paths[INDEX_GAPS_ARRAY])
        if self.own_scale != self.scale:
            q = quantize_acts(dequantize_acts(q, self.own_scale), self.scale)
        feat = np.repeat(np.arange(f1 - f0, dtype=np.int64), lens)
        return feat, positions + self.shift, q

    def finish(self) -> None:
        """IndexCorruptError unless what was read (every list) matches the segment's checksums."""
        for kind, path in self.paths.items():
            self.r.check_checksum(path, crc_hex(self.crc[kind]))


def merged_head(
    readers: list[SegmentReader],
    key: tuple[int, int],
    batch: int = BATCH_POSTINGS,
    chunks: ChunkReader | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> HeadStream:
    """The merged lists of head ``key`` over adjacent ``readers`` (token order), as a :class:`HeadStream`;
    ``chunks`` reads the inputs (the fast local reader; a small one of its own by default); ``on_batch`` is
    told each batch's postings."""
    chunks = chunks or ChunkReader(MERGE_CACHE_BYTES)
    start = readers[0].token_start
    num_tokens = sum(r.num_tokens for r in readers)
    scale = max(r.act_scale(*key) for r in readers)
    inputs = [_ListRanges(r, key, scale, r.token_start - start, chunks) for r in readers]
    lens_F = np.sum([np.diff(inp.off) for inp in inputs], axis=0)
    offsets = np.zeros(lens_F.size + 1, dtype=np.int64)
    np.cumsum(lens_F, out=offsets[1:])

    def pieces() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for f0, f1 in feature_batches(offsets, num_tokens, batch):
            feat, pos, q = (np.concatenate(x) for x in zip(*(inp.read(f0, f1) for inp in inputs)))
            yield tier_batch(feat, pos, q, np.diff(offsets[f0 : f1 + 1]), num_tokens)
            if on_batch is not None:
                on_batch(feat.size)
        for inp in inputs:
            inp.finish()

    return HeadStream(offsets.astype(OFFSET_DTYPE), float(scale), pieces())


def merged_heads(
    readers: list[SegmentReader],
    heads: list[tuple[int, int]],
    batch: int = BATCH_POSTINGS,
    *,
    progress: bool = False,
) -> Iterator[tuple[tuple[int, int], HeadStream]]:
    """Yield ((layer, kv), merged :class:`HeadStream`) for adjacent segments, head after head; ``progress``:
    a bar of postings merged."""
    chunks = ChunkReader(MERGE_CACHE_BYTES)
    total = sum(r.meta.num_postings for r in readers)
    bar = tqdm(total=total, unit="posting", unit_scale=True, desc="merging", disable=not progress)
    try:
        for key in heads:
            yield key, merged_head(readers, key, batch, chunks, bar.update)
    finally:
        bar.close()
        chunks.close()
