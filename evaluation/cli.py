"""``s3-eval``: compare full / bm25 / streaming / s3 / hybrid on synthetic long-context tasks.

s3-eval --sae RELEASE [--tasks niah,ruler_vt] [--lengths 2048,8192] [--samples 2] [--budget N]
        [--methods full,bm25,streaming,s3,hybrid] [--fusion linear --bm25-weight 0.6] [--out runs/eval]
        [--dtype auto|bfloat16|float16|float32] [--seeds 0,1 | --seed 0] [--no-generate]

Per sample the context is indexed once with the shared model + SAEs, then every method answers it, all in
one model precision (--dtype; results.json records it under environment.dtype).
Writes OUT/results.json (rows, config, environment, summary), OUT/results.md, OUT/scores.png and, when
the tasks give evidence, OUT/evidence.png; results.json is rewritten after every sample, so an interrupted
run keeps what it finished. Rows carry the evidence recall of the spans fed (primary retrieval metric) besides
the answer score; --no-generate skips generation (retrieval only, for tuning). Base seeds 0-9 are tuning
seeds, 100 and up held out (--seeds 100,101); rows record base_seed and split.
Every retrieval setting is an option (RetrievalConfig, nested: --fusion is --retrieval.hybrid.fusion);
with --index-cache DIR a run that changes only those reuses the indexes an earlier run built.
Every option is listed below with its effective default (EvalConfig, then configs/eval.yaml, then
--config FILE).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from s3attn.config import parse_config
from s3attn.errors import cli_entry
from s3attn.evaluation.evaluate import EvalConfig, EvalRun, check_config, load_eval_stack, run_eval
from s3attn.logs import setup_cli_logging
from s3attn.paths import check_writable_dir

PROG = "s3-eval"


def parse_args(argv: Sequence[str] | None) -> EvalConfig:
    return parse_config(EvalConfig, "eval", argv, prog=PROG, description=__doc__)


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    from s3attn.evaluation.report import RESULTS_JSON, write_report
    from s3attn.paths import atomic_write_json

    setup_cli_logging()
    cfg = check_config(parse_args(argv))
    out = check_writable_dir(Path(cfg.out), "--out")
    if cfg.index_cache:
        check_writable_dir(Path(cfg.index_cache), "--index-cache")
    stack, _ = load_eval_stack(cfg)  # refuses a missing or mismatched --sae before any work

    def save_partial(run: EvalRun) -> None:
        rows = [r._asdict() for r in run.rows]
        data = {"config": run.config, "environment": run.environment, "rows": rows, "partial": True}
        atomic_write_json(out / RESULTS_JSON, data)

    run = run_eval(cfg, stack=stack, on_sample=save_partial)
    files = write_report(out, [r._asdict() for r in run.rows], run.config, run.environment)
    wrote = ", ".join(str(p) for p in files if p is not None)
    print(f"{PROG}: {len(run.rows)} answers; wrote {wrote}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
