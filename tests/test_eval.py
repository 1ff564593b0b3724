"""s3-eval harness: end to end on a tiny random model + tiny SAE release, plus aggregation and markdown.

The tiny model answers garbage; the end-to-end test checks the plumbing: files, complete rows, scores in
[0, 1], the token budgets fed, and that 'full' / 'streaming' keep the head and the tail of the context.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import filler_words, tiny_model, tiny_tokenizer

from s3attn.errors import S3Error
from s3attn.evaluation import report
from s3attn.evaluation import tasks as T
from s3attn.evaluation.cli import main
from s3attn.evaluation.evaluate import (
    SEPARATOR_ROOM,
    EvalConfig,
    EvalRow,
    build_prompt,
    check_config,
    context_recall,
    method_plan,
    new_tokens_for,
)
from s3attn.evaluation.plan import METHODS, plan
from s3attn.evaluation.tasks import Sample
from s3attn.retrieval.retriever import RetrievalConfig

CHAT = (
    "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}east west {% endif %}"
)
BUDGET, WINDOW, NEW_TOKENS, LENGTH = 64, 160, 4, 200


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory) -> tuple[Path, Path]:
    """(model folder, SAE release): a tiny Llama with a chat template, random SAEs on layers 1 and 3."""
    from s3attn.models.loading import load_model
    from s3attn.saes import SaeConfig, SaeMeta, TopKSAE, write_release

    root = tmp_path_factory.mktemp("eval")
    model_dir = root / "tiny-chat"
    tiny_model("llama", attn_implementation="sdpa").save_pretrained(model_dir)
    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    tok.save_pretrained(model_dir)
    model_id = load_model(str(model_dir)).model_id
    saes, metas = {}, {}
    for layer in (1, 3):
        torch.manual_seed(layer)
        saes[layer] = TopKSAE(SaeConfig(d_in=16, num_latents=64, k=4))
        metas[layer] = SaeMeta(model_id=model_id, layer=layer, sites=("k", "q"), head_dim=16)
    info = {"model_id": model_id, "dataset": "none", "dataset_license": "none", "context_length": 64}
    return model_dir, write_release(root / "rel", saes, metas, info)


@pytest.fixture(scope="module")
def e2e(tiny_setup, tmp_path_factory) -> tuple[dict, Path]:
    model_dir, release = tiny_setup
    out = tmp_path_factory.mktemp("run") / "eval"
    argv = ["--sae", str(release), "--model", str(model_dir), "--tasks", "niah,ruler_vt", "--lengths",
            str(LENGTH), "--depths", "50", "--samples", "1", "--budget", str(BUDGET), "--max-context",
            str(WINDOW), "--max-new-tokens", str(NEW_TOKENS), "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / report.RESULTS_JSON).read_text()), out


def test_end_to_end_files_and_rows(e2e):
    data, out = e2e
    assert (out / report.RESULTS_MD).read_text().startswith("# s3-eval results")
    assert (out / report.SCORES_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "partial" not in data and data["config"]["budget"] == BUDGET
    assert data["environment"]["sae_layers"] == [1, 3] and data["environment"]["model_window"] == WINDOW
    rows = data["rows"]
    assert len(rows) == 2 * len(METHODS)
    assert sorted((r["task"], r["method"]) for r in rows) == sorted(
        (t, m) for t in ("niah", "ruler_vt") for m in METHODS
    )
    for r in rows:
        assert set(r) == set(EvalRow._fields)
        assert all(v is not None for k, v in r.items() if k not in ("depth", "evidence_recall")), r
        assert 0.0 <= r["score"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
        assert (r["base_seed"], r["split"]) == (0, "tuning")
        assert (r["evidence_recall"] is None) == (not r["evidence_coverage"])
        assert r["seconds"] > 0 and r["build_seconds"] > 0 and r["peak_rss_mb"] > 0
        assert r["doc_tokens"] > BUDGET and r["prompt_tokens"] >= r["overhead_tokens"]
    assert {r["depth"] for r in rows if r["task"] == "niah"} == {50.0}
    assert {r["depth"] for r in rows if r["task"] == "ruler_vt"} == {None}
    # one build per sample, shared by its methods
    for task in ("niah", "ruler_vt"):
        assert len({r["build_seconds"] for r in rows if r["task"] == task}) == 1
    summary = data["summary"]
    assert len(summary["by_task_length_method"]) == 2 * len(METHODS)
    assert {m["method"] for m in summary["by_method"]} == set(METHODS)


def test_index_cache_reuses_builds(tiny_setup, tmp_path, monkeypatch):
    """--index-cache: the first run builds and keeps one index per sample; a second run builds nothing and
    answers the same; a rewritten SAE release gets new keys."""
    from s3attn.evaluation import index_cache
    from s3attn.index_builder import pipeline

    model_dir, release = tiny_setup
    cache = tmp_path / "cache"
    argv = ["--sae", str(release), "--model", str(model_dir), "--tasks", "niah,ruler_vt", "--lengths",
            str(LENGTH), "--depths", "50", "--samples", "1", "--budget", str(BUDGET), "--max-context",
            str(WINDOW), "--max-new-tokens", str(NEW_TOKENS), "--methods", "bm25,s3,hybrid", "--no-progress",
            "--index-cache", str(cache)]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 2 and not any(e.startswith(".tmp-") for e in entries)
    assert all((cache / e / index_cache.INDEX_DIR / "manifest.json").is_file() for e in entries)

    def no_build(*args, **kwargs):
        raise AssertionError("a cached index was rebuilt")

    monkeypatch.setattr(pipeline, "build_index", no_build)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    rows = [json.loads((tmp_path / d / report.RESULTS_JSON).read_text())["rows"] for d in "ab"]
    same = ("task", "method", "score", "spans", "answer", "context_tokens", "build_seconds")
    assert [[r[k] for k in same] for r in rows[0]] == [[r[k] for k in same] for r in rows[1]]
    identity = {"release": index_cache.release_fingerprint(release)}
    key = index_cache.cache_key("text", identity)
    weights = next(p for p in Path(release).rglob("*") if p.suffix == ".safetensors")
    weights.touch()
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert index_cache.cache_key("text", {"release": index_cache.release_fingerprint(release)}) != key


def test_end_to_end_budgets(e2e):
    rows = e2e[0]["rows"]
    for r in rows:
        spans = r["spans"]
        assert all(0 <= s < e <= r["doc_tokens"] for s, e in spans)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "spans in document order, disjoint"
        assert r["context_tokens"] == sum(e - s for s, e in spans) <= r["budget"]
        # the prompt is the template overhead + the context (+ at most a few separator tokens per join)
        assert r["prompt_tokens"] <= r["overhead_tokens"] + r["context_tokens"] + 4 * len(spans)
        if r["method"] != "full":
            assert r["budget"] == BUDGET
            assert r["prompt_tokens"] <= BUDGET + r["overhead_tokens"] + 4 * len(spans)


def test_end_to_end_full_and_streaming_keep_head_and_tail(e2e):
    rows = e2e[0]["rows"]
    for r in rows:
        n = r["doc_tokens"]
        if r["method"] == "full":
            room = (
                WINDOW
                - r["overhead_tokens"]
                - new_tokens_for(r["task"], EvalConfig(retrieval=RetrievalConfig(max_new_tokens=NEW_TOKENS)))
            )
            room -= SEPARATOR_ROOM
            assert r["budget"] == room and 0 < room < n  # the window forces a middle truncation
            assert r["spans"] == [[0, room // 2], [n - (room - room // 2), n]]
            assert r["prompt_tokens"] + NEW_TOKENS <= WINDOW
        if r["method"] == "streaming":
            assert r["spans"] == [[0, BUDGET // 2], [n - BUDGET // 2, n]]


NEEDLE = "the queen of paris is old"


def _fake_generator(name: str):
    """A shared-context task as the harness sees it: the context depends on the seed only, the question on
    the number; the needle is the evidence."""

    def generate(haystack, tokenizer_len, length_tokens, seed, number) -> Sample:
        words = filler_words(length_tokens - 6, seed).split()
        context = " ".join([*words[: len(words) // 3], NEEDLE, *words[len(words) // 3 :]])
        start = context.index(NEEDLE)
        meta = {"evidence": [[start, start + len(NEEDLE)]]}
        return Sample(name, context, f"where is the queen {number}", ["paris"], "string_match_all", meta)

    return generate


def test_shared_contexts_reuse_one_index_retrieval_only(tiny_setup, tmp_path, monkeypatch):
    """literal_niah + paraphrase_niah share their contexts: one index per (base seed, length) serves every
    question of both; --no-generate rows have no answer and no score but an evidence recall."""
    from s3attn.evaluation import index_cache
    from s3attn.evaluation.evidence import evidence_coverage, evidence_recall, evidence_token_ranges

    for name in ("literal_niah", "paraphrase_niah"):
        monkeypatch.setattr(T, name, _fake_generator(name), raising=False)
    built = []
    real = index_cache.sample_index

    def counting(task, context, *args, **kwargs):
        built.append(context)
        return real(task, context, *args, **kwargs)

    monkeypatch.setattr(index_cache, "sample_index", counting)
    model_dir, release = tiny_setup
    out = tmp_path / "run"
    argv = ["--sae", str(release), "--model", str(model_dir), "--tasks", "literal_niah,paraphrase_niah",
            "--lengths", str(LENGTH), "--samples", "2", "--seeds", "0,100", "--methods", "full,bm25,s3",
            "--budget", str(BUDGET), "--max-context", str(WINDOW), "--no-generate", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert len(built) == 2 and built[0] != built[1]  # one per base seed
    data = json.loads((out / report.RESULTS_JSON).read_text())
    rows = data["rows"]
    assert len(rows) == 2 * 2 * 2 * 3
    assert {(r["base_seed"], r["split"]) for r in rows} == {(0, "tuning"), (100, "held-out")}
    assert {r["answer"] for r in rows} == {""} and {r["score"] for r in rows} == {None}
    tok = tiny_tokenizer()
    for r in rows:
        context = built[0] if r["base_seed"] == 0 else built[1]
        ranges = evidence_token_ranges(tok, context, [[context.index(NEEDLE), context.index(NEEDLE) + 25]])
        assert r["evidence_coverage"] == evidence_coverage(ranges, r["spans"])
        assert r["evidence_recall"] == evidence_recall(r["evidence_coverage"])
        assert r["prompt_tokens"] >= r["overhead_tokens"] + r["context_tokens"] // 2
    assert data["environment"]["git_dirty"] in (True, False, None)
    md = (out / report.RESULTS_MD).read_text()
    assert "## Evidence recall" in md and "| lexical | 200 |" in md and "s3 vs bm25" in md
    assert (out / report.EVIDENCE_PNG).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tasks", "niah,bogus"], "--tasks bogus"),
        (["--methods", "full,magic"], "--methods magic"),
        (["--lengths", ""], "--lengths is empty"),
        (["--sae", "/nonexistent/release"], "--sae /nonexistent/release"),
        (["--depths", "120"], "--depths"),
        (["--index-cache", "/dev/null/cache"], "--index-cache /dev/null/cache"),
        (["--fusion", "sum"], "--fusion sum"),
        (["--bm25-weight", "1.5"], "--bm25-weight 1.5"),
        (["--min-relevance", "-0.1"], "--min-relevance -0.1"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("s3-eval: error: ") and message in err and "\n" not in err


# ---- units -------------------------------------------------------------------------------------------------


def test_plan_counts_and_stable_seeds():
    cfg = check_config(
        EvalConfig(tasks=["niah", "ruler_cwe", "niah"], lengths=[512, 1024], depths=[0, 50, 100], samples=2)
    )
    items = plan(cfg)
    assert len(items) == 2 * 3 * 2 + 2 * 2  # niah: lengths x depths x samples; cwe: lengths x samples
    assert sum(i.task == "niah" for i in items) == 12 and cfg.tasks == ["niah", "ruler_cwe"]
    assert len({i.seed for i in items}) == len(items)
    assert [i.seed for i in plan(cfg)] == [i.seed for i in items]
    cfg2 = check_config(
        EvalConfig(tasks=["niah", "ruler_cwe"], lengths=[512, 1024], depths=[0, 50, 100], samples=2, seed=1)
    )
    assert [i.seed for i in plan(cfg2)] != [i.seed for i in items]
    assert new_tokens_for("ruler_cwe", cfg) == 2 * new_tokens_for("niah", cfg)
    with pytest.raises(S3Error, match="--samples"):
        check_config(EvalConfig(samples=0))
    with pytest.raises(S3Error, match="--seeds"):
        check_config(EvalConfig(seeds=[1, -2]))


def test_plan_seeds_split_and_shared_contexts(monkeypatch):
    from s3attn.evaluation.plan import FAMILY, family_of, split_of

    for name in ("literal_niah", "paraphrase_niah", "drop_qa"):
        monkeypatch.setattr(T, name, _fake_generator(name), raising=False)
    tasks = ["niah", "literal_niah", "drop_qa", "paraphrase_niah"]
    cfg = check_config(
        EvalConfig(tasks=tasks, lengths=[512, 1024], depths=[50], samples=3, seeds=[100, 3, 100])
    )
    items = plan(cfg)
    assert cfg.seeds == [100, 3] and len(items) == 2 * 4 * 2 * 3
    assert [i.base_seed for i in items] == [100] * 24 + [3] * 24
    assert [split_of(s) for s in (0, 9, 10, 99, 100, 250)] == ["tuning"] * 2 + ["other"] * 2 + [
        "held-out"
    ] * 2
    one = [i for i in items if i.base_seed == 100 and i.length == 512]
    shared = [i for i in one if i.task in ("literal_niah", "paraphrase_niah")]
    assert len({i.seed for i in shared}) == 1  # one context seed for both tasks and every number
    at = one.index(shared[0])
    assert one[at : at + 6] == shared, "items of one context are consecutive"
    assert [(i.task, i.number) for i in shared[:3]] == [
        ("literal_niah", 0),
        ("paraphrase_niah", 0),
        ("literal_niah", 1),
    ]
    drop = [i for i in one if i.task == "drop_qa"]
    assert len({i.seed for i in drop}) == 1 and drop[0].seed != shared[0].seed
    assert len({i.seed for i in one if i.task == "niah"}) == 3  # per-number seeds as before
    assert {i.seed for i in items if i.base_seed == 3}.isdisjoint(
        {i.seed for i in items if i.base_seed == 100}
    )
    assert check_config(EvalConfig(tasks=["niah"], seed=4)).seeds is None
    assert {i.base_seed for i in plan(check_config(EvalConfig(tasks=["niah"], seed=4)))} == {4}
    names = ("ruler_niah_multikey", "paraphrase_multikey", "drop_qa", "ruler_cwe", "x")
    assert [family_of(t) for t in names] == [
        "lexical", "paraphrase", "real_qa", "aggregation", "other"]  # fmt: skip
    assert len(FAMILY) == 9


def test_make_sample_calls_the_shared_context_generators(monkeypatch):
    from s3attn.evaluation.plan import EvalItem, make_sample

    calls = []
    for name in ("literal_niah", "paraphrase_niah", "paraphrase_multikey"):
        monkeypatch.setattr(T, name, lambda *a, _n=name: calls.append((_n, *a)), raising=False)
    monkeypatch.setattr(T, "drop_qa", lambda *a: calls.append(("drop_qa", *a)), raising=False)
    monkeypatch.setattr(T, "paul_graham_text", lambda: "ESSAY")
    for task in ("literal_niah", "paraphrase_niah", "paraphrase_multikey", "drop_qa"):
        make_sample(EvalItem(task, 512, None, 7, 42, 0), len, "essay")
    make_sample(EvalItem("paraphrase_niah", 512, None, 1, 42, 0), len, "noise")
    assert calls == [
        ("literal_niah", "ESSAY", len, 512, 42, 7), ("paraphrase_niah", "ESSAY", len, 512, 42, 7),
        ("paraphrase_multikey", "ESSAY", len, 512, 42, 7), ("drop_qa", len, 512, 42, 7),
        ("paraphrase_niah", None, len, 512, 42, 1),
    ]  # fmt: skip


def test_real_shared_context_generators_give_evidence():
    """The task module's generators at the planned seeds: literal_niah and paraphrase_niah share the
    context, the questions of one context share it, and each sample's evidence is inside it."""
    from s3attn.evaluation.plan import EvalItem, item_seed, make_sample

    words = lambda text: len(text.split())  # noqa: E731
    seed = item_seed(0, "literal_niah", 1500, None, 0)
    assert seed == item_seed(0, "paraphrase_niah", 1500, None, 5)
    a = make_sample(EvalItem("literal_niah", 1500, None, 1, seed, 0), words)
    b = make_sample(EvalItem("paraphrase_niah", 1500, None, 1, seed, 0), words)
    c = make_sample(EvalItem("paraphrase_niah", 1500, None, 2, seed, 0), words)
    assert a.context == b.context == c.context and a.question != b.question != c.question
    d0, d1 = (make_sample(EvalItem("drop_qa", 3000, None, n, 7, 0), words) for n in (0, 1))
    assert d0.context == d1.context and d0.question != d1.question
    for s in (a, b, c, d0, d1):
        ((start, end),) = s.meta["evidence"]
        assert 0 <= start < end <= len(s.context)


