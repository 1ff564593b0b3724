"""pos_gaps codec and inner-chunk size: stored bytes per entry against encode and decode time, side by side.

    python bench/bench_chunks.py --index runs/scale/seed_idx [--entries 8M] [--out docs/results/bench/chunks.json]

Reads the first ``--entries`` of one head's ``pos_gaps`` of a built index (lists in impact tiers, as a question
reads them; take an index of real text: a tiled one repeats its gaps, which flatters every codec), encodes them
with each Blosc codec (bitshuffle) in chunks of 2k .. 16k entries, and prints per codec and size: stored bytes
per entry, microseconds to encode and to decode one chunk, and the ratios against the index's current codec
and ``GAP_CHUNK`` (``schema.GAPS_CODEC``), all from the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import zarr
from _tiling import parse_size
from numcodecs import Blosc

from s3attn.constants import INDEX_GAPS_ARRAY
from s3attn.index_builder.schema import GAP_CHUNK, GAPS_CODEC, head_array

SIZES = (2048, 4096, 16384)
CODECS = (("zstd", 5), ("lz4hc", 5), ("lz4hc", 9), ("lz4", 5))


def first_head_gaps(index: Path, entries: int) -> np.ndarray:
    """The first ``entries`` of the first segment's lowest layer's KV head 0 pos_gaps."""
    segments = zarr.open_group(index / "index.zarr", mode="r")["segments"]
    group = segments[sorted(segments.group_keys())[0]]
    layer = min(int(k[1:]) for k in group.group_keys() if k.startswith("L"))
    return np.asarray(group[head_array(layer, 0, INDEX_GAPS_ARRAY)][:entries])


def measure(gaps: np.ndarray, cname: str, level: int, size: int) -> dict:
    """Stored bytes per entry, and microseconds per chunk to encode and to decode, at chunks of ``size``."""
    blosc = Blosc(cname=cname, clevel=level, shuffle=Blosc.BITSHUFFLE)
    n = gaps.size // size
    t = time.perf_counter()
    frames = [blosc.encode(gaps[i * size : (i + 1) * size]) for i in range(n)]
    encode = time.perf_counter() - t
    t = time.perf_counter()
    for f in frames:
        blosc.decode(f)
    decode = time.perf_counter() - t
    return {
        "codec": f"{cname}{level}",
        "chunk": size,
        "bytes_per_entry": sum(len(f) for f in frames) / (n * size),
        "encode_us": encode / n * 1e6,
        "decode_us": decode / n * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="runs/scale/seed_idx", help="a built index of real text")
    ap.add_argument("--entries", type=parse_size, default=8 << 20)
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    gaps = first_head_gaps(Path(args.index), args.entries)
    rows = [measure(gaps, c, lv, size) for c, lv in CODECS for size in SIZES]
    current = f"{GAPS_CODEC.cname.value}{GAPS_CODEC.clevel}"
    ref = next(r for r in rows if r["codec"] == current and r["chunk"] == GAP_CHUNK)
    print(f"{gaps.size} pos_gaps entries of {args.index}; current: {current}, {GAP_CHUNK}-entry chunks")
    print(f"{'codec':>7} {'chunk':>6} {'B/entry':>8} {'x size':>7} {'us enc':>7} {'us dec':>7} {'x dec':>6}")
    for r in rows:
        print(
            f"{r['codec']:>7} {r['chunk']:>6} {r['bytes_per_entry']:>8.3f} "
            f"{r['bytes_per_entry'] / ref['bytes_per_entry']:>7.2f} {r['encode_us']:>7.1f} "
            f"{r['decode_us']:>7.1f} {r['decode_us'] / ref['decode_us']:>6.2f}"
        )
    if args.out:
        out = {
            "command": "python bench/bench_chunks.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())
        }
        out.update(index=args.index, entries=int(gaps.size), current=[current, GAP_CHUNK], rows=rows)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
