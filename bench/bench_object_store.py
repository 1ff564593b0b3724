"""Retrieval from an index on object storage against the same index on local disk, side by side.

    python bench/bench_object_store.py [--docs 24] [--words 400] [--questions 30] [--out JSON]

A tiny random Llama and a random SAE release (tests/conftest.py's helpers; no download) index ``--docs``
documents of tiny-vocabulary words into a local folder; the same files are uploaded to a moto S3 server on
a loopback port (``s3://bench/idx``). Both are opened as retrievers sharing one loaded model; each question
is then asked of the local index and of the URL in turn (modes s3 and bm25, retrieval only), after one
warm-up question each. Prints the p50 / p90 latency of each and their ratio, and the time to open each;
writes ``docs/results/bench/object-store.json``. Spans are checked to be equal. The loopback server has no
network latency: a remote store adds its round trips (the URL path makes one GET per chunk a question
touches, read through zarr-python's FsspecStore; the local path reads chunk files directly).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model and release helpers


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")


def start_s3() -> object:
    """A moto S3 server on a free loopback port, the environment pointing at it, bucket ``bench``."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    return srv


def build(root: Path, docs: int, words: int) -> tuple[Path, dict]:
    from conftest import filler_words, make_tiny_release, save_tiny_model_dir

    from s3attn.config import StackOptions
    from s3attn.index_builder.config import BuildConfig
    from s3attn.index_builder.pipeline import build_index

    model = save_tiny_model_dir(root / "model")
    release = make_tiny_release(root / "release", model)
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(docs):
        (corpus / f"d{i:03d}.txt").write_text(filler_words(words, i) + "\n")
    stack = StackOptions(sae=str(release), model=str(model))
    cfg = BuildConfig(out=str(root / "index"), stack=stack, chunk=64, overlap=8, segment_tokens=2048)
    cfg.progress = False
    build_index(str(corpus), cfg)
    info = {"model": "tiny random Llama (tests/conftest.py save_tiny_model_dir: 4 layers, vocab 256)"}
    info["sae"] = "random Top-k SAE release at layers 1, 3 (make_tiny_release: 64 latents, k=4)"
    return root / "index", info


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(ret_local, ret_remote, questions: list[str], mode: str, budget: int) -> dict:
    """p50 / p90 of both retrievers on ``questions`` (asked of each in turn), spans checked equal."""
    times: dict[str, list[float]] = {"local": [], "object_store": []}
    for r in (ret_local, ret_remote):  # warm-up: model, encoder, BM25 load (a local copy on the URL)
        r.retrieve(questions[0], mode, budget)
    for q in questions:
        t_l, a = timed(lambda q=q: ret_local.retrieve(q, mode, budget))
        t_r, b = timed(lambda q=q: ret_remote.retrieve(q, mode, budget))
        assert [(s.start, s.end) for s in a] == [(s.start, s.end) for s in b], (mode, q)
        times["local"].append(t_l)
        times["object_store"].append(t_r)
    p50 = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    p90 = {k: percentile(v, 0.9) * 1e3 for k, v in times.items()}
    ratio = p50["object_store"] / p50["local"]
    print(
        f"{mode:>5}: p50 local {p50['local']:.1f} ms, object store {p50['object_store']:.1f} ms (x{ratio:.2f}); "
        f"p90 {p90['local']:.1f} / {p90['object_store']:.1f} ms"
    )
    return {
        "p50_ms": {k: round(v, 2) for k, v in p50.items()},
        "p90_ms": {k: round(v, 2) for k, v in p90.items()},
        "ratio_p50_object_store_over_local": round(ratio, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--words", type=int, default=400)
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "docs/results/bench/object-store.json"))
    args = ap.parse_args()
    srv = start_s3()
    from _tiling import scan_config
    from conftest import TINY_WORDS

    from s3attn.index_builder.reader import IndexReader
    from s3attn.retrieval.retriever import Retriever
    from s3attn.storage import Location

    cfg = scan_config()  # time the reads, not a model pass

    with tempfile.TemporaryDirectory(prefix="bench-objstore-") as tmp:
        local, info = build(Path(tmp), args.docs, args.words)
        url = "s3://bench/idx"
        remote_loc = Location(url)
        remote_loc.fs.put(str(local), remote_loc.fs_path, recursive=True)  # the same files
        open_local, ret_local = timed(lambda: Retriever(local, cfg=cfg))
        stack = (ret_local.loaded, ret_local.saes, ret_local.geom)
        open_remote, ret_remote = timed(lambda: Retriever(url, cfg=cfg, stack=stack))
        with IndexReader.open(local) as st:
            sizes = {"tokens": st.num_tokens, "documents": st.num_docs, "segments": len(st.segments)}
        rng = random.Random(0)
        questions = [" ".join(rng.choice(TINY_WORDS) for _ in range(6)) for _ in range(args.questions)]
        results = {
            mode: measure(ret_local, ret_remote, questions, mode, args.budget) for mode in ("s3", "bm25")
        }
        print(f" open: local {open_local * 1e3:.0f} ms, object store {open_remote * 1e3:.0f} ms")
        ret_remote.store.close()
        ret_local.store.close()
    srv.stop()
    report = {
        "what": "retrieval latency (Retriever.retrieve, no generation), same index on local disk and on S3",
        "object_store": "moto ThreadedMotoServer (S3 API) on a loopback port; no network latency",
        **info,
        "index": sizes,
        "questions": args.questions,
        "budget": args.budget,
        "open_ms": {"local": round(open_local * 1e3, 1), "object_store": round(open_remote * 1e3, 1)},
        "modes": results,
        "cpu_threads": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
