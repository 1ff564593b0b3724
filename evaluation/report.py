"""Evaluation report: aggregate ``EvalRow`` dicts, write results.json, results.md, scores.png, evidence.png.

Rows are plain mappings (``EvalRow._asdict()`` or the ``rows`` of a results.json), so a report can be
rebuilt from a saved run. results.md leads with what does not depend on the reader model's wording: evidence
recall per task family x length x method (means over the samples with evidence), then the paired
comparison of every two methods on evidence recall (``s3attn.evaluation.paired``: wins / ties / losses, mean
difference, bootstrap 95% CI), then the answer scores per task x length x method and the rest. Aggregates
are means over samples (and depths), leaving out missing values (no evidence; no score in a run without
generation); the fidelity ratio of a (task, length) is mean score of ``hybrid`` / mean score of ``full``
(None where full scores 0 or either is missing). Plots are drawn with matplotlib's Agg canvas, no pyplot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from s3attn.evaluation.paired import method_pairs, paired_by_family, paired_markdown
from s3attn.evaluation.plan import FAMILY_ORDER, family_of
from s3attn.paths import atomic_write_json, atomic_write_text

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
SCORES_PNG = "scores.png"
EVIDENCE_PNG = "evidence.png"
METHOD_ORDER = ("full", "bm25", "streaming", "s3", "hybrid")


class AggRow(NamedTuple):
    task: str
    length: int
    method: str
    n: int
    score: float | None  # None: no generated answer
    recall: float
    prompt_tokens: float
    seconds: float


class EvidenceRow(NamedTuple):
    family: str
    length: int
    method: str
    n: int  # samples with evidence
    evidence_recall: float


class MethodRow(NamedTuple):
    method: str
    n: int
    score: float | None
    recall: float
    prompt_tokens: float
    max_prompt_tokens: int
    seconds: float
    peak_rss_mb: float


class BuildRow(NamedTuple):
    length: int
    samples: int
    doc_tokens: float
    build_seconds: float


class ReportFiles(NamedTuple):
    json: Path
    markdown: Path
    plot: Path
    evidence_plot: Path | None  # None when no sample has evidence


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _order(items: Iterable[str], preferred: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(items))
    return [x for x in preferred if x in seen] + [x for x in seen if x not in preferred]


def methods_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return _order((r["method"] for r in rows), METHOD_ORDER)


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[AggRow]:
    """Mean score, context recall, prompt tokens and seconds per (task, length, method)."""
    groups: dict[tuple[str, int, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], int(r["length"]), r["method"])].append(r)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    rank = {m: i for i, m in enumerate(methods_of(rows))}
    out = [
        AggRow(
            task,
            length,
            method,
            len(g),
            _mean_or_none(r["score"] for r in g),
            _mean(r["recall"] for r in g),
            _mean(r["prompt_tokens"] for r in g),
            _mean(r["seconds"] for r in g),
        )
        for (task, length, method), g in groups.items()
    ]
    return sorted(out, key=lambda a: (tasks.index(a.task), a.length, rank[a.method]))


def fidelity(
    agg: Sequence[AggRow], num: str = "hybrid", den: str = "full"
) -> dict[tuple[str, int], float | None]:
    """Per (task, length): mean score of ``num`` / mean score of ``den``; None when undefined."""
    by = {(a.task, a.length, a.method): a.score for a in agg}
    out: dict[tuple[str, int], float | None] = {}
    for a in agg:
        key = (a.task, a.length)
        top, bottom = by.get((*key, num)), by.get((*key, den))
        out[key] = top / bottom if top is not None and bottom else None
    return out


def method_summary(rows: Sequence[Mapping[str, Any]]) -> list[MethodRow]:
    out = []
    for m in methods_of(rows):
        g = [r for r in rows if r["method"] == m]
        out.append(
            MethodRow(
                m,
                len(g),
                _mean_or_none(r["score"] for r in g),
                _mean(r["recall"] for r in g),
                _mean(r["prompt_tokens"] for r in g),
                max(int(r["prompt_tokens"]) for r in g),
                _mean(r["seconds"] for r in g),
                max(float(r["peak_rss_mb"]) for r in g),
            )
        )
    return out


def families_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return _order((family_of(r["task"]) for r in rows), FAMILY_ORDER)


def evidence_summary(rows: Sequence[Mapping[str, Any]], metric: str = "evidence_recall") -> list[EvidenceRow]:
    """Mean evidence recall (or another row ``metric``) per (family, length, method), over the rows that
    have a value."""
    groups: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.get(metric) is not None:
            groups[(family_of(r["task"]), int(r["length"]), r["method"])].append(float(r[metric]))
    fams, rank = families_of(rows), {m: i for i, m in enumerate(methods_of(rows))}
    out = [EvidenceRow(f, n, m, len(g), _mean(g)) for (f, n, m), g in groups.items()]
    return sorted(out, key=lambda e: (fams.index(e.family), e.length, rank[e.method]))


def paired_summary(rows: Sequence[Mapping[str, Any]], metric: str = "evidence_recall") -> list[dict]:
    """Every method pair, per family and overall, JSON-ready."""
    return [
        {"a": a, "b": b, "family": fam, "metric": metric, **p._asdict()}
        for a, b in method_pairs(methods_of(rows))
        for fam, p in paired_by_family(rows, a, b, metric).items()
    ]


def build_summary(rows: Sequence[Mapping[str, Any]]) -> list[BuildRow]:
    """One entry per sample (its build is shared by its methods), averaged per length."""
    samples: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        samples.setdefault((r["task"], r["length"], r["depth"], r["sample"], r["seed"]), r)
    per_len: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in samples.values():
        per_len[int(r["length"])].append(r)
    return [
        BuildRow(n, len(g), _mean(r["doc_tokens"] for r in g), _mean(r["build_seconds"] for r in g))
        for n, g in sorted(per_len.items())
    ]


def summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Everything the markdown shows, JSON-ready."""
    agg = aggregate(rows)
    fid = fidelity(agg)
    return {
        "evidence_by_family_length_method": [e._asdict() for e in evidence_summary(rows)],
        "paired_evidence_recall": paired_summary(rows),
        "by_task_length_method": [a._asdict() for a in agg],
        "fidelity_hybrid_over_full": [{"task": t, "length": n, "ratio": v} for (t, n), v in fid.items()],
        "by_method": [m._asdict() for m in method_summary(rows)],
        "build": [b._asdict() for b in build_summary(rows)],
    }


