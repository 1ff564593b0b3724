"""Index build bounds, measured side by side in one run.

    python bench/bench_index.py [--sae checkpoints/smollm2-135m-k32] [--tokens 16384] [--reps 1] [--rss-sizes 1,4,16]

1. Throughput, side by side over the same chunks (same overlap), ``--reps`` rounds with the order rotating:
   the posting-list build (prefill to the deepest SAE layer + K taps + SAE encode + segment writes; BM25
   timed apart) with the model in the auto precision (``resolve_dtype("auto")``: bf16 on a CPU with
   AVX512-BF16/AMX or a bf16 GPU, else fp32), the same build in fp32, and a bare forward pass to the same
   layer in each precision. Goals: auto build / fp32 build >= 2.5x where auto is bf16; auto build / bare
   forward in the same precision >= 0.90.
2. Size: bytes per posting all-in (everything under the index folder, BM25 included) and index bytes per
   token against the KV cache SmolLM2 would hold for the same tokens (30 layers x K,V x 3 heads x 64 x 2 B).
3. Memory: peak RSS of `s3-index build` in a fresh process over 1x, 4x, 16x the corpus (goal: within 10%).
Text: the Paul Graham essays (evaluation text may be indexed; it is never trained on). Writes bench/out/index.json
(``--out``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

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


def auto_dtype() -> torch.dtype:
    """The precision ``--dtype auto`` loads the model in here (bf16 where the CPU or GPU computes it)."""
    from s3attn.models.precision import resolve_dtype

    return resolve_dtype("auto")


def write_corpus(tokenizer, tokens: int, work: Path) -> tuple[list, torch.Tensor]:
    """A one-document corpus of ``tokens`` tokens of the essays, and its token ids as the build sees them."""
    from s3attn.corpus import Corpus

    ids = tokenizer(paul_graham_text()[: tokens * 6], add_special_tokens=False)["input_ids"][:tokens]
    corpus = work / "corpus"
    corpus.mkdir()
    (corpus / "doc.txt").write_text(tokenizer.decode(ids))
    docs = list(Corpus(corpus))
    return docs, torch.tensor(tokenizer(docs[0].read_text(), add_special_tokens=False)["input_ids"])


def time_bare(model, ids: torch.Tensor, plan, last_layer: int) -> tuple[float, float]:
    """Wall and CPU seconds of a forward to ``last_layer`` (stopping at its K tap) over the chunks of ``plan``."""
    t, c = time.perf_counter(), time.process_time()
    for ctx_start, _start, end in plan:
        forward_to_layer(model, ids[None, ctx_start:end], last_layer, sites=("k",))
    return time.perf_counter() - t, time.process_time() - c


def time_build(stack, release: Path, rel_cfg: dict, layers, docs, out: Path, args) -> dict:
    """One posting-list build (+ BM25) of ``docs`` into ``out``: wall (and CPU) seconds and the index's size."""
    loaded, saes, _ = stack
    attrs = index_attrs(stack, release, rel_cfg, layers, chunk=args.chunk, overlap=args.overlap)
    t, c = time.perf_counter(), time.process_time()
    with IndexWriter.create(out, attrs) as store:
        run_prefill(
            loaded.model,
            saes,
            loaded.tokenizer,
            docs,
            store,
            chunk=args.chunk,
            overlap=args.overlap,
            segment_tokens=65536,
            progress=False,
        )
        postings_s, postings_cpu_s = time.perf_counter() - t, time.process_time() - c
        rebuild_bm25(store, loaded.tokenizer, passage_tokens=128, stride=64)
        build_s = time.perf_counter() - t
        postings = int(store.info()["postings"])
    total_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {
        "postings_build_s": postings_s,
        "postings_build_cpu_s": postings_cpu_s,
        "build_s": build_s,
        "postings": postings,
        "bytes_all_in": total_bytes,
    }


RUNS = ("build_auto", "build_fp32", "bare_auto", "bare_fp32")


def throughput(release: Path, args: argparse.Namespace, work: Path) -> dict:
    """Side by side, ``--reps`` rounds (the order rotating each round; medians kept): the build in the auto
    precision, the build in fp32, a bare forward in the auto precision and one in fp32, over the same chunks."""
    release, rel_cfg, layers = resolve_release(str(release), None)
    dt = auto_dtype()
    stacks = {"fp32": load_stack(release, rel_cfg, layers, None)}
    stacks["auto"] = (
        stacks["fp32"] if dt == torch.float32 else load_stack(release, rel_cfg, layers, None, dtype=dt)
    )
    tokenizer = stacks["fp32"].loaded.tokenizer
    docs, ids = write_corpus(tokenizer, args.tokens, work)
    plan = plan_chunks(len(ids), args.chunk, args.overlap)
    for stack in stacks.values():  # warm-up
        forward_to_layer(stack.loaded.model, ids[None, : args.chunk], max(layers), sites=("k",))
    secs: dict[str, list[float]] = {r: [] for r in RUNS}
    cpu: dict[str, list[float]] = {r: [] for r in RUNS}
    builds: dict[str, dict] = {}
    for rep in range(args.reps):
        for run in RUNS[rep % len(RUNS) :] + RUNS[: rep % len(RUNS)]:
            kind, prec = run.split("_")
            if kind == "bare":
                wall, cpu_s = time_bare(stacks[prec].loaded.model, ids, plan, max(layers))
                secs[run].append(wall)
                cpu[run].append(cpu_s)
                continue
            out = work / f"idx-{run}-{rep}"
            b = time_build(stacks[prec], release, rel_cfg, layers, docs, out, args)
            shutil.rmtree(out)
            secs[run].append(b["postings_build_s"])
            cpu[run].append(b["postings_build_cpu_s"])
            builds.setdefault(run, {"bm25_s": [], **b})["bm25_s"].append(b["build_s"] - b["postings_build_s"])
    res = summarise(len(ids), layers, dt, secs, builds, stacks["auto"].geom, args)
    mc = {run: statistics.median(v) for run, v in cpu.items()}
    res["cpu_seconds"] = cpu
    res["cpu_ratio_auto_build_over_fp32_build"] = mc["build_fp32"] / mc["build_auto"]
    res["cpu_ratio_auto_build_over_bare_auto"] = mc["bare_auto"] / mc["build_auto"]
    res["cpu_ratio_auto_bare_over_fp32_bare"] = mc["bare_fp32"] / mc["bare_auto"]
    return res


