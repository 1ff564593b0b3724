"""Index build bounds, measured side by side in one run.

    python bench/bench_index.py [--sae checkpoints/smollm2-135m-k32] [--tokens 8192] [--rss-sizes 1,4,16]

1. Throughput: the full build (prefill to the deepest SAE layer + K taps + SAE encode + segment writes +
   BM25) against a bare forward pass to the same layer over the same chunks (same overlap). Goal >= 0.90.
2. Size: bytes per posting all-in (everything under the index folder, BM25 included) and index bytes per
   token against the KV cache SmolLM2 would hold for the same tokens (30 layers x K,V x 3 heads x 64 x 2 B).
3. Memory: peak RSS of `s3-index build` in a fresh process over 1x, 4x, 16x the corpus (goal: within 10%).
Text: the Paul Graham essays (evaluation text may be indexed; it is never trained on). Writes bench/out/index.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from s3attn.evaluation.tasks import paul_graham_text
from s3attn.index_builder.build import run_prefill
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.pipeline import index_attrs, rebuild_bm25
from s3attn.index_builder.prefill import plan_chunks
from s3attn.models.taps import forward_to_layer
from s3attn.saes.stack import default_release, load_stack, resolve_release

OUT = Path(__file__).parent / "out"


def kv_bytes_per_token(geom, bytes_per_value: int = 2) -> int:
    return geom.num_layers * 2 * geom.num_kv_heads * geom.head_dim * bytes_per_value


def throughput(release: Path, tokens: int, chunk: int, overlap: int, work: Path) -> dict:
    import torch

    release, rel_cfg, layers = resolve_release(str(release), None)
    loaded, saes, geom = load_stack(release, rel_cfg, layers, None)
    text = paul_graham_text()
    ids = loaded.tokenizer(text[: tokens * 6], add_special_tokens=False)["input_ids"][:tokens]
    corpus = work / "corpus"
    corpus.mkdir()
    (corpus / "doc.txt").write_text(loaded.tokenizer.decode(ids))
    from s3attn.corpus import Corpus

    docs = list(Corpus(corpus))
    n_tok = len(loaded.tokenizer(docs[0].read_text(), add_special_tokens=False)["input_ids"])
    plan = plan_chunks(n_tok, chunk, overlap)
    all_ids = torch.tensor(loaded.tokenizer(docs[0].read_text(), add_special_tokens=False)["input_ids"])
    forward_to_layer(loaded.model, all_ids[None, :chunk], max(layers), sites=("k",))  # warm-up
    t = time.perf_counter()
    for ctx_start, _start, end in plan:
        forward_to_layer(loaded.model, all_ids[None, ctx_start:end], max(layers), sites=("k",))
    bare = time.perf_counter() - t
    attrs = index_attrs((loaded, saes, geom), release, rel_cfg, layers, chunk=chunk, overlap=overlap)
    t = time.perf_counter()
    with IndexWriter.create(work / "idx", attrs) as store:
        run_prefill(
            loaded.model,
            saes,
            loaded.tokenizer,
            docs,
            store,
            chunk=chunk,
            overlap=overlap,
            segment_tokens=65536,
            progress=False,
        )
        postings_s = time.perf_counter() - t
        rebuild_bm25(store, loaded.tokenizer, passage_tokens=128, stride=64)
        build = time.perf_counter() - t
        info = store.info()
    total_bytes = sum(f.stat().st_size for f in (work / "idx").rglob("*") if f.is_file())
    return {
        "tokens": n_tok,
        "layers": layers,
        "chunk": chunk,
        "overlap": overlap,
        "bare_forward_s": bare,
        "postings_build_s": postings_s,
        "bm25_s": build - postings_s,
        "build_s": build,
        "ratio_postings_build_over_bare_throughput": bare / postings_s,
        "ratio_build_over_bare_throughput": bare / build,
        "postings": info["postings"],
        "bytes_all_in": total_bytes,
        "bytes_per_posting_all_in": total_bytes / info["postings"],
        "index_bytes_per_token": total_bytes / n_tok,
        "kv_cache_bytes_per_token_bf16": kv_bytes_per_token(geom),
        "kv_over_index": kv_bytes_per_token(geom) / (total_bytes / n_tok),
    }


def peak_rss(release: Path, corpus: Path, out: Path, segment_tokens: int) -> float:
    code = (
        "import resource, subprocess, sys\n"
        f"r = subprocess.run([sys.executable, '-m', 's3attn.index_builder.cli', 'build', {str(corpus)!r}, "
        f"'--out', {str(out)!r}, '--sae', {str(release)!r}, '--no-progress', '--merge-tier', '0', "
        f"'--segment-tokens', '{segment_tokens}'], capture_output=True)\n"
        "assert r.returncode == 0, r.stderr.decode()[-2000:]\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024  # MiB


def _print_throughput(res: dict) -> None:
    print(
        f"posting-list build (prefill + K taps + SAE encode + segment writes): "
        f"{res['tokens'] / res['postings_build_s']:.0f} tok/s; ratio to bare = "
        f"{res['ratio_postings_build_over_bare_throughput']:.3f} (goal >= 0.90); BM25 adds {res['bm25_s']:.1f} s"
    )
    print(
        f"bare forward: {res['tokens'] / res['bare_forward_s']:.0f} tok/s; whole build with BM25: "
        f"{res['tokens'] / res['build_s']:.0f} tok/s; ratio build/bare = "
        f"{res['ratio_build_over_bare_throughput']:.3f} (goal >= 0.90)"
    )
    print(
        f"size: {res['bytes_per_posting_all_in']:.2f} bytes/posting all-in (goal <= 2.5); "
        f"{res['index_bytes_per_token']:.0f} B/token vs KV cache {res['kv_cache_bytes_per_token_bf16']} "
        f"B/token (bf16): KV/index = {res['kv_over_index']:.1f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default=None)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--rss-base-tokens", type=int, default=4096)
    ap.add_argument("--rss-sizes", default="1,4,16")
    ap.add_argument(
        "--rss-segment-tokens",
        type=int,
        default=4096,
        help="segment size of the RSS runs: the build holds at most this many tokens of codes in RAM",
    )
    ap.add_argument("--skip-throughput", action="store_true", help="only the RSS runs")
    args = ap.parse_args()
    release = Path(args.sae) if args.sae else default_release()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res = {} if args.skip_throughput else throughput(release, args.tokens, args.chunk, args.overlap, work)
        if res:
            _print_throughput(res)
        text = paul_graham_text()
        words = text.split()
        base_words = int(args.rss_base_tokens * 0.75)
        rss = {}
        for mult in [int(x) for x in args.rss_sizes.split(",")]:
            corpus = work / f"rss{mult}"
            corpus.mkdir()
            n = base_words * mult
            for i in range(0, n, base_words):  # documents of base size, cycling the essays
                start = i % max(1, len(words) - base_words)
                (corpus / f"doc{i // base_words:04d}.txt").write_text(
                    " ".join(words[start : start + base_words])
                )
            rss[mult] = peak_rss(release, corpus, work / f"idx{mult}", args.rss_segment_tokens)
            print(f"peak RSS, corpus {mult}x (~{args.rss_base_tokens * mult} tokens): {rss[mult]:.0f} MiB")
        vals = np.array(list(rss.values()))
        res["peak_rss_mib"] = rss
        res["rss_max_over_min"] = float(vals.max() / vals.min())
        print(f"peak RSS spread: max/min = {res['rss_max_over_min']:.3f} (goal <= 1.10)")
    (OUT / "index.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
