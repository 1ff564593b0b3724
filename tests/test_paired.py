"""Paired comparisons: wins / ties / losses, the task-cluster bootstrap CI, partners, per family; and
bench/compare_runs.py's paired table between two runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from s3attn.evaluation.paired import bootstrap_ci, method_pairs, paired, paired_by_family, paired_markdown


def _row(task, method, value, sample=0, length=1024, base_seed=0, depth=None) -> dict:
    return dict(task=task, length=length, depth=depth, sample=sample, base_seed=base_seed, method=method,
                evidence_recall=value, score=value)  # fmt: skip


def _rows(values_a, values_b, tasks=("niah",)) -> list[dict]:
    rows = []
    for task in tasks:
        for i, (va, vb) in enumerate(zip(values_a, values_b)):
            rows += [_row(task, "a", va, sample=i), _row(task, "b", vb, sample=i)]
    return rows


def test_identical_methods_tie_with_a_zero_interval():
    rng = np.random.default_rng(1)
    vals = list(rng.random(20))
    p = paired(_rows(vals, vals, tasks=("niah", "ruler_vt", "drop_qa")), "a", "b")
    assert (p.wins, p.ties, p.losses, p.n) == (0, 60, 0, 60)
    assert (p.mean_diff, p.ci_low, p.ci_high) == (0.0, 0.0, 0.0)
    assert (p.unpaired, p.no_value) == (0, 0)


def test_constant_shift_gives_a_point_interval():
    vals = [0.0, 0.5, 0.25, 0.0, 1.0]
    p = paired(_rows([v + 1 for v in vals], vals, tasks=("niah", "ruler_vt")), "a", "b")
    assert (p.wins, p.ties, p.losses) == (10, 0, 0)
    assert p.mean_diff == pytest.approx(1.0)
    assert p.ci_low == pytest.approx(1.0) and p.ci_high == pytest.approx(1.0)


def test_a_clear_difference_excludes_zero_and_a_noisy_one_does_not():
    rng = np.random.default_rng(2)
    b = list(rng.random(40) * 0.5)
    better = [v + 0.3 + 0.05 * rng.standard_normal() for v in b]
    p = paired(_rows(better, b, tasks=("niah", "ruler_vt", "multidoc_qa")), "a", "b")
    assert 0 < p.ci_low < p.mean_diff < p.ci_high and p.wins > 100
    noisy = [v + rng.choice([-0.3, 0.3]) for v in b]
    q = paired(_rows(noisy, b), "a", "b")
    assert q.ci_low < 0 < q.ci_high


def test_cluster_bootstrap_reduces_to_the_plain_one_on_one_task():
    diffs = np.random.default_rng(3).random(30)
    low, high = bootstrap_ci([diffs])
    rng = np.random.default_rng(0)
    rng.integers(0, 1, size=(2000, 1))  # the task draw the function makes (one task: not drawn)
    plain = diffs[rng.integers(0, 30, (2000, 30))].mean(1)
    assert low < diffs.mean() < high
    assert high - low == pytest.approx(np.percentile(plain, 97.5) - np.percentile(plain, 2.5), rel=0.25)
    # a task whose samples all differ by 1 next to one where they differ by 0: tasks are resampled too
    low2, high2 = bootstrap_ci([np.ones(50), np.zeros(50)])
    assert low2 == 0.0 and high2 == 1.0


def test_rows_without_a_partner_or_a_value_are_left_out_and_counted():
    rows = _rows([1.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    rows.append(_row("niah", "a", 1.0, sample=7))  # no partner
    rows.append(_row("niah", "b", 1.0, sample=8, base_seed=100))  # no partner (other base seed)
    rows += [_row("niah", "a", None, sample=9), _row("niah", "b", 1.0, sample=9)]  # no evidence
    p = paired(rows, "a", "b")
    assert (p.wins, p.ties, p.losses, p.n, p.unpaired, p.no_value) == (2, 1, 0, 3, 2, 1)
    none = paired(rows, "a", "missing")
    assert none.n == 0 and none.mean_diff is None and none.ci_low is None and none.unpaired == 5


def test_per_family_tables_and_markdown():
    rows = _rows([1.0, 1.0], [0.0, 1.0], tasks=("niah", "paraphrase_niah", "ruler_niah_single"))
    table = paired_by_family(rows, "a", "b")
    assert list(table) == ["lexical", "paraphrase", "overall"]
    assert table["lexical"].n == 4 and table["paraphrase"].n == 2 and table["overall"].n == 6
    assert method_pairs(["bm25", "s3", "hybrid"]) == [("s3", "bm25"), ("hybrid", "bm25"), ("hybrid", "s3")]
    md = paired_markdown(rows, ["b", "a"])
    assert md[0].startswith("| comparison | family | W/T/L |")
    assert "| a vs b | overall | 3/3/0 | 6 | +0.500 |" in md[-1]
    assert paired_markdown(rows, ["a"]) == []


def _compare_runs():
    path = Path(__file__).resolve().parent.parent / "bench" / "compare_runs.py"
    spec = importlib.util.spec_from_file_location("compare_runs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_runs_prints_the_paired_table(tmp_path, capsys):
    base = _rows([0.0, 1.0, 0.0], [0.0, 0.0, 0.0], tasks=("niah", "drop_qa"))
    better = [dict(r, evidence_recall=1.0) if r["method"] == "a" else r for r in base]
    for name, rows in (("A", better), ("B", base)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"rows": rows}))
    compare = _compare_runs()
    argv = [str(tmp_path / "A" / "results.json"), str(tmp_path / "B" / "results.json"), "--method-a", "a"]
    assert compare.main([*argv, "--method-b", "a"]) == 1  # rows differ
    out = capsys.readouterr().out
    assert "differing: 4" in out and "paired evidence_recall (A - B):" in out
    overall = next(line for line in out.splitlines() if "overall" in line).split()
    assert overall[3:7] == ["overall", "4/2/0", "6", "+0.667"]
    assert compare.main([str(tmp_path / "B" / "results.json")] * 2 + ["--method-b", "b"]) == 0
