"""Hybrid fusions side by side: the s3-eval harness once per variant, on the same samples, then one table.

    python bench/eval_fusions.py --lengths 16384,32768,65536 --index-cache runs/index-cache \\
        --variants bm25,tiered.6,linear.6,rrf --out docs/results/fusions-seed0

Takes every s3-eval option (the samples, the model, the retrieval settings every variant starts from) plus
``--variants``. Each variant is one s3-eval run with one method and its retrieval options, i.e. what

    s3-eval --methods hybrid --fusion tiered --bm25-share 0.6 --index-cache runs/index-cache ...

does (its --methods is each variant's); here the model stack is loaded once and the indexes are built once
(kept in ``--index-cache``). Prints one table per length (mean score, recall, tokens, wins / losses against
bm25) and writes OUT/fusions.json (the rows, the variants, the base config) and OUT/fusions.md.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from s3attn.config import apply_values, flat_options, parse_config
from s3attn.errors import S3Error, cli_entry
from s3attn.evaluation.evaluate import EvalConfig, check_config, load_eval_stack, run_eval
from s3attn.logs import setup_cli_logging

PROG = "eval_fusions"
TASKS = [
    "niah",
    "ruler_niah_multikey",
    "ruler_niah_multivalue",
    "ruler_niah_multiquery",
    "ruler_vt",
    "multidoc_qa",
]
VARIANTS: dict[str, tuple[str, dict]] = {  # name -> (method, retrieval options over the base config's)
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
        {"fusion": "linear", "bm25_weight": 0.6, "min_relevance": 0.5, "half_weights": False},
    ),
}


def _base() -> EvalConfig:
    return EvalConfig(tasks=list(TASKS), lengths=[16384, 32768, 65536], depths=[25.0, 75.0],
                      index_cache="runs/index-cache", out="runs/fusions")  # fmt: skip


@dataclass
class FusionsConfig:
    """Every option of bench/eval_fusions.py."""

    variants: list[str] = field(default_factory=lambda: ["bm25", "tiered.6", "tiered.8", "linear.6", "rrf"])
    """Variants to compare (bm25 is the reference of the wins / losses): see VARIANTS in this script."""
    eval: EvalConfig = field(default_factory=_base)
    """The s3-eval run every variant is (its methods are the variant's)."""


def run(cfg: FusionsConfig) -> list[dict]:
    """Every variant's rows (s3-eval's, with ``variant``), the samples and the model stack shared."""
    unknown = [n for n in cfg.variants if n not in VARIANTS]
    if unknown:
        raise S3Error(f"--variants {','.join(unknown)}: choose from {', '.join(VARIANTS)}")
    base = check_config(cfg.eval)
    stack, _ = load_eval_stack(base)
    rows: list[dict] = []
    for name in cfg.variants:
        method, options = VARIANTS[name]
        retrieval = apply_values(base.retrieval, options, f"variant {name}")
        run_ = run_eval(replace(base, methods=[method], retrieval=retrieval), stack=stack)
        rows += [{"variant": name, **r._asdict()} for r in run_.rows]
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
        ref = {(r["task"], r["depth"], r["sample"], r["seed"]): r["score"] for r in rows
               if r["variant"] == "bm25" and r["length"] == length}  # fmt: skip
        for name in names:
            sel = [r for r in rows if r["variant"] == name and r["length"] == length]
            if not sel:
                continue
            pairs = [(r["score"], ref.get((r["task"], r["depth"], r["sample"], r["seed"]))) for r in sel]
            wins = sum(a > b for a, b in pairs if b is not None)
            losses = sum(a < b for a, b in pairs if b is not None)
            vs = f"{wins} / {losses}" if name != "bm25" and ref else ""
            out.append(
                f"| {name} | {len(sel)} | {np.mean([r['score'] for r in sel]):.3f} | "
                f"{np.mean([r['recall'] for r in sel]):.2f} | {np.mean([r['context_tokens'] for r in sel]):.0f} "
                f"| {vs} |"
            )
    return "\n".join(out) + "\n"


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    setup_cli_logging()
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_config(FusionsConfig, "fusions", argv, prog=PROG, description=__doc__)
    rows = run(cfg)
    md = table(rows, cfg.variants)
    print(md)
    out = Path(cfg.eval.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = {name: VARIANTS[name] for name in cfg.variants}
    data = {"config": flat_options(cfg.eval), "variants": variants, "rows": rows}
    (out / "fusions.json").write_text(json.dumps(data, indent=1))
    command = " ".join(["python bench/eval_fusions.py", *argv])
    (out / "fusions.md").write_text(f"# Hybrid fusions side by side\n\n`{command}`\n{md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