# ---- markdown --------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _grid(agg: Sequence[AggRow], methods: list[str], field: str, with_fidelity: bool) -> list[str]:
    cells = {(a.task, a.length, a.method): a for a in agg}
    keys = list(dict.fromkeys((a.task, a.length) for a in agg))
    fid = fidelity(agg) if with_fidelity else {}
    header = ["task", "length", "n", *methods] + (["hybrid/full"] if with_fidelity else [])
    body = []
    for task, length in keys:
        row = [
            task,
            str(length),
            str(max(cells[(task, length, m)].n for m in methods if (task, length, m) in cells)),
        ]
        for m in methods:
            a = cells.get((task, length, m))
            row.append(_fmt(getattr(a, field)) if a else "-")
        if with_fidelity:
            row.append(_fmt(fid.get((task, length)), 2))
        body.append(row)
    return _table(header, body)


def evidence_grid(
    rows: Sequence[Mapping[str, Any]], methods: Sequence[str], metric: str = "evidence_recall"
) -> list[str]:
    """Markdown: mean ``metric`` (n) per family x length (rows) and method (columns)."""
    ev = evidence_summary(rows, metric)
    if not ev:
        return ["No sample has localized evidence (meta['evidence'])."]
    cells = {(e.family, e.length, e.method): e for e in ev}
    body = []
    for fam, length in dict.fromkeys((e.family, e.length) for e in ev):
        row = [fam, str(length)]
        for m in methods:
            e = cells.get((fam, length, m))
            row.append(f"{e.evidence_recall:.3f} ({e.n})" if e else "-")
        body.append(row)
    return _table(["family", "length", *methods], body)


def _method_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    header = ["method", "answers", "score", "recall", "evidence recall", "prompt tokens (mean)",
              "prompt tokens (max)", "s/question", "peak RSS MiB"]  # fmt: skip
    body = []
    for m in method_summary(rows):
        ev = _mean_or_none(r.get("evidence_recall") for r in rows if r["method"] == m.method)
        body.append([m.method, str(m.n), _fmt(m.score), _fmt(m.recall), _fmt(ev), f"{m.prompt_tokens:.0f}",
                     str(m.max_prompt_tokens), _fmt(m.seconds, 2), f"{m.peak_rss_mb:.0f}"])  # fmt: skip
    return _table(header, body)


