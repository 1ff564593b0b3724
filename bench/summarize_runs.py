"""One table from several s3-eval runs on the same samples: evidence recall per family x length x method, the
paired comparisons, and the answer scores, e.g. the held-out runs of ``bench/heldout.sh``:

    python bench/summarize_runs.py docs/results/heldout/{niah,drop,other} \\
        s3.query=docs/results/heldout/site-query/{niah,drop,other} --out docs/results/heldout/summary.md

A plain folder contributes its rows as they are; ``NAME=FOLDER`` renames the rows' single method to NAME (a
run of one method with other settings, e.g. ``--site query``); ``NAME=FOLDER#METHOD`` takes only METHOD's
rows of a run, renamed (e.g. ``hybrid.adaptive=docs/results/heldout-16k/niah#hybrid``). Paired rows match on
(task, length, depth, sample, base seed); every comparison is a against b with wins / ties / losses, the mean
difference and the 95% task-cluster bootstrap CI of ``s3attn.evaluation.paired``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from s3attn.evaluation.paired import paired_by_family, paired_lines, paired_table
from s3attn.evaluation.report import evidence_grid

COMPARE = [
    ("hybrid", "bm25"),
    ("hybrid", "s3"),
    ("s3", "bm25"),
    ("hybrid", "hybrid.adaptive"),
    ("hybrid", "hybrid.pool1"),
    ("s3", "s3.sat0"),
    ("hybrid", "hybrid.sat0"),
    ("s3", "s3.exp0"),
    ("hybrid", "hybrid.exp0"),
    ("s3.query", "s3"),
    ("s3.both", "s3"),
]


def load(spec: str) -> tuple[list[dict], dict]:
    """Rows (method renamed for ``NAME=FOLDER``, and only METHOD's for ``NAME=FOLDER#METHOD``) and
    environment of one results.json."""
    name, _, folder = spec.rpartition("=")
    folder, _, only = folder.partition("#")
    data = read_run(Path(folder))
    rows = [r for r in data["rows"] if not only or r["method"] == only]
    if name:
        methods = {r["method"] for r in rows}
        if len(methods) != 1:
            sys.exit(f"{folder}: NAME= needs a run of one method, this one has {sorted(methods)}")
        rows = [{**r, "method": name} for r in rows]
    return rows, data.get("environment", {})


def read_run(folder: Path) -> dict:
    """The run file of ``folder``: results.json, else fusions.json, else fusions.json.gz."""
    for name in ("results.json", "fusions.json"):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    if (folder / "fusions.json.gz").is_file():
        with gzip.open(folder / "fusions.json.gz", "rt") as f:
            return json.load(f)
    sys.exit(
        f"{folder}: no results.json, fusions.json or fusions.json.gz there; name an s3-eval output folder"
    )


def paired_rows(
    rows: list[dict], methods: list[str], compare: list[tuple[str, str]] = COMPARE
) -> list[list[str]]:
    """``compare`` pairs present in ``methods``, per length (and over all lengths when there are several)."""
    body = []
    lengths = sorted({r["length"] for r in rows})
    for a, b in compare:
        if a in methods and b in methods:
            for length in lengths:
                at = [r for r in rows if r["length"] == length]
                body += paired_lines(f"{a} vs {b} @{length}", paired_by_family(at, a, b))
            if len(lengths) > 1:
                body += paired_lines(f"{a} vs {b} @all", paired_by_family(rows, a, b))
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="s3-eval output folders, or NAME=FOLDER to rename its method")
    p.add_argument("--out", help="also write the tables here (markdown)")
    p.add_argument("--compare", action="append", help="A,B: pair method A against B (repeatable)")
    args = p.parse_args(argv)
    compare = [tuple(c.split(",", 1)) for c in args.compare] if args.compare else COMPARE
    if any(len(c) != 2 for c in compare):
        p.error("--compare takes two method names, A,B")
    rows, commits = [], set()
    for spec in args.runs:
        got, env = load(spec)
        rows += got
        commits.add(f"{env.get('git_commit')}{' (dirty)' if env.get('git_dirty') else ''}")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    command = " ".join(["python bench/summarize_runs.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        f"`{command}`",
        "",
        f"Runs: {', '.join(args.runs)}; commits: {', '.join(sorted(commits))}; {len(rows)} rows.",
        "",
    ]
    lines += ["## Evidence recall", "", *evidence_grid(rows, methods), ""]
    lines += ["## Paired evidence recall", "", *paired_table(paired_rows(rows, methods, compare)), ""]
    if any(r.get("score") is not None for r in rows):
        lines += ["## Answer score", "", *evidence_grid(rows, methods, "score"), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")  # the rows stay in the runs' own results.json
    return 0


if __name__ == "__main__":
    sys.exit(main())
