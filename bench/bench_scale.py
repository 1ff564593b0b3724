"""Retrieval as the index grows: indexes of 1M, 4M and 16M tokens, measured side by side in one run.

    nice -n 10 python bench/bench_scale.py --work runs/scale --out docs/results/bench/scale.json [--sizes 1M,4M,16M]

1. Seed: a real index (SmolLM2 + the release's SAEs) of ``--seed-blocks`` 2048-token blocks of text that does
   not repeat (``evaluation.tasks.long_text``: the essays, then the DROP passages); the number of distinct
   blocks is recorded. Kept in ``--work`` and reused (prefilling runs at a few hundred tokens/s here).
2. Tiling: segments of ``--segment-tokens`` (4M: what the default build, 64k-token segments merged 8 at a
   time, leaves at these sizes), one document per seed block. The ``--base-tokens`` (1M) segment is a random
   draw of the seed's blocks (``add_segment``), a longer one copies of it merged into one; an index is copies
   of its segments (``IndexWriter.absorb``: postings are segment-relative), then BM25: 1M = the base segment,
   4M = one 4M segment, 16M = four. With ``--segment-tokens 16M`` every size is one segment, as after
   ``s3-index merge --all`` (the merge streams batches of lists, so a 16M-token segment fits this machine;
   give it its own ``--work``). Built once into ``--work``, reused while its ``.done.json`` matches.
3. Memory: per size, a fresh process opens the ``Retriever``, reads the index's files once (OS page cache),
   asks a warm-up question untimed, then the 20 questions x bm25 / s3 / hybrid (modes rotated per question)
   and records its RSS after loading the model, after opening and at the end, its peak RSS (``VmHWM``: the
   process's own; ``ru_maxrss`` starts at the parent's) and the BM25 index it holds (bytes of the loaded
   object: passage table, bm25s score matrix and vocabulary, the texts if read; how many of them are
   memory-mapped; its size on disk apart).
4. Time: one process opens every size and asks each question of every size and mode before the next (both
   rotated per question), ``--passes`` times over the 20 questions, after a warm-up question per size: p50 /
   p90 per size and mode, per question the posting lists / postings read, lists skipped, decoded-chunk cache
   hits / misses; then s3 by stage per size. (Each memory process's own p50 is kept as ``p50_ms_alone``.)
Hybrid is fused by ``_tiling.SCAN_FUSION`` (adaptive): what is timed is the reading of the index.
Targets: hybrid p50 at 16M within 1.5x of its p50 at 1M; reader RSS growth from 1M to 16M not above the
growth of the BM25 index it holds. Writes ``--out`` (every per-question figure) and a plot next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _tiling import (
    BLOCK,
    LAYOUT,
    MODES,
    QUESTIONS,
    READ_KEYS,
    UNITS,
    WARMUP,
    absorb_copy,
    ask,
    attrs_for,
    bm25_memory,
    dense_codes,
    mark,
    marked,
    parse_size,
    peak_rss_mib,
    rss_mib,
    scan_config,
    seed_index,
    stage_times,
    template_records,
    tiled_segments,
    time_modes,
    warm_page_cache,
)
from tqdm.auto import tqdm

from s3attn.evaluation.runtime import git_state

ROOT = Path(__file__).resolve().parent.parent


def label(n: int) -> str:
    unit = next((u for u in ("G", "M", "k") if n % UNITS[u] == 0), None)
    return f"{n // UNITS[unit]}{unit}" if unit else str(n)


# ---- building ---------------------------------------------------------------------------------------------
def template(ctx: dict, length: int) -> Path:
    """One segment of ``length`` tiled tokens at ``work/tpl-<length>``: up to ``--base-tokens``, its own random
    draw of the seed's blocks (``add_segment``); longer, copies of the base template merged into one."""
    from s3attn.index_builder.indexer import IndexWriter

    tpl, base = ctx["work"] / f"tpl-{label(length)}", ctx["base"]
    copies = length // base if length > base and length % base == 0 else 0
    want = {"length": length, "seed": ctx["seed_want"], "rng": length, "base_copies": copies, **LAYOUT}
    if marked(tpl, want):
        return tpl
    shutil.rmtree(tpl, ignore_errors=True)
    src = template(ctx, base) if copies else None
    if not copies and "codes" not in ctx:
        ctx["toks"], ctx["codes"] = dense_codes(ctx["seed_idx"])
    t = time.perf_counter()
    with IndexWriter.create(tpl, attrs_for(*ctx["stack_args"])) as w:
        for _ in tqdm(range(copies), desc=f"template {label(length)}: base copies", unit="seg"):
            absorb_copy(w, src, ctx["work"] / "stage")
        if copies:
            w.merge(into_one=True)
        rng = np.random.default_rng(length)
        for seg in [] if copies else tiled_segments(ctx["toks"], ctx["codes"], rng, 0, length, length):
            w.add_segment(seg)
    mark(tpl, want, build_s=time.perf_counter() - t, peak_rss_mib=peak_rss_mib())
    print(f"template segment of {length} tokens written in {time.perf_counter() - t:.0f} s")
    return tpl


