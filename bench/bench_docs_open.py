"""Opening an index as its number of documents grows: the documents table in the segment attributes' JSON
(formats 1-3) against format 4's arrays, side by side in one run.

    nice -n 10 python bench/bench_docs_open.py --out docs/results/bench/docs-open.json [--docs 8192,65536,262144]

Per count D: an index of one segment with D documents of 4 tokens (random codes, one (layer, KV head), k 4:
the postings do not matter here; paths like ``corpus/part-012/document-0012345.txt``, sha256 content hashes)
is written by the current writer (format 4); a copy of it (hard links) gets the same table written into its
segment attributes as format 3 did (its ``docs`` JSON, the three arrays removed, checksums and manifest
updated). Then, per copy, ``--repeats`` fresh processes each open the index (``IndexReader.open``) and build
what a ``Retriever`` holds, the generation's ``doc_table()``, and record the time that took, the anonymous
RSS it added with the table held, and the peak RSS it added (``VmHWM``). Prints the medians side by side and
writes ``--out`` (every figure).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _tiling import rss_mib

from s3attn.constants import INDEX_MANIFEST, INDEX_ROOT, SEGMENTS_DIR
from s3attn.evaluation.runtime import git_state
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.meta import SegmentAttrs
from s3attn.index_builder.reader import IndexReader
from s3attn.index_builder.schema import DOC_ARRAYS, DocRecord, SegmentData, segment_checksum
from s3attn.leases import manifest_copy

K, F, PER_DOC = 4, 64, 4
ATTRS = {
    "model_id": "bench/tiny",
    "sae_release": "bench",
    "layers": [0],
    "num_kv_heads": 1,
    "k": K,
    "num_latents": F,
    "head_dim": 16,
}


def build(path: Path, n_docs: int) -> None:
    """One segment of ``n_docs`` documents of ``PER_DOC`` tokens, written by the current writer (format 4)."""
    rng = np.random.default_rng(n_docs)
    n = n_docs * PER_DOC
    docs = [
        DocRecord(
            i,
            f"corpus/part-{i // 1000:03d}/document-{i:07d}.txt",
            hashlib.sha256(b"%d" % i).hexdigest(),
            i * PER_DOC,
            PER_DOC,
        )
        for i in range(n_docs)
    ]
    feats = np.argsort(rng.random((n, F)), axis=1)[:, :K]
    codes = {(0, 0): (feats, rng.gamma(2.0, 1.0, (n, K)).astype(np.float32))}
    with IndexWriter.create(path, ATTRS) as st:
        st.add_segment(SegmentData(rng.integers(0, 49152, n).astype(np.uint32), docs, 0, codes))


def as_format_3(src: Path, dst: Path) -> None:
    """A hard-linked copy of ``src`` whose segments keep their documents in their attributes, as format 3."""
    shutil.copytree(src, dst, copy_function=os.link)
    manifest = json.loads((src / INDEX_MANIFEST).read_text())
    with IndexReader.open(src) as st:
        for entry, raw in zip(st.segments, manifest["segments"], strict=True):
            seg = dst / INDEX_ROOT / SEGMENTS_DIR / entry.name
            meta = json.loads((seg / "zarr.json").read_text())
            attrs = SegmentAttrs.from_json(meta["attributes"])
            sums = {k: v for k, v in attrs.checksums.items() if k not in DOC_ARRAYS}
            old = SegmentAttrs(
                attrs.token_start, attrs.num_tokens, tuple(st._reader(entry).docs()), sums, format_version=3
            )
            (seg / "zarr.json").unlink()  # a hard link: write a new file, not into the shared one
            (seg / "zarr.json").write_text(json.dumps({**meta, "attributes": old.to_json()}))
            for name in DOC_ARRAYS:
                shutil.rmtree(seg / name)
            raw["checksum"] = segment_checksum(sums, entry.token_start, entry.num_tokens)
    manifest["format_version"] = 3
    for target in (dst / INDEX_MANIFEST, manifest_copy(dst, manifest["generation"])):
        target.unlink()
        target.write_text(json.dumps(manifest))


def measure(path: Path) -> dict:
    """Open ``path`` and build its doc_table in this process: seconds, anonymous and peak RSS added."""
    before = rss_mib()
    t = time.perf_counter()
    st = IndexReader.open(path)
    table = st.doc_table()
    seconds = time.perf_counter() - t
    after = rss_mib()
    assert len(table) > 0
    st.close()
    return {
        "seconds": seconds,
        "anon_mib": after["RssAnon"] - before["RssAnon"],
        "peak_mib": after["VmHWM"] - before["VmHWM"],
        "documents": len(table),
    }


def run_measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", default="8192,65536,262144", help="document counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per index")
    ap.add_argument("--work", default="runs/docs-open", help="the indexes (rebuilt every run)")
    ap.add_argument("--out", default="bench/out/docs-open.json")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    commit, dirty = git_state()
    res: dict = {"command": " ".join(["python", *sys.argv]), "commit": commit + ("+dirty" if dirty else "")}
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"{'docs':>8} {'JSON MB':>8} {'open ms v3':>10} {'v4':>8} {'ratio':>6} {'anon MiB v3':>11} {'v4':>6}"
        f" {'peak MiB v3':>11} {'v4':>6}"
    )
    for n_docs in (int(x) for x in args.docs.split(",")):
        v4, v3 = work / f"v4-{n_docs}", work / f"v3-{n_docs}"
        build(v4, n_docs)
        as_format_3(v4, v3)
        seg_json = next((v3 / INDEX_ROOT / SEGMENTS_DIR).glob("seg-*/zarr.json"))
        runs: dict[str, list[dict]] = {"v3": [], "v4": []}
        for _ in range(args.repeats):  # alternated, so neither format gets the quieter moments
            for name, path in (("v3", v3), ("v4", v4)):
                runs[name].append(run_measure(path))
        med = {
            f"{name}_{key}": statistics.median(r[key] for r in rs)
            for name, rs in runs.items()
            for key in ("seconds", "anon_mib", "peak_mib")
        }
        row = {"documents": n_docs, "attrs_json_bytes": seg_json.stat().st_size, **med, "runs": runs}
        res.setdefault("rows", []).append(row)
        print(
            f"{n_docs:8d} {row['attrs_json_bytes'] / 1e6:8.1f} {med['v3_seconds'] * 1e3:10.1f} "
            f"{med['v4_seconds'] * 1e3:8.1f} {med['v3_seconds'] / med['v4_seconds']:5.1f}x "
            f"{med['v3_anon_mib']:11.1f} {med['v4_anon_mib']:6.1f} {med['v3_peak_mib']:11.1f} "
            f"{med['v4_peak_mib']:6.1f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
