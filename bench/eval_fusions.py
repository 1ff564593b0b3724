"""Hybrid fusions side by side on the same samples, from the indexes an ``s3-eval --index-cache DIR`` run kept.

    python bench/eval_fusions.py --seeds 0 --lengths 16384,32768,65536 --index-cache runs/index-cache \\
        --variants bm25,tiered.6,tiered.8,linear.6 --out docs/results/fusions-seed0

For every sample of the ``s3-eval`` plan (the same tasks, depths, samples and seeds as the README's runs)
whose index is in the cache, each variant retrieves (``bm25``, ``s3`` or ``hybrid`` with its fusion
options) and the model answers greedily, exactly as ``s3-eval`` does (same prompt, metric and token budget).
Samples without a cached index are skipped. Greedy answers depend only on the prompt, so an answer is reused
for any variant (or earlier ``s3-eval`` row in ``--reuse`` folders) that feeds the same spans; answers are
kept in ``--answers`` between runs. Prints one
table per length (mean score, recall, tokens, wins / losses against bm25) and writes OUT/fusions.json (rows)
and OUT/fusions.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from s3attn.evaluation import index_cache as C
from s3attn.evaluation.evaluate import (
    SEPARATOR,
    EvalConfig,
    build_prompt,
    check_config,
    context_recall,
    count_tokens,
    load_eval_stack,
    make_sample,
    new_tokens_for,
    plan,
)
from s3attn.evaluation.metrics import score
from s3attn.paths import atomic_write_json
from s3attn.retrieval.question import QuestionConfig
from s3attn.retrieval.retriever import RetrievalConfig, Retriever, generate

TASKS = "niah,ruler_niah_multikey,ruler_niah_multivalue,ruler_niah_multiquery,ruler_vt,multidoc_qa"
VARIANTS = {
    "bm25": ("bm25", {}),
    "s3": ("s3", {}),
    "tiered.6": ("hybrid", {"fusion": "tiered", "bm25_share": 0.6}),
    "tiered.8": ("hybrid", {"fusion": "tiered", "bm25_share": 0.8}),
    "linear.5": ("hybrid", {"fusion": "linear", "bm25_weight": 0.5, "min_relevance": 0.0}),
    "linear.6": ("hybrid", {"fusion": "linear", "bm25_weight": 0.6, "min_relevance": 0.0}),
    "linear.7": ("hybrid", {"fusion": "linear", "bm25_weight": 0.7, "min_relevance": 0.0}),
    "linear.8": ("hybrid", {"fusion": "linear", "bm25_weight": 0.8, "min_relevance": 0.0}),
    "linear.6-floor.5": ("hybrid", {"fusion": "linear", "bm25_weight": 0.6, "min_relevance": 0.5}),
    "rrf": ("hybrid", {"fusion": "rrf", "min_relevance": 0.0}),
    # the default hybrid with the question's forward in the model's own fp32 weights (not fp16-packed)
    "linear.6-floor.5-fp32": (
        "hybrid",
        {
            "fusion": "linear",
            "bm25_weight": 0.6,
            "min_relevance": 0.5,
            "query": QuestionConfig(half_weights=False),
        },
    ),
}


def _key(item_seed: int, task: str, length: int, spans: list[list[int]]) -> str:
    return hashlib.sha1(json.dumps([item_seed, task, length, spans]).encode()).hexdigest()


def reused_answers(folders: list[Path]) -> dict[str, str]:
    """Answers of earlier s3-eval rows, by (sample seed, task, length, spans fed)."""
    out: dict[str, str] = {}
    for folder in folders:
        files = [f for pattern in ("results.json", "*/results.json", "fusions.json", "*/fusions.json")
                 for f in sorted(folder.glob(pattern))]  # fmt: skip
        for f in files:
            for row in json.loads(f.read_text())["rows"]:
                seed = row.get("item_seed", row["seed"])
                out.setdefault(_key(seed, row["task"], row["length"], row["spans"]), row["answer"])
    return out


def run(args: argparse.Namespace) -> list[dict]:
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"eval_fusions: --variants {','.join(unknown)}: choose from {', '.join(VARIANTS)}")
    base = check_config(
        EvalConfig(
            tasks=args.tasks.split(","),
            lengths=[int(x) for x in args.lengths.split(",")],
            depths=[25.0, 75.0],
            samples=args.samples,
            index_cache=args.index_cache,
        )
    )
    stack, release = load_eval_stack(base)
    identity = C.index_identity(stack, base, release)
    tok = stack[0].tokenizer
    store = Path(args.answers)
    answers = json.loads(store.read_text()) if store.exists() else {}
    answers.update(reused_answers([Path(p) for p in args.reuse.split(",") if p]))
    rows: list[dict] = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        cfg = replace(base, seed=seed)
        for item in plan(cfg):
            sample = make_sample(item, lambda t: count_tokens(tok, t), cfg.haystack)
            hit = C.lookup(Path(args.index_cache), C.cache_key(sample.context, identity))
            if hit is None:
                continue
            new_tokens = new_tokens_for(item.task, cfg)
            r = Retriever(hit.index, cfg=RetrievalConfig(max_new_tokens=new_tokens), stack=stack)
            line = []
            todo = []
            for name in names:
                mode, options = VARIANTS[name]
                r.cfg = RetrievalConfig(max_new_tokens=new_tokens, **options)
                spans = r.retrieve(sample.question, mode, cfg.budget)
                context = SEPARATOR.join(s.text.strip() for s in spans)
                key = _key(item.seed, item.task, item.length, [[s.start, s.end] for s in spans])
                if key not in answers and args.kept_only:
                    todo.append(name)
                    continue
                if key not in answers:
                    prompt = build_prompt(tok, sample, context, r.prompt)
                    answers[key] = generate(r.model, tok, prompt, new_tokens)[0]
                    store.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(store, answers)
                rows.append(
                    {
                        "variant": name,
                        "seed": seed,
                        "length": item.length,
                        "task": item.task,
                        "depth": item.depth,
                        "sample": item.number,
                        "score": score(sample.metric, answers[key], sample.answers),
                        "recall": context_recall(context, sample.answers),
                        "tokens": sum(s.end - s.start for s in spans),
                        "answer": answers[key],
                        "item_seed": item.seed,
                        "spans": [[int(s.start), int(s.end)] for s in spans],
                    }
                )
                line.append(f"{name}={rows[-1]['score']:.2f}")
            r.store.close()
            if todo:  # --kept-only: a sample some variant has no kept answer for is left out whole
                rows = [x for x in rows if (x["item_seed"], x["length"]) != (item.seed, item.length)]
                print(f"seed {seed} {item.task} {item.length} {item.depth} #{item.number}: skipped ({todo})")
                continue
            print(f"seed {seed} {item.task} {item.length} {item.depth} #{item.number}: " + " ".join(line))
    return rows


def table(rows: list[dict], names: list[str]) -> str:
    """Markdown: per length, mean score / recall / tokens and wins / losses against bm25 per variant."""
    out = []
    for length in sorted({r["length"] for r in rows}):
        out += [
            f"\n### {length} tokens\n",
            "| variant | n | score | recall | tokens | vs bm25 (wins / losses) |",
        ]
        out.append("|---|---|---|---|---|---|")
        ref = {(r["seed"], r["task"], r["depth"], r["sample"]): r["score"] for r in rows
               if r["variant"] == "bm25" and r["length"] == length}  # fmt: skip
        for name in names:
            sel = [r for r in rows if r["variant"] == name and r["length"] == length]
            if not sel:
                continue
            pairs = [(r["score"], ref.get((r["seed"], r["task"], r["depth"], r["sample"]))) for r in sel]
            wins = sum(a > b for a, b in pairs if b is not None)
            losses = sum(a < b for a, b in pairs if b is not None)
            vs = f"{wins} / {losses}" if name != "bm25" and ref else ""
            out.append(
                f"| {name} | {len(sel)} | {np.mean([r['score'] for r in sel]):.3f} | "
                f"{np.mean([r['recall'] for r in sel]):.2f} | {np.mean([r['tokens'] for r in sel]):.0f} | {vs} |"
            )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--lengths", default="16384,32768,65536")
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--index-cache", default="runs/index-cache")
    ap.add_argument("--variants", default="bm25,tiered.6,tiered.8,linear.6,rrf")
    ap.add_argument("--reuse", default="docs/results,runs", help="folders of earlier s3-eval results")
    ap.add_argument("--answers", default="runs/fusion-answers.json", help="answers kept between runs")
    ap.add_argument(
        "--kept-only", action="store_true", help="generate nothing: skip samples without kept answers"
    )
    ap.add_argument("--out", default="runs/fusions")
    args = ap.parse_args()
    rows = run(args)
    md = table(rows, args.variants.split(","))
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fusions.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    command = "python bench/eval_fusions.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
        for k, v in vars(args).items()
        if v is not False
    )
    (out / "fusions.md").write_text(f"# Hybrid fusions side by side\n\n`{command}`\n{md}")


if __name__ == "__main__":
    main()