def test_retrieval_config_takes_only_the_options_given():
    from s3attn.evaluation.evaluate import retrieval_config
    from s3attn.retrieval.fusion import FusionConfig

    default = retrieval_config(EvalConfig(), 7)
    assert default == RetrievalConfig(max_new_tokens=7)
    hybrid = FusionConfig(fusion="rrf", bm25_weight=0.8, min_relevance=0.5)
    chosen = retrieval_config(EvalConfig(retrieval=RetrievalConfig(hybrid=hybrid)), 7)
    assert (
        chosen.hybrid.fusion,
        chosen.hybrid.bm25_weight,
        chosen.hybrid.min_relevance,
        chosen.max_new_tokens,
    ) == (
        "rrf",
        0.8,
        0.5,
        7,
    )


def test_method_plan():
    assert method_plan("full", 2048, 7000) == ("full", 7000)
    assert method_plan("streaming", 2048, 7000) == ("full", 2048)
    for m in ("bm25", "s3", "hybrid"):
        assert method_plan(m, 512, 7000) == (m, 512)


def test_build_prompt_ruler_style_and_fallback():
    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    meta = {"instruction": "INSTR", "answer_prefix": "PREFIX is"}
    s = Sample("niah", "ctx", "QUESTION?", ["1"], "string_match_all", meta)
    p = build_prompt(tok, s, "the CONTEXT", lambda c, q: "unused")
    assert p.index("INSTR") < p.index("the CONTEXT") < p.index("QUESTION?") < p.index("east west")
    assert p.endswith("east west PREFIX is")
    bare = s._replace(meta={})
    assert build_prompt(tok, bare, "c", lambda c, q: f"<{c}|{q}>") == "<c|QUESTION?>"
    assert context_recall("the Numbers 12 and 34", ["12", "34", "56"]) == pytest.approx(2 / 3)