def markdown(rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any], env: Mapping[str, Any]) -> str:
    """results.md: setup; evidence recall per family x length x method; paired method comparisons; score
    and answer-string recall grids per task x length x method; per-method costs; index build times."""
    if not rows:
        return "# s3-eval results\n\nNo rows.\n"
    agg = aggregate(rows)
    methods = methods_of(rows)
    paired_table = paired_markdown(rows, methods) or ["Fewer than two methods: nothing to pair."]
    lines = [
        "# s3-eval results",
        "",
        f"Model `{env.get('model_id', '?')}` (window {env.get('model_window', '?')}), SAE release "
        f"`{env.get('sae_release', '?')}` layers {env.get('sae_layers', '?')}, device {env.get('device', '?')}, "
        f"precision {env.get('dtype', 'float32')}.",
        f"Budget {config.get('budget')} context tokens for bm25/streaming/s3/hybrid; full = whole context "
        f"middle-truncated to the window. {len(rows)} answers.",
        "",
        "## Evidence recall (fraction of evidence items at least half fed; mean (samples with evidence))",
        "",
        *evidence_grid(rows, methods),
        "",
        "## Paired evidence recall (a - b on the same samples; W/T/L, mean, task-cluster bootstrap 95% CI)",
        "",
        *paired_table,
        "",
        "## Mean score (metric of each task, 0-1)",
        "",
        *_grid(agg, methods, "score", with_fidelity=True),
        "",
        "## Answer-string recall (fraction of reference answers present in the context fed)",
        "",
        *_grid(agg, methods, "recall", with_fidelity=False),
        "",
        "## Per method",
        "",
        *_method_table(rows),
        "",
        "## Index build (per sample; the questions of one context share its build)",
        "",
    ]
    lines += _table(
        ["length", "samples", "doc tokens (mean)", "build s (mean)"],
        [
            [str(b.length), str(b.samples), f"{b.doc_tokens:.0f}", _fmt(b.build_seconds, 2)]
            for b in build_summary(rows)
        ],
    )
    return "\n".join(lines) + "\n"


# ---- plot ------------------------------------------------------------------------------------------------


def plot(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """scores.png: mean score vs context length per method (all tasks), and seconds/question."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax_score, ax_time = fig.subplots(1, 2)
    lengths = sorted({int(r["length"]) for r in rows})
    for m in methods_of(rows):
        g = [r for r in rows if r["method"] == m]
        xs = [n for n in lengths if any(int(r["length"]) == n for r in g)]
        score = [_mean_or_none(r["score"] for r in g if int(r["length"]) == n) for n in xs]
        score = [float("nan") if v is None else v for v in score]
        secs = [_mean(r["seconds"] for r in g if int(r["length"]) == n) for n in xs]
        ax_score.plot(xs, score, marker="o", label=m)
        ax_time.plot(xs, secs, marker="o", label=m)
    for ax, title, ylabel in (
        (ax_score, "Score vs context length", "mean score"),
        (ax_time, "Seconds per question (retrieve + generate)", "seconds"),
    ):
        if len(lengths) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n) for n in lengths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax_score.set_ylim(-0.02, 1.02)
    ax_score.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def plot_evidence(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """evidence.png: mean evidence recall per task family (all lengths), the methods side by side; None
    (nothing written) when no row has evidence."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    have = [r for r in rows if r.get("evidence_recall") is not None]
    if not have:
        Path(path).unlink(missing_ok=True)  # an earlier run's plot would not be this run's
        return None
    fams, methods = families_of(have), methods_of(have)
    fig = Figure(figsize=(max(6.0, 1.6 * len(fams) + 2), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        mine = [r for r in have if r["method"] == m]
        means = [_mean_or_none(r["evidence_recall"] for r in mine if family_of(r["task"]) == f) for f in fams]
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(fams))]
        ax.bar(xs, [float("nan") if v is None else v for v in means], width, label=m)
    ax.set_xticks(range(len(fams)), fams)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("mean evidence recall")
    ax.set_title("Evidence recall per task family (all lengths)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def write_report(
    out: str | Path, rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any], env: Mapping[str, Any]
) -> ReportFiles:
    """Write results.json (rows + config + environment + summary), results.md, scores.png and (when some
    sample has evidence) evidence.png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    data = {"config": dict(config), "environment": dict(env), "summary": summary(rows), "rows": rows}
    atomic_write_json(out / RESULTS_JSON, data)
    atomic_write_text(out / RESULTS_MD, markdown(rows, config, env))
    png = plot(rows, out / SCORES_PNG) if rows else out / SCORES_PNG
    return ReportFiles(out / RESULTS_JSON, out / RESULTS_MD, png, plot_evidence(rows, out / EVIDENCE_PNG))
