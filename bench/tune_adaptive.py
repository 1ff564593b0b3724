"""Choose the adaptive fusion's share rule on tuning seeds: every question's candidates are gathered once (BM25
passages, S3 spans, bias spans, evidence token ranges), then a grid of rules is replayed offline on them.

    python bench/tune_adaptive.py --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 \\
        --seeds 0,1,2 --lengths 16384 --budget 1024 --index-cache runs/icache --cache runs/tune/cands-niah.pkl
    python bench/tune_adaptive.py --tasks drop_qa --samples 8 --seeds 0,1 ... --cache runs/tune/cands-drop.pkl
    python bench/tune_adaptive.py --replay runs/tune/cands-niah.pkl,runs/tune/cands-drop.pkl

Per rule it prints evidence recall per task family next to S3's and BM25's (the same candidates fed as the
``s3`` and ``bm25`` modes feed them) and the worst family margin ``hybrid - max(s3, bm25)``, the issue's
criterion (at least -0.03 on every family); rules are listed best margin first. Seeds must be tuning seeds
(0-9): the script refuses held-out ones.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from s3attn.evaluation.evidence import evidence_coverage, evidence_recall, evidence_token_ranges
from s3attn.evaluation.plan import TUNING_SEEDS, family_of
from s3attn.retrieval.adaptive import ShareRule, adaptive_spans, shared_spans
from s3attn.retrieval.fusion import normalised
from s3attn.retrieval.spans import fuse

GRID = {
    "coverage_center": [0.2, 0.25, 0.3, 0.35, 0.4],
    "coverage_power": [1.0, 2.0, 3.0, 5.0],
    "prominence_scale": [0.0, 2.5],
    "min_share": [0.05, 0.1, 0.15],
}


def gather(args: argparse.Namespace, extra=None) -> list[dict]:
    """Per question: task, family, evidence token ranges, bias / BM25 / S3 candidates (budget ``--budget``;
    with ``--s3-pool`` above 1, S3's at that multiple of it too, as ``s3_pool``); ``extra(retriever, sample,
    row)``, when given, returns more fields for the row."""
    from s3attn.evaluation.evaluate import EvalConfig, check_config, count_tokens, load_eval_stack
    from s3attn.evaluation.index_cache import index_identity, sample_index
    from s3attn.evaluation.plan import make_sample, plan
    from s3attn.retrieval.retriever import RetrievalConfig, Retriever

    seeds = [int(s) for s in args.seeds.split(",")]
    if any(s not in TUNING_SEEDS for s in seeds):
        sys.exit(
            f"--seeds {args.seeds}: tune on tuning seeds only ({TUNING_SEEDS.start}-{TUNING_SEEDS.stop - 1})"
        )
    cfg = check_config(EvalConfig(tasks=args.tasks.split(","), lengths=[int(x) for x in args.lengths.split(",")],
                                  seeds=seeds, samples=args.samples, depths=[50.0], index_cache=args.index_cache,
                                  generate=False, retrieval=RetrievalConfig(budget=args.budget)))  # fmt: skip
    stack, release = load_eval_stack(cfg)
    identity, tok = index_identity(stack, cfg, release), stack[0].tokenizer
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in plan(cfg):
            sample = make_sample(item, lambda t: count_tokens(tok, t), cfg.haystack)
            shutil.rmtree(Path(tmp) / "w", ignore_errors=True)
            index = sample_index(item.task, sample.context, stack, cfg, Path(tmp) / "w", identity).index
            r = Retriever(index, cfg=cfg.retrieval, stack=stack)
            scores, _ = r.s3_scores(sample.question)
            s3, _ = r.s3_candidates(scores, args.budget)
            out.append({"task": item.task, "family": family_of(item.task), "length": item.length,
                        "evidence": evidence_token_ranges(tok, sample.context, sample.meta.get("evidence", [])),
                        "bias": r._bias(None), "bm25": r._bm25_hits(sample.question, None), "s3": s3})  # fmt: skip
            if args.s3_pool > 1:
                out[-1]["s3_pool"] = r.s3_candidates(scores, int(args.budget * args.s3_pool))[0]
            if extra is not None:
                out[-1].update(extra(r, sample, out[-1]))
            r.store.close()
    return out


def recall(q: dict, spans) -> float | None:
    return evidence_recall(evidence_coverage(q["evidence"], [[s.start, s.end] for s in spans]))


def family_means(questions: list[dict], spans_of) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for q in questions:
        v = recall(q, spans_of(q))
        if v is not None:
            by.setdefault(q["family"], []).append(v)
    return {f: float(np.mean(v)) for f, v in sorted(by.items())}


def bm25_feed(q: dict, budget: int) -> list:
    """What the ``bm25`` mode feeds for question ``q``: its passages within ``budget``."""
    return normalised(fuse([q["bm25"]], budget)) if q["bm25"] else []


def own_results(questions: list[dict], budget: int) -> tuple[dict, dict, dict]:
    """Recall per family of S3 alone, of BM25 alone, and the better of the two (printing the families)."""
    s3 = family_means(questions, lambda q: normalised(q["s3"]))
    bm25 = family_means(questions, lambda q: bm25_feed(q, budget))
    print("families:", ", ".join(f"{f} (n={sum(q['family'] == f for q in questions)})" for f in s3))
    return s3, bm25, {f: max(s3[f], bm25[f]) for f in s3}


def compared(questions: list[dict], budget: int, width: int = 26):
    """Print S3's, BM25's and the adaptive fusion's recall per family, each with its worst family margin
    ``hybrid - max(s3, bm25)``; return the function that prints a further try's line the same way."""
    s3, bm25, best = own_results(questions, budget)

    def line(name: str, h: dict) -> None:
        margin = min(h[f] - best[f] for f in h)
        print(
            f"{name:<{width}} " + " ".join(f"{f} {v:.3f}" for f, v in h.items()) + f"  margin {margin:+.3f}"
        )

    line("s3", s3)
    line("bm25", bm25)
    line("adaptive", family_means(
        questions, lambda q: adaptive_spans(q["bias"], q["bm25"], q["s3"], budget, ShareRule())[0]
    ))  # fmt: skip
    return line


