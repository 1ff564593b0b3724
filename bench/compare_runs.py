"""Compare two ``s3-eval`` runs row by row: same samples, same spans fed, same answers and scores?

    python bench/compare_runs.py RUN_A/results.json RUN_B/results.json

Prints how many rows differ (and each one that does) and the mean score of each run; exit code 1 if any differ.
"""

from __future__ import annotations

import json
import sys

KEYS = ("task", "length", "depth", "sample", "method")
COMPARED = ("spans", "context_tokens", "answer", "score", "recall")


def main(a_path: str, b_path: str) -> int:
    a = json.load(open(a_path, encoding="utf-8"))["rows"]
    b = json.load(open(b_path, encoding="utf-8"))["rows"]
    index_b = {tuple(r[k] for k in KEYS): r for r in b}
    differ = 0
    for row in a:
        key = tuple(row[k] for k in KEYS)
        other = index_b.get(key)
        changed = [c for c in COMPARED if other is None or row[c] != other[c]]
        if changed:
            differ += 1
            print(f"differs: {key}: {', '.join(changed) if other else 'missing in B'}")
    mean = lambda rows: sum(r["score"] for r in rows) / max(len(rows), 1)  # noqa: E731
    print(f"rows: A {len(a)}, B {len(b)}; differing: {differ}")
    print(
        f"mean score: A {mean(a):.4f}, B {mean(b):.4f}; mean recall: A "
        f"{sum(r['recall'] for r in a) / max(len(a), 1):.4f}, B {sum(r['recall'] for r in b) / max(len(b), 1):.4f}"
    )
    for method in sorted({r["method"] for r in a}):
        ra = [r for r in a if r["method"] == method]
        rb = [index_b[tuple(r[k] for k in KEYS)] for r in ra if tuple(r[k] for k in KEYS) in index_b]
        print(
            f"  {method}: n {len(ra)}, recall A {_mean(ra, 'recall'):.4f} B {_mean(rb, 'recall'):.4f}, "
            f"score A {_mean(ra, 'score'):.4f} B {_mean(rb, 'score'):.4f}"
        )
    return 1 if differ or len(a) != len(b) else 0


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / max(len(rows), 1)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
