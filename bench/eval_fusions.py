"""Hybrid fusions side by side: the s3-eval harness once per variant, on the same samples, then one table.

    python bench/eval_fusions.py --lengths 16384 --seeds 0,1 --index-cache runs/icache --budget 1024 \\
        --variants bm25,s3,adaptive,linear.6-floor.5 --out runs/fusions

Takes every s3-eval option (the samples, the model, the retrieval settings every variant starts from) plus
``--variants``. Each variant is one s3-eval run with one method and its retrieval options, i.e. what

    s3-eval --methods hybrid --fusion tiered --bm25-share 0.6 --index-cache runs/index-cache ...

does (its --methods is each variant's); here the model stack is loaded once and the indexes are built once
(kept in ``--index-cache``). Retrieval only by default (``--generate`` to answer too). Prints evidence
recall per task family and length per variant, and every variant paired against bm25, s3 and the first
variant (wins / ties / losses, mean difference, 95% cluster-bootstrap CI), and writes OUT/fusions.json (the
rows, the variants, the base config) and OUT/fusions.md. This is how the fusion defaults are chosen, on
tuning seeds (0-9).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from s3attn.config import apply_values, flat_options, parse_config
from s3attn.errors import S3Error, cli_entry
from s3attn.evaluation.evaluate import EvalConfig, check_config, load_eval_stack, run_eval
from s3attn.evaluation.paired import paired_by_family, paired_lines, paired_table
from s3attn.evaluation.report import evidence_grid
from s3attn.logs import setup_cli_logging

PROG = "eval_fusions"
TASKS = [
    "literal_niah",
    "paraphrase_niah",
    "paraphrase_multikey",
    "drop_qa",
    "niah",
    "multidoc_qa",
    "ruler_vt",
]
EVIDENCE_KEPT = "docs/results/tuning/query-map-evidence-niah"  # its fit.txt: how each map is made again
EVIDENCE_MAPS = {kind: EVIDENCE_KEPT for kind in ("own", "guide")} | {
    kind: "runs/query_map" for kind in ("guidemean", "own480", "guide480")
}
STORY_PROMPT = "Write one sentence from a story that answers this question: {question}"
VARIANTS: dict[str, tuple[str, dict]] = {  # name -> (method, retrieval options over the base config's)
    "bm25": ("bm25", {}),
    "s3": ("s3", {}),
    "s3.query": ("s3", {"site": "query"}),
    "s3.both": ("s3", {"site": "both"}),
    **{
        f"s3.{site}.L{n}": ("s3", {"site": site, "read_layers": [n]})
        for site in ("key", "query")
        for n in (6, 12, 16)
    },
    "adaptive": ("hybrid", {"fusion": "adaptive"}),
    "adaptive.p1": ("hybrid", {"fusion": "adaptive", "coverage_power": 1.0}),
    "adaptive.p1.m0": ("hybrid", {"fusion": "adaptive", "coverage_power": 1.0, "prominence_scale": 0.0}),
    "adaptive.p2.m0": ("hybrid", {"fusion": "adaptive", "coverage_power": 2.0, "prominence_scale": 0.0}),
    "adaptive.p4": ("hybrid", {"fusion": "adaptive", "coverage_power": 4.0}),
    "adaptive.p1.min10": ("hybrid", {"fusion": "adaptive", "coverage_power": 1.0, "min_share": 0.10}),
    "adaptive.p1.min25": ("hybrid", {"fusion": "adaptive", "coverage_power": 1.0, "min_share": 0.25}),
    "adaptive.p1.bias32": (
        "hybrid",
        {"fusion": "adaptive", "coverage_power": 1.0, "bias_first": 32, "bias_last": 32},
    ),
    "s3.pool-sum": ("s3", {"pool": "sum"}),
    **{f"s3.coord{c}": ("s3", {"coordination": float(c)}) for c in (0.5, 1, 2)},
    **{
        f"s3.coord{c}.w{w}": ("s3", {"coordination": float(c), "coordination_window": w})
        for c in (1, 2)
        for w in (8, 64)
    },
    **{f"hybrid.coord{c}": ("hybrid", {"coordination": float(c)}) for c in (1, 2)},
    "s3.query.map": ("s3", {"site": "query", "query_map": "runs/query_map/query_map.safetensors"}),
    "s3.both.map": ("s3", {"site": "both", "query_map": "runs/query_map/query_map.safetensors"}),
    "s3.query.codes": ("s3", {"site": "query", "query_map": "runs/query_map/query_map-codes.safetensors"}),
    "s3.query.argmax64": (
        "s3",
        {
            "site": "query",
            "query_map": "docs/results/tuning/query-map-argmax-niah/query_map-argmax-local64.safetensors",
        },
    ),
    **{  # bench/query_map_evidence.py: fitted on question-to-evidence attention (own heads / guided)
        f"s3.query.ev{kind}": (
            "s3",
            {"site": "query", "query_map": f"{folder}/query_map-evidence-{kind}.safetensors"},
        )
        for kind, folder in EVIDENCE_MAPS.items()
    },
    "s3.sat0": ("s3", {"saturation": 0.0}),
    **{
        f"s3.sat{p}.w{w}": ("s3", {"saturation": float(p), "saturation_window": w})
        for p in (0.5, 1)
        for w in (16, 32, 128, 256, 512, 1024, 4096)
    },
    "s3.exp0": ("s3", {"expand": "none"}),
    "hybrid.exp0": ("hybrid", {"expand": "none"}),
    "s3.hyp": ("s3", {"expand": "hypothesis"}),
    "s3.hypboth": ("s3", {"expand": "both"}),
    "s3.hyp.story": ("s3", {"expand": "hypothesis", "expand_prompt": STORY_PROMPT}),
    "hybrid.hypboth": ("hybrid", {"expand": "both"}),
    "s3.idf-log": ("s3", {"idf": "log"}),
    "s3.feat32": ("s3", {"max_features": 32}),
    "s3.feat128": ("s3", {"max_features": 128}),
    "s3.window5": ("s3", {"window": 5}),
    "s3.window17": ("s3", {"window": 17}),
    "s3.stop1": ("s3", {"stop_ratio": 1.0}),
    "s3.stop1.span64": ("s3", {"stop_ratio": 1.0, "max_span": 64, "min_span": 24}),
    "s3.stop1.span96": ("s3", {"stop_ratio": 1.0, "max_span": 96, "min_span": 32}),
    "s3.stop1.span64.w5": ("s3", {"stop_ratio": 1.0, "max_span": 64, "min_span": 24, "window": 5}),
    "s3.stop.5.span64": ("s3", {"stop_ratio": 0.5, "max_span": 64, "min_span": 24}),
    "s3.stop.25.span64": ("s3", {"stop_ratio": 0.25, "max_span": 64, "min_span": 24}),
    "s3.stop.5.span48": ("s3", {"stop_ratio": 0.5, "max_span": 48, "min_span": 16}),
    "s3.stop.5.span64.w5": ("s3", {"stop_ratio": 0.5, "max_span": 64, "min_span": 24, "window": 5}),
    "s3.span64.min32": ("s3", {"max_span": 64, "min_span": 32}),
    "s3.span64.min48": ("s3", {"max_span": 64, "min_span": 48}),
    "s3.span96.min48": ("s3", {"max_span": 96, "min_span": 48}),
    "s3.span96": ("s3", {"max_span": 96, "min_span": 32}),
    "s3.span64": ("s3", {"max_span": 64, "min_span": 24}),
    "adaptive.span96": ("hybrid", {"fusion": "adaptive", "max_span": 96, "min_span": 32}),
    "adaptive.span64": ("hybrid", {"fusion": "adaptive", "max_span": 64, "min_span": 24}),
    "adaptive.min05": ("hybrid", {"fusion": "adaptive", "min_share": 0.05}),
    "adaptive.min05.bias32": (
        "hybrid",
        {"fusion": "adaptive", "min_share": 0.05, "bias_first": 32, "bias_last": 32},
    ),
    "tiered.6": ("hybrid", {"fusion": "tiered", "bm25_share": 0.6}),
    "linear.6": ("hybrid", {"fusion": "linear", "bm25_weight": 0.6, "min_relevance": 0.0}),
    "linear.6-floor.5": ("hybrid", {"fusion": "linear", "bm25_weight": 0.6, "min_relevance": 0.5}),
    "rrf": ("hybrid", {"fusion": "rrf", "min_relevance": 0.0}),
}


def _base() -> EvalConfig:
    return EvalConfig(tasks=list(TASKS), lengths=[16384], samples=10, depths=[50.0], generate=False,
                      index_cache="runs/index-cache", out="runs/fusions")  # fmt: skip


@dataclass
class FusionsConfig:
    """Every option of bench/eval_fusions.py."""

    variants: list[str] = field(default_factory=lambda: ["bm25", "s3", "adaptive", "linear.6-floor.5"])
    """Variants to compare (paired against bm25 and s3 when those run): see VARIANTS in this script."""
    eval: EvalConfig = field(default_factory=_base)
    """The s3-eval run every variant is (its methods are the variant's)."""


def run(cfg: FusionsConfig) -> tuple[list[dict], dict]:
    """Every variant's rows (s3-eval's, ``method`` set to the variant's name), the samples and the model
    stack shared."""
    unknown = [n for n in cfg.variants if n not in VARIANTS]
    if unknown:
        raise S3Error(f"--variants {','.join(unknown)}: choose from {', '.join(VARIANTS)}")
    base = check_config(cfg.eval)
    stack, _ = load_eval_stack(base)
    rows: list[dict] = []
    environment: dict = {}
    for name in cfg.variants:
        method, options = VARIANTS[name]
        retrieval = apply_values(base.retrieval, options, f"variant {name}")
        run_ = run_eval(replace(base, methods=[method], retrieval=retrieval), stack=stack)
        environment = run_.environment  # the commit and machine of the run (the same for every variant)
        rows += [{**r._asdict(), "method": name} for r in run_.rows]
    return rows, environment


def table(rows: list[dict], names: list[str]) -> str:
    """Markdown: evidence recall per family x length per variant, then each variant paired against bm25,
    s3 and the first variant, those that ran (wins / ties / losses, mean difference, 95% cluster-bootstrap
    CI)."""
    body = []
    for ref in dict.fromkeys(("bm25", "s3", names[0])):  # the first variant is a baseline too
        for name in names:
            if ref in names and name != ref:
                body += paired_lines(f"{name} vs {ref}", paired_by_family(rows, name, ref))
    return "\n".join([*evidence_grid(rows, names), "", *paired_table(body)]) + "\n"


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    setup_cli_logging()
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_config(FusionsConfig, "fusions", argv, prog=PROG, description=__doc__)
    rows, environment = run(cfg)
    md = table(rows, cfg.variants)
    print(md)
    out = Path(cfg.eval.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = {name: VARIANTS[name] for name in cfg.variants}
    data = {
        "config": flat_options(cfg.eval),
        "variants": variants,
        "environment": environment,
        "rows": rows,
    }
    (out / "fusions.json").write_text(json.dumps(data, indent=1))
    command = " ".join(["python bench/eval_fusions.py", *argv])
    (out / "fusions.md").write_text(f"# Hybrid fusions side by side\n\n`{command}`\n{md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
