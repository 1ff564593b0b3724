"""Paired comparisons of two methods (or two runs) on the same samples: wins / ties / losses and a bootstrap
95% confidence interval of the mean difference.

Rows pair by (task, length, depth, sample, base_seed); the difference of a pair is ``a - b`` of ``metric``
(default evidence recall). Rows without a partner, and pairs where either value is missing (None: no
evidence, or no generated answer), are left out and counted (``unpaired``, ``no_value``).

The interval is a two-stage cluster bootstrap (``RESAMPLES`` resamples, RNG seeded with ``BOOTSTRAP_SEED``):
resample the tasks with replacement, then the pairs within each task drawn, and take the mean of all the
pairs drawn; the 2.5th and 97.5th percentiles of those means bound the interval. Samples of one task share
a generator, so they are not independent across tasks; resampling tasks widens the interval accordingly.
With a single task it is the plain bootstrap over its pairs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from s3attn.evaluation.plan import FAMILY_ORDER, family_of

RESAMPLES = 2000
BOOTSTRAP_SEED = 0
PAIR_KEYS = ("task", "length", "depth", "sample", "base_seed")
TIE = 1e-12
Row = Mapping[str, Any]


class Paired(NamedTuple):
    wins: int  # pairs where a > b
    ties: int
    losses: int
    n: int  # pairs compared
    mean_diff: float | None  # mean of a - b; None without pairs
    ci_low: float | None
    ci_high: float | None
    unpaired: int = 0  # rows of a or b without a partner
    no_value: int = 0  # pairs left out because a value is None


def pair_key(row: Row) -> tuple:
    """(task, length, depth, sample, base_seed) of a row (base_seed 0 for rows of runs before seeds)."""
    return (row["task"], int(row["length"]), row["depth"], int(row["sample"]), int(row.get("base_seed", 0)))


def bootstrap_ci(
    diffs_by_cluster: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95% interval of the pooled mean by the two-stage cluster bootstrap (clusters, then items)."""
    clusters = [np.asarray(d, dtype=np.float64) for d in diffs_by_cluster if len(d)]
    rng = np.random.default_rng(seed)
    n_c = len(clusters)
    sizes = np.array([len(d) for d in clusters])
    chosen = rng.integers(0, n_c, size=(resamples, n_c)) if n_c > 1 else np.zeros((resamples, 1), int)
    # sums[c, b, j]: the sum of cluster c's pairs resampled for slot j of resample b (used where c is chosen)
    sums = np.stack(
        [
            np.stack([d[rng.integers(0, len(d), (resamples, len(d)))].sum(-1) for _ in range(n_c)], 1)
            for d in clusters
        ]
    )
    picked = np.take_along_axis(sums.transpose(1, 2, 0), chosen[..., None], axis=2)[..., 0]
    means = picked.sum(1) / sizes[chosen].sum(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired(
    rows: Iterable[Row],
    method_a: str,
    method_b: str,
    metric: str = "evidence_recall",
    rows_b: Iterable[Row] | None = None,
) -> Paired:
    """Compare ``method_a`` with ``method_b`` on the samples both answered; ``rows_b``: take ``method_b``'s
    rows from there (another run) instead of ``rows``."""
    rows = list(rows)
    a = {pair_key(r): r for r in rows if r["method"] == method_a}
    b = {pair_key(r): r for r in (rows if rows_b is None else rows_b) if r["method"] == method_b}
    unpaired = len(a.keys() - b.keys()) + len(b.keys() - a.keys())
    by_task: dict[str, list[float]] = defaultdict(list)
    no_value = 0
    for key in sorted(a.keys() & b.keys(), key=repr):  # a fixed order: the bootstrap is reproducible
        va, vb = a[key].get(metric), b[key].get(metric)
        if va is None or vb is None:
            no_value += 1
        else:
            by_task[key[0]].append(float(va) - float(vb))
    diffs = np.array([d for task in sorted(by_task) for d in by_task[task]])
    if not diffs.size:
        return Paired(0, 0, 0, 0, None, None, None, unpaired, no_value)
    low, high = bootstrap_ci([np.array(by_task[t]) for t in sorted(by_task)])
    wins, losses = int((diffs > TIE).sum()), int((diffs < -TIE).sum())
    return Paired(wins, len(diffs) - wins - losses, losses, len(diffs), float(diffs.mean()), low, high,
                  unpaired, no_value)  # fmt: skip


def paired_by_family(
    rows: Sequence[Row], method_a: str, method_b: str, metric: str = "evidence_recall", rows_b=None
) -> dict[str, Paired]:
    """``paired`` per task family (``plan.FAMILY``) present, then ``overall``."""
    rows_b = list(rows_b) if rows_b is not None else None
    present = {family_of(r["task"]) for r in rows}
    families = [f for f in FAMILY_ORDER if f in present] + sorted(present - set(FAMILY_ORDER))
    out = {}
    for fam in families:
        mine = [r for r in rows if family_of(r["task"]) == fam]
        other = None if rows_b is None else [r for r in rows_b if family_of(r["task"]) == fam]
        out[fam] = paired(mine, method_a, method_b, metric, other)
    out["overall"] = paired(rows, method_a, method_b, metric, rows_b)
    return out


def method_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair (a, b) of ``methods`` (in report order), a the later one: s3 vs bm25, hybrid vs s3..."""
    return [(methods[j], methods[i]) for j in range(len(methods)) for i in range(j)]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def paired_lines(label: str, table: Mapping[str, Paired]) -> list[list[str]]:
    """Table body rows ``[label, family, W/T/L, n, mean diff, 95% CI]`` of one comparison."""
    return [
        [
            label,
            fam,
            f"{p.wins}/{p.ties}/{p.losses}",
            str(p.n),
            _fmt(p.mean_diff),
            "n/a" if p.ci_low is None else f"[{p.ci_low:+.3f}, {p.ci_high:+.3f}]",
        ]  # fmt: skip
        for fam, p in table.items()
    ]


PAIRED_HEADER = ["comparison", "family", "W/T/L", "n", "mean diff", "95% CI"]


def paired_markdown(
    rows: Sequence[Row], methods: Sequence[str], metric: str = "evidence_recall"
) -> list[str]:
    """A markdown table of every method pair, per family and overall (empty when fewer than 2 methods)."""
    body = []
    for a, b in method_pairs(methods):
        body += paired_lines(f"{a} vs {b}", paired_by_family(rows, a, b, metric))
    return paired_table(body) if body else []


def paired_table(body: Sequence[Sequence[str]]) -> list[str]:
    """Markdown lines of a paired table (``PAIRED_HEADER``) over rows from :func:`paired_lines`."""
    header = "| " + " | ".join(PAIRED_HEADER) + " |"
    sep = "|" + "|".join("---" for _ in PAIRED_HEADER) + "|"
    return [header, sep] + ["| " + " | ".join(r) + " |" for r in body]
