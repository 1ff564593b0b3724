"""Retrieval latency on a 1M-token index, and answering time against full-context answering.

    python bench/bench_retrieval.py [--sae checkpoints/smollm2-135m-k32] [--index-tokens 1000000] [--doc-tokens 32768]

1. Latency: real codes of ``--seed-tokens`` tokens of text (SmolLM2 + the release's SAEs) are tiled, in
   shuffled blocks, to ``--index-tokens`` tokens (so feature document frequencies are the real ones), written as
   an index with BM25; then ``Retriever.retrieve`` (question forward pass + postings + scoring + spans, no
   generation) is timed on 20 questions, each asked in every mode with the modes rotated per question, after a
   warm-up question outside the timed set: p50 / p90 (goal: p50 <= 100 ms), and per question the posting
   lists and postings read, the lists skipped for the posting budget, and the decoded-chunk cache hits / misses;
   the first question on a freshly opened index is reported apart ("cold"). The index's files are read once
   before (so they are in the OS page cache, as on a serving machine). Then, side by side: the question
   forward (the ``forward_codes`` stage) of the fp32 model, of the fp32 model with fp16-packed weights
   (``half_weights``) and of the model loaded in bf16 (no packing), with the share of SAE top-k features
   each shares with fp32's; and hybrid retrieval under each fusion. ``--tiled-index DIR`` keeps the tiled
   index there (reused when present). ``--question-only``: only that question forward comparison, on the
   ``--seed-tokens`` index (no tiling, latency or answering).
2. Answering: a ``--doc-tokens`` document is indexed (build time reported apart), then the same questions are
   answered with full context (middle-truncated to the window) and with S3-Hybrid at a 2k budget, alternating;
   prints the median time ratio hybrid/full (goal <= 0.25). Writes bench/out/retrieval.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _tiling import (
    MODES,
    QUESTIONS,
    doc_folder,
    scan_config,
    seed_index,
    stage_times,
    tiled_index,
    time_modes,
    warm_page_cache,
)

from s3attn.index_builder.config import BuildConfig
from s3attn.models.loading import load_model
from s3attn.retrieval.retriever import Retriever
from s3attn.saes.stack import default_release, load_stack, model_name_for, resolve_release


def question_encoders(retriever: Retriever, model_bf16) -> dict:
    """The question forward + SAE codes three ways: the fp32 model as it is (the reference), the fp32 model
    with fp16-packed weights (``QuestionConfig.half_weights``), and the model loaded in bf16 (no packing)."""
    from s3attn.retrieval.question import QuestionEncoder

    r, site = retriever, retriever.cfg.question.site
    kv = r.geom.kv_head_of_query
    return {
        "fp32": QuestionEncoder(r.model, r.saes, kv, site, half_weights=False),
        "fp16_packed": QuestionEncoder(r.model, r.saes, kv, site, half_weights=True),
        "bf16": QuestionEncoder(model_bf16, r.saes, kv, site, half_weights=False),
    }


def topk_shared(a: dict, b: dict) -> list[float]:
    """Per question row and (layer, KV head): |top-k of a ∩ top-k of b| / k."""
    out: list[float] = []
    for key, (idx, _) in a.items():
        out += [len(set(x) & set(y)) / len(x) for x, y in zip(idx.tolist(), b[key][0].tolist())]
    return out


def forward_precision(retriever: Retriever, encoders: dict, passes: int = 1) -> dict:
    """The question forward + SAE codes of each encoder, side by side (alternating question by question, the
    order rotating): p50 ms of each, and the share of top-k features each shares with fp32's (and bf16 with
    fp16-packed)."""
    from s3attn.retrieval.question import question_token_range

    r, names = retriever, list(encoders)
    times: dict[str, list[float]] = {n: [] for n in names}
    shared: dict[str, list[float]] = {f"{n}_vs_fp32": [] for n in names if n != "fp32"}
    shared["bf16_vs_fp16_packed"] = []
    for i, q in enumerate(QUESTIONS * passes):
        prompt = r.prompt("", q)
        ids = torch.tensor(r.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        span = question_token_range(r.tokenizer, prompt, q)
        codes = {}
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t = time.perf_counter()
            codes[name] = encoders[name].codes(ids, span)
            times[name].append(time.perf_counter() - t)
        for pair in shared:
            a, b = pair.split("_vs_")
            shared[pair] += topk_shared(codes[a], codes[b])
    p50 = {n: 1000 * statistics.median(v) for n, v in times.items()}
    return {
        "questions": len(QUESTIONS) * passes,
        "p50_ms": p50,
        "ratio_fp16_packed_over_fp32": p50["fp16_packed"] / p50["fp32"],
        "ratio_bf16_over_fp16_packed": p50["bf16"] / p50["fp16_packed"],
        "faster": min(("bf16", "fp16_packed"), key=p50.get),
        "topk_shared": {k: float(np.mean(v)) for k, v in shared.items()},
    }


def print_forward_precision(fp: dict, default_half: bool) -> None:
    ms, sh = fp["p50_ms"], fp["topk_shared"]
    print(
        f"question forward + codes, side by side over {fp['questions']} questions, p50: fp32 weights "
        f"{ms['fp32']:.1f} ms, fp16-packed (fp32 model) {ms['fp16_packed']:.1f} ms, bf16 model {ms['bf16']:.1f} ms; "
        f"bf16 / fp16-packed = {fp['ratio_bf16_over_fp16_packed']:.2f}x: faster is {fp['faster']} "
        f"(library default: {'fp16-packed' if default_half else 'fp32'} on an fp32 model)"
    )
    print(
        f"top-k features shared: fp16-packed vs fp32 {sh['fp16_packed_vs_fp32']:.4f}, bf16 vs fp32 "
        f"{sh['bf16_vs_fp32']:.4f}, bf16 vs fp16-packed {sh['bf16_vs_fp16_packed']:.4f}"
    )


def fusion_times(retriever: Retriever) -> dict[str, float]:
    """p50 ms of a hybrid retrieval per fusion, the fusions alternating question by question (side by side,
    so that load on the machine falls on all of them alike)."""
    from dataclasses import replace

    from s3attn.retrieval.fusion import FUSIONS

    base = retriever.cfg
    times: dict[str, list[float]] = {f: [] for f in FUSIONS}
    try:
        for q in QUESTIONS:
            for f in FUSIONS:
                retriever.cfg = replace(base, hybrid=replace(base.hybrid, fusion=f))
                t = time.perf_counter()
                retriever.retrieve(q, "hybrid", 2048)
                times[f].append(time.perf_counter() - t)
    finally:
        retriever.cfg = base
    return {f: 1000 * statistics.median(v) for f, v in times.items()}


def answer_ratio(stack, release: Path, work: Path, args: argparse.Namespace, res: dict) -> None:
    """Index a ``--doc-tokens`` document once, then answer with full context and with S3-Hybrid @2048."""
    from s3attn.index_builder.pipeline import build_index

    loaded = stack[0]
    doc = doc_folder(work, "doc", loaded.tokenizer, args.doc_tokens)
    t = time.perf_counter()
    build_index(
        str(doc), BuildConfig(out=str(work / "doc_idx"), sae=str(release), progress=False), stack=stack
    )
    res["doc_tokens"] = args.doc_tokens
    res["doc_index_build_s"] = time.perf_counter() - t
    print(f"index build of a {args.doc_tokens}-token document: {res['doc_index_build_s']:.1f} s (once)")
    r = Retriever(work / "doc_idx", cfg=scan_config(), stack=stack)
    window = int(getattr(loaded.model.config, "max_position_embeddings", 8192))
    full_budget = window - 256
    full, hyb = [], []
    for q in QUESTIONS[: args.answer_questions]:
        full.append(r.answer(q, "full", full_budget, max_new_tokens=32).seconds)
        hyb.append(r.answer(q, "hybrid", 2048, max_new_tokens=32).seconds)
    res["answer_full_s"], res["answer_hybrid_s"] = full, hyb
    res["answer_ratio_hybrid_over_full"] = statistics.median(hyb) / statistics.median(full)
    print(
        f"answer over {args.doc_tokens} tokens: full context (middle-truncated to {full_budget}) "
        f"{statistics.median(full):.1f} s, S3-Hybrid @2048 {statistics.median(hyb):.1f} s: ratio "
        f"{res['answer_ratio_hybrid_over_full']:.3f} (goal <= 0.25)"
    )


def latency(r: Retriever, res: dict) -> None:
    """Cold first question, then p50 / p90 of each mode, then s3 by stage."""
    t = time.perf_counter()
    r.retrieve(QUESTIONS[-1], "hybrid", 2048)
    res["retrieve_hybrid_cold_ms"] = 1000 * (time.perf_counter() - t)
    print(
        f"retrieve hybrid, first question on a freshly opened index (its {res['page_cache_warmed_bytes'] >> 20} "
        f"MiB of files read once into the OS page cache before; offsets, BM25, the fp16 weights, the prompt "
        f"prefix, every chunk decoded): {res['retrieve_hybrid_cold_ms']:.1f} ms"
    )
    secs, stats = time_modes(r)
    res["timed_questions"], res["modes_rotated"] = len(QUESTIONS), True
    for mode in MODES:
        ts, st = secs[mode], {k: sum(v) for k, v in stats[mode].items()}
        res[f"retrieve_{mode}_p50_ms"] = 1000 * statistics.median(ts)
        res[f"retrieve_{mode}_p90_ms"] = 1000 * float(np.percentile(ts, 90))
        res[f"retrieve_{mode}_reads"] = {k: v / len(ts) for k, v in st.items()}  # per question
        print(
            f"retrieve {mode:>6} on {r.store.num_tokens} tokens: p50 {res[f'retrieve_{mode}_p50_ms']:.1f} ms, "
            f"p90 {res[f'retrieve_{mode}_p90_ms']:.1f} ms (goal p50 <= 100 ms); per question: "
            f"{st['lists'] / len(ts):.0f} posting lists, {st['postings'] / len(ts):.0f} postings, "
            f"{st['lists_skipped'] / len(ts):.0f} lists skipped for the posting budget, chunk cache "
            f"{st['chunk_hits'] / len(ts):.0f} hits / {st['chunk_misses'] / len(ts):.0f} misses"
        )
    res["s3_stage_p50_ms"] = stage_times(r)
    print(
        "retrieve s3 by stage, p50 ms: "
        + ", ".join(f"{k} {v:.1f}" for k, v in res["s3_stage_p50_ms"].items())
    )


def open_index(stack, release, layers, work: Path, args: argparse.Namespace, res: dict) -> Path:
    """The index to time on: the small seed index (``--question-only``), a kept tiled one, or a new tiled one."""
    t = time.perf_counter()
    if args.question_only:
        big = seed_index(stack, release, layers, work, args.seed_tokens)
        res["seed_index_build_s"] = time.perf_counter() - t
        return big
    kept = Path(args.tiled_index) if args.tiled_index else None
    if kept is not None and (kept / "manifest.json").is_file():
        return kept
    big = tiled_index(stack, release, layers, work, args.seed_tokens, args.index_tokens)
    if kept is not None:
        shutil.copytree(big, kept)
        big = kept
    res["tiled_index_build_s"] = time.perf_counter() - t
    return big


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default=None)
    ap.add_argument("--seed-tokens", type=int, default=16384)
    ap.add_argument("--index-tokens", type=int, default=1_000_000)
    ap.add_argument("--doc-tokens", type=int, default=32768)
    ap.add_argument("--answer-questions", type=int, default=3, help="0: latency only")
    ap.add_argument(
        "--tiled-index", default=None, help="keep the tiled index in this folder; reuse it if there"
    )
    ap.add_argument(
        "--question-only",
        action="store_true",
        help="only the question forward side by side (fp32 / fp16-packed / bf16), on an index of --seed-tokens",
    )
    ap.add_argument("--question-passes", type=int, default=1, help="times over the 20 questions")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "retrieval.json"))
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    release, rel_cfg, layers = resolve_release(args.sae or str(default_release()), None)
    stack = load_stack(release, rel_cfg, layers, None)
    model_bf16 = load_model(model_name_for(rel_cfg["model_id"]), dtype=torch.bfloat16).model
    res: dict = {"layers": layers, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        big = open_index(stack, release, layers, work, args, res)
        res["page_cache_warmed_bytes"] = warm_page_cache(big)
        r = Retriever(big, cfg=scan_config(), stack=stack)
        res["index_tokens"] = r.store.num_tokens
        if not args.question_only:
            latency(r, res)
        fp = forward_precision(r, question_encoders(r, model_bf16), args.question_passes)
        res["question_forward_by_precision"] = fp
        print_forward_precision(fp, r.cfg.question.half_weights)
        if not args.question_only:
            res["hybrid_p50_ms_by_fusion"] = fusion_times(r)
            by, default = res["hybrid_p50_ms_by_fusion"], r.cfg.hybrid.fusion
            print(
                "retrieve hybrid by fusion, side by side, p50 ms: "
                + ", ".join(
                    f"{k} {v:.1f} ({v / by[default]:.2f}x {default}, the default)" for k, v in by.items()
                )
            )
        if args.answer_questions > 0 and not args.question_only:
            answer_ratio(stack, release, work, args, res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
