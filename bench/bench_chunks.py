"""pos_gaps inner-chunk size: stored bytes per entry against decode time per chunk, side by side in one run.

    python bench/bench_chunks.py --index runs/scale/idx-1M [--entries 8M] [--out docs/results/bench/chunks.json]

Reads the first ``--entries`` of one head's ``pos_gaps`` of a built index (impact-tiered lists, as a question
reads them), encodes them with the index's codec (Blosc zstd 5, bitshuffle: ``schema.compressors``) in chunks
of 1k .. 16k entries, and prints per size: stored bytes per entry, microseconds to decode one chunk, and the
entries a question decodes to read a 256-posting top tier (one chunk, or two where the tier crosses an edge).
The ratios against the current ``GAP_CHUNK`` come from the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Blosc

from s3attn.constants import INDEX_GAPS_ARRAY
from s3attn.index_builder.schema import GAP_CHUNK, compressors, head_array

SIZES = (1024, 2048, 4096, 8192, 16384)
TIER = 256  # postings of a typical top impact tier read per list and segment (bench_scale: ~250)


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "M": 1 << 20}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def first_head_gaps(index: Path, entries: int) -> np.ndarray:
    """The first ``entries`` of the first segment's lowest layer's KV head 0 pos_gaps."""
    segments = zarr.open_group(index / "index.zarr", mode="r")["segments"]
    group = segments[sorted(segments.group_keys())[0]]
    layer = min(int(k[1:]) for k in group.group_keys() if k.startswith("L"))
    return np.asarray(group[head_array(layer, 0, INDEX_GAPS_ARRAY)][:entries])


def measure(gaps: np.ndarray, size: int, repeats: int = 2000) -> dict:
    """Stored bytes per entry and microseconds per chunk decode, at chunks of ``size`` entries."""
    codec = compressors(INDEX_GAPS_ARRAY)[0]
    blosc = Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=Blosc.BITSHUFFLE)
    n = gaps.size // size
    frames = [blosc.encode(gaps[i * size : (i + 1) * size]) for i in range(n)]
    stored = sum(len(f) for f in frames)
    picks = frames[: min(repeats, n)]
    t = time.perf_counter()
    for f in picks:
        blosc.decode(f)
    us = (time.perf_counter() - t) / len(picks) * 1e6
    decoded_for_tier = size * (1 + (TIER - 1) / size)  # one chunk, two when the tier crosses an edge
    return {
        "bytes_per_entry": stored / (n * size),
        "decode_us": us,
        "entries_decoded_per_tier": decoded_for_tier,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="runs/scale/idx-1M", help="a built index (bench_scale makes this one)")
    ap.add_argument("--entries", type=parse_size, default=8 << 20)
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    gaps = first_head_gaps(Path(args.index), args.entries)
    rows = {size: measure(gaps, size) for size in SIZES}
    ref = rows[GAP_CHUNK] if GAP_CHUNK in rows else rows[SIZES[-1]]
    print(f"{gaps.size} pos_gaps entries of {args.index}; current GAP_CHUNK {GAP_CHUNK}")
    print(f"{'chunk':>6} {'B/entry':>8} {'x size':>7} {'us/decode':>9} {'x time':>7} {'decoded/tier':>12}")
    for size, r in rows.items():
        print(
            f"{size:>6} {r['bytes_per_entry']:>8.3f} {r['bytes_per_entry'] / ref['bytes_per_entry']:>7.2f} "
            f"{r['decode_us']:>9.1f} {r['decode_us'] / ref['decode_us']:>7.2f} {r['entries_decoded_per_tier']:>12.0f}"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"index": args.index, "entries": int(gaps.size), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
