"""Compare two ``s3-eval`` runs: row by row (same samples, same spans fed, same answers and scores?), then
paired on one metric between a method of run A and a method of run B.

    python bench/compare_runs.py RUN_A/results.json RUN_B/results.json [--method-a s3 --method-b s3]
        [--metric evidence_recall] [--length-a 65536 --length-b 262144]

Prints how many rows differ (and each one that does), the mean score and recall of each run, then the paired
table (``s3attn.evaluation.paired``: wins / ties / losses, mean difference A - B, task-cluster bootstrap 95%
CI) per task family and overall: how two runs with different retrieval settings on the same samples compare.
Exit code 1 if any row differs. ``--length-a`` / ``--length-b`` compare A's rows of one length with B's of
another (B's relabelled to A's length, so the same needles pair up; the runs may be one file): with
``s3-eval --same-needles``, what an index's size costs.
"""

from __future__ import annotations

import argparse
import json
import sys

from s3attn.evaluation.paired import PAIRED_HEADER, paired_by_family, paired_lines

KEYS = ("task", "length", "depth", "sample", "base_seed", "method")
COMPARED = ("spans", "context_tokens", "answer", "score", "recall", "evidence_recall")


def _key(row: dict) -> tuple:
    return tuple(row.get(k, 0 if k == "base_seed" else None) for k in KEYS)


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def row_diff(a: list[dict], b: list[dict]) -> int:
    """Print the rows of A that B lacks or answers differently, and the means; returns how many differ."""
    index_b = {_key(r): r for r in b}
    differ = 0
    for row in a:
        other = index_b.get(_key(row))
        changed = [c for c in COMPARED if other is None or row.get(c) != other.get(c)]
        if changed:
            differ += 1
            print(f"differs: {_key(row)}: {', '.join(changed) if other else 'missing in B'}")
    print(f"rows: A {len(a)}, B {len(b)}; differing: {differ}")
    for key in ("score", "recall", "evidence_recall"):
        print(f"mean {key}: A {_fmt(_mean(a, key))}, B {_fmt(_mean(b, key))}")
    for method in sorted({r["method"] for r in a}):
        ra = [r for r in a if r["method"] == method]
        rb = [index_b[_key(r)] for r in ra if _key(r) in index_b]
        print(
            f"  {method}: n {len(ra)}, recall A {_fmt(_mean(ra, 'recall'))} B {_fmt(_mean(rb, 'recall'))}, "
            f"evidence A {_fmt(_mean(ra, 'evidence_recall'))} B {_fmt(_mean(rb, 'evidence_recall'))}, "
            f"score A {_fmt(_mean(ra, 'score'))} B {_fmt(_mean(rb, 'score'))}"
        )
    return differ


def paired_table(a: list[dict], b: list[dict], method_a: str, method_b: str, metric: str) -> list[str]:
    """Text lines of the paired table: ``method_a`` rows of A against ``method_b`` rows of B."""
    table = paired_by_family(a, method_a, method_b, metric, rows_b=b)
    body = paired_lines(f"A:{method_a} vs B:{method_b}", table)
    widths = [max(len(x) for x in col) for col in zip(PAIRED_HEADER, *body)]
    lines = [f"paired {metric} (A - B):"]
    lines += ["  " + "  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in [PAIRED_HEADER, *body]]
    overall = table["overall"]
    if overall.unpaired or overall.no_value:
        lines.append(
            f"  left out: {overall.unpaired} rows without a partner, {overall.no_value} pairs without a value"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="run A's results.json")
    parser.add_argument("b", help="run B's results.json")
    parser.add_argument("--method-a", default="s3", help="method of run A in the paired table (default s3)")
    parser.add_argument("--method-b", default="s3", help="method of run B in the paired table (default s3)")
    parser.add_argument(
        "--metric", default="evidence_recall", help="row field compared (default evidence_recall)"
    )
    parser.add_argument("--length-a", type=int, help="only A's rows of this length")
    parser.add_argument("--length-b", type=int, help="only B's rows of this length, paired as if --length-a")
    args = parser.parse_args(argv)
    a = json.load(open(args.a, encoding="utf-8"))["rows"]
    b = json.load(open(args.b, encoding="utf-8"))["rows"]
    if args.length_a is not None and args.length_b is not None:
        a = [r for r in a if int(r["length"]) == args.length_a]
        b = [{**r, "length": args.length_a} for r in b if int(r["length"]) == args.length_b]
    differ = row_diff(a, b)
    print("\n".join(paired_table(a, b, args.method_a, args.method_b, args.metric)))
    return 1 if differ or len(a) != len(b) else 0


if __name__ == "__main__":
    sys.exit(main())