def _row(task, length, method, score, seconds=1.0, sample=0, **kw) -> dict:
    base = dict(task=task, length=length, depth=None, sample=sample, seed=sample, base_seed=0, split="tuning",
                method=method, budget=64, score=score, recall=score, evidence_recall=score,
                evidence_coverage=[score], prompt_tokens=100, context_tokens=64, overhead_tokens=36,
                spans=[[0, 64]], doc_tokens=500, seconds=seconds, build_seconds=2.0 + sample, peak_rss_mb=300.0,
                metric="qa_f1", answer="", answers=["x"])  # fmt: skip
    return {**base, **kw}


ROWS = [
    _row("niah", 1024, "full", 1.0, sample=0),
    _row("niah", 1024, "full", 0.5, sample=1),
    _row("niah", 1024, "hybrid", 0.5, sample=0, seconds=3.0),
    _row("niah", 1024, "hybrid", 0.25, sample=1),
    _row("niah", 4096, "full", 0.0),
    _row("niah", 4096, "hybrid", 0.5),
    _row("ruler_vt", 1024, "hybrid", 1.0),
]


def test_aggregate_and_fidelity():
    agg = report.aggregate(ROWS)
    assert [(a.task, a.length, a.method) for a in agg] == [
        ("niah", 1024, "full"), ("niah", 1024, "hybrid"), ("niah", 4096, "full"), ("niah", 4096, "hybrid"),
        ("ruler_vt", 1024, "hybrid"),
    ]  # fmt: skip
    first = agg[0]
    assert first.n == 2 and first.score == pytest.approx(0.75)
    assert agg[1].score == pytest.approx(0.375) and agg[1].seconds == pytest.approx(2.0)
    fid = report.fidelity(agg)
    assert fid[("niah", 1024)] == pytest.approx(0.5)
    assert fid[("niah", 4096)] is None  # full scored 0
    assert fid[("ruler_vt", 1024)] is None  # no full row
    builds = report.build_summary(ROWS)
    assert [(b.length, b.samples) for b in builds] == [(1024, 3), (4096, 1)]
    assert builds[0].build_seconds == pytest.approx((2.0 + 3.0 + 2.0) / 3)
    methods = report.method_summary(ROWS)
    assert [m.method for m in methods] == ["full", "hybrid"] and methods[0].score == pytest.approx(0.5)