def replay(questions: list[dict], budget: int, top: int) -> None:
    s3, bm25, best = own_results(questions, budget)
    print("s3  ", {f: round(v, 3) for f, v in s3.items()})
    print("bm25", {f: round(v, 3) for f, v in bm25.items()})
    results = []
    for values in itertools.product(*GRID.values()):
        rule = ShareRule(**dict(zip(GRID, values)))
        h = family_means(
            questions, lambda q, rule=rule: adaptive_spans(q["bias"], q["bm25"], q["s3"], budget, rule)[0]
        )
        margin = min(h[f] - best[f] for f in h)
        results.append((margin, float(np.mean(list(h.values()))), rule, h))
    results.sort(key=lambda x: (-x[0], -x[1]))
    for margin, mean, rule, h in results[:top]:
        print(
            f"margin {margin:+.3f} mean {mean:.3f} {tuple(rule)} "
            + " ".join(f"{f} {v:.3f}" for f, v in h.items())
        )
    default = next(x for x in results if x[2] == ShareRule())
    print(f"default {tuple(ShareRule())}: margin {default[0]:+.3f} mean {default[1]:.3f}")
    frontier(questions, budget, best)


def frontier(questions: list[dict], budget: int, best: dict[str, float]) -> None:
    """What any share rule can reach: every fixed BM25 share, and the oracle that takes, per question, the
    better retriever's own result (the bound no per-question share exceeds)."""
    print("fixed BM25 share: recall per family, worst margin")
    for share in np.linspace(0.0, 1.0, 11):
        h = family_means(
            questions, lambda q, a=float(share): shared_spans(q["bias"], q["bm25"], q["s3"], budget, a)
        )
        print(f"  {share:.1f} " + " ".join(f"{f} {v:.3f}" for f, v in h.items()) +
              f"  margin {min(h[f] - best[f] for f in h):+.3f}")  # fmt: skip
    by: dict[str, list[float]] = {}
    for q in questions:
        own = [
            recall(q, normalised(q["s3"])),
            recall(q, bm25_feed(q, budget)),
        ]
        by.setdefault(q["family"], []).append(max(v or 0.0 for v in own))
    print(
        "oracle (better retriever per question): " + " ".join(f"{f} {np.mean(v):.3f}" for f, v in by.items())
    )


def gather_parser(description: str) -> argparse.ArgumentParser:
    """The options of a script that gathers tuning questions (or replays them from pickles)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="literal_niah,paraphrase_niah,paraphrase_multikey")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lengths", default="16384")
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument(
        "--s3-pool",
        type=float,
        default=1.0,
        help="also gather S3's candidates at this multiple of the budget",
    )
    p.add_argument("--index-cache", default="runs/icache")
    p.add_argument("--cache", help="write the gathered questions here (pickle)")
    p.add_argument("--replay", help="comma-separated pickles to replay instead of gathering")
    return p


def questions_of(args: argparse.Namespace, extra=None) -> list[dict]:
    """The questions of ``--replay``, or gathered (``gather(args, extra)``) and written to ``--cache``."""
    if args.replay:
        return [q for f in args.replay.split(",") for q in pickle.loads(Path(f).read_bytes())]
    questions = gather(args, extra)
    if args.cache:
        Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
        Path(args.cache).write_bytes(pickle.dumps(questions))
    return questions


def main(argv: list[str] | None = None) -> int:
    p = gather_parser(__doc__)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    replay(questions_of(args), args.budget, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