def build_size(ctx: dict, size: int, seg_tokens: int) -> dict:
    """The index of ``size`` tokens at ``work/idx-<size>`` (reused when finished), and its build record."""
    from s3attn.index_builder.indexer import IndexWriter
    from s3attn.index_builder.pipeline import rebuild_bm25

    idx = ctx["work"] / f"idx-{label(size)}"
    lengths = [seg_tokens] * (size // seg_tokens) + ([size % seg_tokens] if size % seg_tokens else [])
    want = {"size": size, "segments": lengths, "seed": ctx["seed_want"], **LAYOUT}
    rec = marked(idx, want)
    if rec is not None:
        return rec
    shutil.rmtree(idx, ignore_errors=True)
    templates = {n: template(ctx, n) for n in sorted(set(lengths))}
    t = time.perf_counter()
    with IndexWriter.create(idx, attrs_for(*ctx["stack_args"])) as big:
        for n in tqdm(lengths, desc=f"{label(size)}: segment copies", unit="seg"):
            absorb_copy(big, templates[n], ctx["work"] / "stage")
        copied = time.perf_counter() - t
        rebuild_bm25(big, ctx["tokenizer"], passage_tokens=128, stride=64)
        info = big.info()
    rec = mark(
        idx,
        want,
        copy_s=copied,
        bm25_s=time.perf_counter() - t - copied,
        tokens=info["tokens"],
        documents=info["documents"],
        segments=info["segments"],
        postings=info["postings"],
        bytes_on_disk=info["bytes_on_disk"],
        bm25_bytes_on_disk=sum(f.stat().st_size for f in (idx / "bm25").rglob("*") if f.is_file()),
    )
    print(f"index of {size} tokens: {len(lengths)} segments, BM25 in {rec['bm25_s']:.0f} s")
    return rec


# ---- measuring (one fresh process per size and round) ---------------------------------------------------
def measure(index: Path, sae: str | None) -> dict:
    """Everything one fresh reader process measures on ``index`` (see the module docstring, step 3)."""
    import torch

    from s3attn.retrieval.retriever import Retriever
    from s3attn.saes.stack import default_release, load_stack, resolve_release

    res: dict = {"rss_start_mib": rss_mib(), "threads": torch.get_num_threads()}
    release, rel_cfg, layers = resolve_release(sae or str(default_release()), None)
    stack = load_stack(release, rel_cfg, layers, None)
    res["rss_model_mib"] = rss_mib()
    t = time.perf_counter()
    r = Retriever(index, cfg=scan_config(), stack=stack)
    res["open_ms"] = 1000 * (time.perf_counter() - t)
    res["rss_open_mib"] = rss_mib()
    res["page_cache_warmed_bytes"] = warm_page_cache(index)
    res["tokens"], res["segments"] = r.store.num_tokens, len(r.store.segments)
    bar = tqdm(total=len(QUESTIONS), desc=f"{label(r.store.num_tokens)}: questions", unit="q")
    secs, reads = time_modes(r, bar.update)
    bar.close()
    res["seconds"], res["reads"] = secs, reads
    res["rss_after_questions_mib"] = rss_mib()
    res["s3_stage_p50_ms"] = stage_times(r)
    res["bm25_memory_bytes"] = bm25_memory(r.bm25)
    res["bm25_passages"] = len(r.bm25)
    res["rss_end_mib"] = rss_mib()
    res["chunk_cache_mib"] = r.store._chunks.cached_bytes / 2**20  # decoded-chunk LRU held (64 MiB at most)
    # this process's own peak (ru_maxrss starts at the parent's)
    res["peak_rss_mib"] = res["rss_end_mib"]["VmHWM"]
    res["ru_maxrss_mib"] = peak_rss_mib()
    return res


def side_by_side(indexes: list[Path], sae: str | None, passes: int) -> dict:
    """Every index open in one process, each question asked of every size and mode before the next question
    (sizes and modes rotated per question), so load on the machine falls on all sizes alike."""
    from s3attn.retrieval.retriever import Retriever
    from s3attn.saes.stack import default_release, load_stack, resolve_release

    stack = load_stack(*resolve_release(sae or str(default_release()), None), None)
    rs = {i.name.removeprefix("idx-"): Retriever(i, cfg=scan_config(), stack=stack) for i in indexes}
    for i in indexes:
        warm_page_cache(i)
    for r in rs.values():
        for mode in MODES:
            r.retrieve(WARMUP, mode, 2048)
    names = list(rs)
    secs = {n: {m: [] for m in MODES} for n in names}
    reads = {n: {m: {k: [] for k in READ_KEYS} for m in MODES} for n in names}
    for j in tqdm(range(passes * len(QUESTIONS)), desc="side by side: questions", unit="q"):
        q = QUESTIONS[j % len(QUESTIONS)]
        for n in names[j % len(names) :] + names[: j % len(names)]:
            for mode in MODES[j % 3 :] + MODES[: j % 3]:
                sec, got = ask(rs[n], q, mode)
                secs[n][mode].append(sec)
                for k in READ_KEYS:
                    reads[n][mode][k].append(got[k])
    stages = {n: stage_times(r) for n, r in rs.items()}
    return {"passes": passes, "seconds": secs, "reads": reads, "s3_stage_p50_ms": stages}


def in_child(args: list[str], sae: str | None, out: Path) -> dict:
    cmd = [sys.executable, __file__, *args, "--measure-out", str(out)]
    subprocess.run(cmd + (["--sae", sae] if sae else []), check=True)
    return json.loads(out.read_text())


# ---- summary ----------------------------------------------------------------------------------------------
def summarise(alone: dict, sbs: dict, size: str) -> dict:
    """One size: p50 / p90 per mode and reads per question (side by side), RSS and BM25 (its own process)."""
    out: dict = {"tokens": alone["tokens"], "segments": alone["segments"]}
    for mode in MODES:
        ms = [1000 * x for x in sbs["seconds"][size][mode]]
        reads = sbs["reads"][size][mode]
        out[mode] = {
            "p50_ms": statistics.median(ms),
            "p90_ms": float(np.percentile(ms, 90)),
            "p50_ms_alone": 1000 * statistics.median(alone["seconds"][mode]),
            "mean_per_question": {k: float(np.mean(v)) for k, v in reads.items()},
            "median_per_question": {k: float(np.median(v)) for k, v in reads.items()},
        }
    out["s3_stage_p50_ms"] = sbs["s3_stage_p50_ms"][size]
    out["peak_rss_mib"] = alone["peak_rss_mib"]
    out["rss_open_mib"] = alone["rss_open_mib"]["VmRSS"]
    out["rss_model_mib"] = alone["rss_model_mib"]["VmRSS"]
    out["rss_end_anon_mib"] = alone["rss_end_mib"]["RssAnon"]
    out["rss_end_file_mib"] = alone["rss_end_mib"]["RssFile"]
    out["chunk_cache_mib"] = alone["chunk_cache_mib"]
    out["bm25_memory_mib"] = alone["bm25_memory_bytes"]["total"] / 2**20
    out["bm25_memory_parts_mib"] = {k: v / 2**20 for k, v in alone["bm25_memory_bytes"].items()}
    return out


def ratios(summary: dict[str, dict]) -> dict:
    """Largest size against smallest: p50 per mode, and peak RSS growth against BM25 growth."""
    sizes = sorted(summary, key=lambda s: summary[s]["tokens"])
    lo, hi = summary[sizes[0]], summary[sizes[-1]]
    out = {"from": sizes[0], "to": sizes[-1]}
    for mode in MODES:
        out[f"{mode}_p50_ratio"] = hi[mode]["p50_ms"] / lo[mode]["p50_ms"]
    out["hybrid_target_met"] = out["hybrid_p50_ratio"] <= 1.5
    out["rss_growth_mib"] = hi["peak_rss_mib"] - lo["peak_rss_mib"]
    out["bm25_growth_mib"] = hi["bm25_memory_mib"] - lo["bm25_memory_mib"]
    out["rss_target_met"] = out["rss_growth_mib"] <= out["bm25_growth_mib"]
    return out


def print_table(summary: dict[str, dict], rat: dict) -> None:
    print(
        f"\n{'size':>5} {'segs':>4} {'mode':>6} {'p50 ms':>8} {'p90 ms':>8} {'postings/q':>10} {'lists/q':>7} "
        f"{'skipped':>7} {'chunk hit/miss':>14} {'RSS open':>8} {'RSS peak':>8} {'BM25 mem':>8}"
    )
    for size, s in summary.items():
        for mode in MODES:
            m, rd = s[mode], s[mode]["mean_per_question"]
            print(
                f"{size:>5} {s['segments']:>4} {mode:>6} {m['p50_ms']:8.1f} {m['p90_ms']:8.1f} "
                f"{rd['postings']:10.0f} {rd['lists']:7.0f} {rd['lists_skipped']:7.1f} "
                f"{rd['chunk_hits']:7.0f}/{rd['chunk_misses']:<6.0f} {s['rss_open_mib']:7.0f}M "
                f"{s['peak_rss_mib']:7.0f}M {s['bm25_memory_mib']:7.0f}M"
            )
        print(
            "      s3 by stage, p50 ms: " + ", ".join(f"{k} {v:.1f}" for k, v in s["s3_stage_p50_ms"].items())
        )
    a, b = rat["from"], rat["to"]
    print(
        f"\np50 {b}/{a}: hybrid {rat['hybrid_p50_ratio']:.2f}x (target <= 1.5: "
        f"{'met' if rat['hybrid_target_met'] else 'MISSED'}), s3 {rat['s3_p50_ratio']:.2f}x, "
        f"bm25 {rat['bm25_p50_ratio']:.2f}x\npeak RSS growth {a}->{b}: {rat['rss_growth_mib']:.0f} MiB against "
        f"BM25 growth {rat['bm25_growth_mib']:.0f} MiB (target: not above: "
        f"{'met' if rat['rss_target_met'] else 'MISSED'})"
    )


def plot(summary: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    toks = [s["tokens"] for s in summary.values()]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in MODES:
        ax1.plot(toks, [s[mode]["p50_ms"] for s in summary.values()], "o-", label=f"{mode} p50")
    ax1.set(xscale="log", xlabel="index tokens", ylabel="retrieval ms", title="retrieval p50")
    ax2.plot(toks, [s["peak_rss_mib"] for s in summary.values()], "o-", label="reader peak RSS")
    ax2.plot(toks, [s["rss_open_mib"] for s in summary.values()], "s--", label="RSS after opening")
    ax2.plot(
        toks, [s["bm25_memory_mib"] for s in summary.values()], "^-", label="BM25 index held (heap + mapped)"
    )
    ax2.set(xscale="log", xlabel="index tokens", ylabel="MiB", title="reader memory")
    for ax in (ax1, ax2):
        ax.set_xticks(toks, list(summary))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---- main -------------------------------------------------------------------------------------------------
def prepare(args: argparse.Namespace, sizes: list[int]) -> tuple[dict, dict]:
    """The seed index, then every size's index (built or reused); returns the seed's and the builds' records."""
    from s3attn.evaluation.tasks import long_text
    from s3attn.index_builder.reader import IndexReader
    from s3attn.saes.stack import default_release, load_stack, resolve_release

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    release, rel_cfg, layers = resolve_release(args.sae or str(default_release()), None)
    stack = load_stack(release, rel_cfg, layers, None)
    seed_tokens = args.seed_blocks * BLOCK + BLOCK // 2  # re-tokenizing the decoded text may lose a few
    t = time.perf_counter()
    seed = seed_index(stack, release, layers, work, seed_tokens, text=long_text, progress=True)
    ctx = {
        "work": work,
        "seed_idx": seed,
        "stack_args": (stack, release, layers),
        "tokenizer": stack[0].tokenizer,
    }
    with IndexReader.open(seed) as st:
        n = st.num_tokens
    seed_rec = {"text": "long_text", "tokens": n, "distinct_blocks": n // BLOCK, "block_tokens": BLOCK}
    seed_rec["seconds_build_or_reuse"] = time.perf_counter() - t
    if seed_rec["distinct_blocks"] < 64:
        raise SystemExit(f"seed has {seed_rec['distinct_blocks']} blocks; need at least 64")
    ctx["base"] = args.base_tokens
    ctx["seed_want"] = {"tokens": n, "release": str(release), "layers": layers}
    builds = {label(s): build_size(ctx, s, args.segment_tokens) for s in sizes}
    for rec in builds.values():
        rec["templates"] = template_records(work, rec["want"]["segments"])
    return seed_rec, builds


def git_commit() -> str:
    commit, dirty = git_state()
    return commit + ("+dirty" if dirty else "")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default=None)
    ap.add_argument("--work", default="runs/scale", help="seed, templates and indexes (kept, reused)")
    ap.add_argument("--sizes", default="1M,4M,16M", help="index sizes in tokens (k, M suffixes)")
    ap.add_argument("--seed-blocks", type=int, default=80, help="distinct 2048-token blocks of the seed")
    ap.add_argument("--segment-tokens", type=parse_size, default=4 << 20, help="tokens per segment")
    ap.add_argument("--base-tokens", type=parse_size, default=1 << 20, help="longest segment drawn directly")
    ap.add_argument("--passes", type=int, default=2, help="side-by-side passes over the 20 questions")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "scale.json"))
    ap.add_argument("--measure-index", help=argparse.SUPPRESS)
    ap.add_argument("--side-by-side", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--measure-out", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.measure_index or args.side_by_side:
        got = (
            measure(Path(args.measure_index), args.sae)
            if args.measure_index
            else side_by_side([Path(i) for i in args.side_by_side], args.sae, args.passes)
        )
        Path(args.measure_out).write_text(json.dumps(got))
        return
    sizes = sorted(parse_size(s) for s in args.sizes.split(","))
    res: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": git_commit()}
    res["segment_policy"] = (
        f"segments of {args.segment_tokens} tokens (the last shorter), not merged further; a segment of "
        f"{args.base_tokens} tokens drawn from the seed's blocks, longer ones copies of it merged into one"
    )
    res["seed"], res["builds"] = prepare(args, sizes)
    print(
        f"seed: {res['seed']['distinct_blocks']} distinct blocks of {BLOCK} tokens; {res['segment_policy']}"
    )
    work, names = Path(args.work), [label(s) for s in sizes]
    alone = {
        n: in_child(["--measure-index", str(work / f"idx-{n}")], args.sae, work / f"alone-{n}.json")
        for n in names
    }
    sbs_args = ["--side-by-side", *(str(work / f"idx-{n}") for n in names), "--passes", str(args.passes)]
    res["loadavg_before"] = os.getloadavg()
    sbs = in_child(sbs_args, args.sae, work / "side-by-side.json")
    res["loadavg_after"] = os.getloadavg()
    res["alone"], res["side_by_side"] = alone, sbs
    res["summary"] = {n: summarise(alone[n], sbs, n) for n in names}
    res["ratios"] = ratios(res["summary"])
    print_table(res["summary"], res["ratios"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    plot(res["summary"], out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