def test_markdown_tables():
    md = report.markdown(ROWS, {"budget": 64}, {"model_id": "tiny", "model_window": 256})
    lines = md.splitlines()
    header = "| task | length | n | full | hybrid | hybrid/full |"
    assert header in lines
    at = lines.index(header)
    assert lines[at + 2] == "| niah | 1024 | 2 | 0.750 | 0.375 | 0.50 |"
    assert lines[at + 3] == "| niah | 4096 | 1 | 0.000 | 0.500 | n/a |"
    assert lines[at + 4] == "| ruler_vt | 1024 | 1 | - | 1.000 | n/a |"
    assert "## Per method" in md and "| hybrid | 4 | 0.562 |" in md
    assert "Budget 64" in md and "`tiny`" in md


def test_report_without_scores_and_with_evidence(tmp_path):
    rows = [dict(r, score=None) for r in ROWS] + [
        _row("paraphrase_niah", 1024, "hybrid", None, recall=0.0, evidence_recall=None, evidence_coverage=[])
    ]
    agg = report.aggregate(rows)
    assert all(a.score is None for a in agg) and report.fidelity(agg)[("niah", 1024)] is None
    md = report.markdown(rows, {"budget": 64}, {"model_id": "tiny"})
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert [s.split(" (")[0] for s in sections[:4]] == [
        "## Evidence recall", "## Paired evidence recall", "## Mean score", "## Answer-string recall"
    ]  # fmt: skip
    assert "| family | length | full | hybrid |" in md
    assert "| lexical | 1024 | 0.750 (2) | 0.375 (2) |" in md  # the paraphrase row has no evidence
    assert "| hybrid vs full | lexical | 1/0/2 | 3 | -0.083 |" in md
    assert "| niah | 1024 | 2 | n/a | n/a | n/a |" in md
    files = report.write_report(tmp_path / "r", rows, {"budget": 64}, {"model_id": "tiny"})
    assert files.evidence_plot is not None and files.evidence_plot.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(files.json.read_text())["summary"]
    assert summary["evidence_by_family_length_method"][0]["family"] == "lexical"
    overall = [p for p in summary["paired_evidence_recall"] if p["family"] == "overall"]
    assert [(p["a"], p["b"], p["n"]) for p in overall] == [("hybrid", "full", 3)]
    bare = [dict(r, evidence_recall=None, evidence_coverage=[]) for r in ROWS]
    assert report.write_report(tmp_path / "r", bare, {}, {}).evidence_plot is None
    assert not (tmp_path / "r" / report.EVIDENCE_PNG).exists()


def test_write_report_from_rows(tmp_path):
    files = report.write_report(tmp_path / "r", ROWS, {"budget": 64}, {"model_id": "tiny"})
    data = json.loads(files.json.read_text())
    assert data["rows"] == ROWS and data["config"] == {"budget": 64}
    assert data["summary"]["fidelity_hybrid_over_full"][0] == {"task": "niah", "length": 1024, "ratio": 0.5}
    assert files.plot.read_bytes()[:4] == b"\x89PNG" and files.markdown.is_file()


def test_same_needles_plants_the_same_needles_at_every_length():
    """--same-needles: a shared-context task's seed leaves the length out, so two lengths plant the same
    needles (the same answers per question); without it they differ."""
    from s3attn.evaluation.plan import EvalItem, item_seed, make_sample

    words = lambda text: len(text.split())  # noqa: E731

    def answers(length: int, same: bool) -> list:
        seed = item_seed(100, "literal_niah", length, None, 0, same)
        return [
            make_sample(EvalItem("literal_niah", length, None, n, seed, 100), words).answers
            for n in range(10)
        ]

    assert answers(1500, True) == answers(3000, True)
    assert answers(1500, False) != answers(3000, False)