def summarise(n_tok: int, layers, dt, secs: dict, builds: dict, geom, args) -> dict:
    """The figures of the throughput runs (wall-clock medians) and the auto build's index size."""
    med = {run: statistics.median(v) for run, v in secs.items()}
    bm25 = {run: statistics.median(b["bm25_s"]) for run, b in builds.items()}
    auto = builds["build_auto"]
    return {
        "tokens": n_tok,
        "layers": layers,
        "chunk": args.chunk,
        "overlap": args.overlap,
        "reps": args.reps,
        "threads": torch.get_num_threads(),
        "dtype_auto": str(dt).removeprefix("torch."),
        "seconds": secs,
        "tokens_per_s": {run: n_tok / s for run, s in med.items()},
        "bm25_s": bm25,
        "ratio_auto_build_over_fp32_build": med["build_fp32"] / med["build_auto"],
        "ratio_auto_build_over_bare_auto": med["bare_auto"] / med["build_auto"],
        "ratio_auto_build_bm25_over_bare_auto": med["bare_auto"] / (med["build_auto"] + bm25["build_auto"]),
        "ratio_fp32_build_over_bare_fp32": med["bare_fp32"] / med["build_fp32"],
        "ratio_auto_bare_over_fp32_bare": med["bare_fp32"] / med["bare_auto"],
        "postings": auto["postings"],
        "bytes_all_in": auto["bytes_all_in"],
        "bytes_all_in_fp32_build": builds["build_fp32"]["bytes_all_in"],
        "bytes_per_posting_all_in": auto["bytes_all_in"] / auto["postings"],
        "index_bytes_per_token": auto["bytes_all_in"] / n_tok,
        "kv_cache_bytes_per_token_bf16": kv_bytes_per_token(geom),
        "kv_over_index": kv_bytes_per_token(geom) / (auto["bytes_all_in"] / n_tok),
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
    tps, dt = res["tokens_per_s"], res["dtype_auto"]
    print(
        f"{res['tokens']} tokens, {res['reps']} round(s) side by side, {res['threads']} threads; auto precision "
        f"here: {dt}. Posting-list build = prefill + K taps + SAE encode (fp32) + segment writes, no BM25"
    )
    print(
        f"tok/s: build {dt} {tps['build_auto']:.0f}, build float32 {tps['build_fp32']:.0f}, "
        f"bare forward {dt} {tps['bare_auto']:.0f}, bare forward float32 {tps['bare_fp32']:.0f}"
    )
    print(
        f"ratio build {dt} / build float32 = {res['ratio_auto_build_over_fp32_build']:.2f}x (goal >= 2.5); "
        f"bare {dt} / bare float32 = {res['ratio_auto_bare_over_fp32_bare']:.2f}x"
    )
    print(
        f"ratio build {dt} / bare forward {dt} = {res['ratio_auto_build_over_bare_auto']:.3f} (goal >= 0.90), "
        f"with BM25 ({res['bm25_s']['build_auto']:.1f} s) {res['ratio_auto_build_bm25_over_bare_auto']:.3f}; "
        f"float32 build / bare float32 = {res['ratio_fp32_build_over_bare_fp32']:.3f}"
    )
    print(
        f"by process CPU time (less sensitive to other jobs): build {dt} / build float32 = "
        f"{res['cpu_ratio_auto_build_over_fp32_build']:.2f}x, bare {dt} / bare float32 = "
        f"{res['cpu_ratio_auto_bare_over_fp32_bare']:.2f}x, build {dt} / bare {dt} = "
        f"{res['cpu_ratio_auto_build_over_bare_auto']:.3f}"
    )
    print(
        f"size ({dt} build): {res['bytes_per_posting_all_in']:.2f} bytes/posting all-in (goal <= 2.5); "
        f"{res['index_bytes_per_token']:.0f} B/token vs KV cache {res['kv_cache_bytes_per_token_bf16']} "
        f"B/token (bf16): KV/index = {res['kv_over_index']:.1f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default=None)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--reps", type=int, default=1, help="rounds of the four throughput runs (medians kept)")
    ap.add_argument("--out", default=str(OUT / "index.json"))
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
        res = {} if args.skip_throughput else throughput(release, args, work)
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
