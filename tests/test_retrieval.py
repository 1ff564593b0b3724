"""Retriever end to end on a tiny random model + tiny SAE release: modes, budget, explanations, bad input."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import build_tiny_index, filler_words, save_tiny_model_dir

from s3attn.errors import S3Error
from s3attn.models.loading import load_model
from s3attn.retrieval.fusion import FusionConfig
from s3attn.retrieval.question import idf_weights, pool_features, question_token_range
from s3attn.retrieval.retriever import RetrievalConfig, Retriever

words = filler_words


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("retr")
    docs = {"a.txt": words(300, 1) + " paris queen paris queen " + words(200, 2), "b.txt": words(400, 3)}
    index, model_dir, release = build_tiny_index(root, docs)
    return {"index": index, "model_dir": model_dir, "release": release, "root": root}


@pytest.fixture(scope="module")
def retriever(tiny_index) -> Retriever:
    return Retriever(tiny_index["index"])


def configured(tiny_index, retriever: Retriever, **options) -> Retriever:
    """A retriever on the tiny index with RetrievalConfig(**options) (FusionConfig's options set its
    ``hybrid``), sharing the loaded model and SAEs."""
    names = {f.name for f in dataclasses.fields(FusionConfig)}
    hybrid = FusionConfig(**{k: v for k, v in options.items() if k in names})
    cfg = RetrievalConfig(hybrid=hybrid, **{k: v for k, v in options.items() if k not in names})
    stack = (retriever.loaded, retriever.saes, retriever.geom)
    return Retriever(tiny_index["index"], cfg=cfg, stack=stack)


@pytest.mark.parametrize("mode", ["s3", "bm25", "hybrid", "full"])
def test_modes_respect_budget_and_order(retriever, mode):
    spans = retriever.retrieve("where is the queen of paris", mode, 96)
    assert spans, mode
    total = sum(s.end - s.start for s in spans)
    assert total <= 96
    starts = [s.start for s in spans]
    assert starts == sorted(starts)
    for a, b in zip(spans, spans[1:]):
        assert a.end <= b.start  # deduplicated, no overlap
    for s in spans:
        toks = retriever.store.tokens(s.start, s.end)
        assert s.text.split() == retriever.tokenizer.decode(toks.tolist()).split()
        assert s.document in ("a.txt", "b.txt")


def test_a_fused_run_across_two_documents_is_fed_as_two_spans(retriever):
    """Fusion merges adjacent spans; where a run joins a.txt's end to b.txt's start, each piece is fed (and
    named) as its own document's span, with the run's score and source."""
    from s3attn.retrieval.spans import Span

    table = retriever.doc_table
    b = int(table.starts[1])
    got = retriever._materialise([Span(b - 20, b + 30, 0.7, "s3+bm25", {"peaks": [b]})])
    assert [(s.document, s.start, s.end) for s in got] == [("a.txt", b - 20, b), ("b.txt", b, b + 30)]
    assert {(s.score, s.source) for s in got} == {(0.7, "s3+bm25")}
    assert [s.text.split() for s in got] == [
        retriever.tokenizer.decode(retriever.store.tokens(s.start, s.end).tolist()).split() for s in got
    ]


def test_bm25_finds_planted_words(retriever):
    spans = retriever.retrieve("paris queen", "bm25", 160)
    assert any("paris queen" in s.text for s in spans)
    assert all(s.source == "bm25" for s in spans)
    assert "queen" in spans[0].why["terms"] or "paris" in spans[0].why["terms"]


def test_hybrid_holds_bias_and_explains(tiny_index, retriever):
    # no relevance floor and room past the bias and the best BM25 passages, so that S3 spans of the random
    # tiny model are fed and their explanations checked
    retriever = configured(tiny_index, retriever, min_relevance=0.0)
    n = retriever.store.num_tokens
    spans = retriever.retrieve("paris queen", "hybrid", 600, explain=True)
    covered = np.zeros(n, bool)
    for s in spans:
        covered[s.start : s.end] = True
    cfg = retriever.cfg
    assert covered[: cfg.bias_first].all() and covered[n - cfg.bias_last :].all()
    s3 = [s for s in spans if "s3" in s.source]
    assert s3 and all("features" in s.why for s in s3)
    feats = next(s.why["features"] for s in s3 if s.why["features"])
    assert all(key.startswith("L") for key in feats)


def test_s3_scores_match_bruteforce(retriever):
    """The touched tokens' scores equal a Python loop over every posting of the chosen features, each
    divided by its list's postings within the saturation window (power 1, the default)."""
    sparse, head_feats = retriever.s3_scores("paris queen river")
    assert np.all(np.diff(sparse.positions_N) > 0) and sparse.num_tokens == retriever.store.num_tokens
    scores = sparse.dense()
    ref = np.zeros(retriever.store.num_tokens)
    w, power = retriever.cfg.question.saturation_window, retriever.cfg.question.saturation
    assert power == 1.0
    for (layer, kv), hq in head_feats.items():
        post = retriever.store.postings(layer, kv, hq.features)
        for p, slot, a in zip(post.positions, post.feature_slot, post.acts):
            near = sum(1 for q, s in zip(post.positions, post.feature_slot) if s == slot and abs(q - p) <= w)
            ref[p] += hq.weights[slot] * a / near
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-5)
    assert all(hq.features.size <= retriever.cfg.question.max_features for hq in head_feats.values())


class _Huge:
    """A real index reader that says it holds 10**12 tokens: its documents, then nothing."""

    num_tokens = 10**12

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def test_a_question_allocates_nothing_of_the_index_length(tiny_index, retriever):
    """Scores, smoothing, peaks, spans, the document filter and linear fusion's range_max work on the
    touched tokens: a 10**12-token index (4 TB as one float32 per token) answers in a few MB."""
    r = configured(tiny_index, retriever, fusion="linear", min_relevance=0.0)
    real_n = r.store.num_tokens
    r.store = _Huge(r.store)
    r._set_documents()
    tracemalloc.start()
    try:
        s3 = r.retrieve("where is the queen of paris", "s3", 96)
        hybrid = r.retrieve("paris queen", "hybrid", 300, documents="a.txt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    assert s3 and all(s.source == "s3" and s.end <= real_n for s in s3)
    assert {s.document for s in hybrid} == {"a.txt"} and any("s3" in s.source for s in hybrid)
    assert any("paris queen" in s.text for s in hybrid)


def test_query_encoder_reuses_the_prompt_prefix(retriever, monkeypatch):
    """Codes from the cached prefix + question tokens equal codes from one forward over the whole prompt;
    the prefix is computed once for questions that share it."""
    import s3attn.retrieval.question as q

    calls = []
    real = q.prefix_cache
    monkeypatch.setattr(q, "prefix_cache", lambda *a: calls.append(1) or real(*a))
    enc = q.QuestionEncoder(retriever.model, retriever.saes, retriever.geom.kv_head_of_query)
    for question in ("paris queen river", "the north of the queen"):
        prompt = "the city of the north Question: " + question + "\nAnswer:"
        ids = torch.tensor(retriever.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        span = question_token_range(retriever.tokenizer, prompt, question)
        ref = q.question_codes(
            retriever.model, retriever.saes, retriever.geom.kv_head_of_query, ids, (0, len(ids))
        )
        got = enc.codes(ids, span)
        assert got.keys() == ref.keys()
        for key, (idx, act) in got.items():
            n = act.shape[0]
            ref_idx, ref_act = (a.reshape(len(ids), -1, a.shape[-1])[span[0] : span[1]] for a in ref[key])
            np.testing.assert_array_equal(idx, ref_idx.reshape(n, -1))
            np.testing.assert_allclose(act, ref_act.reshape(n, -1), rtol=1e-4, atol=1e-5)
    assert len(calls) == 1


def test_encoder_follows_the_query_config(tiny_index, retriever):
    """The question encoder uses fp16 weights when cfg.question.half_weights (CPU), the model as it is when
    off; switching the config switches the encoder, and both give nearly the same features."""
    from dataclasses import replace

    from s3attn.models.half import HalfLinear, half_weights_supported

    r = configured(tiny_index, retriever)
    prompt = r.prompt("", "where is the queen of paris")
    ids = torch.tensor(r.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    span = question_token_range(r.tokenizer, prompt, "where is the queen of paris")
    half = r.encoder
    assert any(isinstance(m, HalfLinear) for m in half.model.modules()) == half_weights_supported(r.model)
    r.cfg = replace(r.cfg, question=replace(r.cfg.question, half_weights=False))
    full = r.encoder
    assert full is not half and full.model is r.model
    got, ref = half.codes(ids, span), full.codes(ids, span)
    assert got.keys() == ref.keys()
    for key, (idx, _) in got.items():
        shared = [len(set(a) & set(b)) / len(a) for a, b in zip(idx.tolist(), ref[key][0].tolist())]
        assert sum(shared) / len(shared) > 0.95, key


@pytest.mark.parametrize("clean_up", [False, True])
def test_decode_many_is_decode(retriever, clean_up, monkeypatch):
    from s3attn.retrieval.retriever import decode_many

    tok = retriever.tokenizer
    monkeypatch.setattr(tok, "clean_up_tokenization_spaces", clean_up)
    ids = [retriever.store.tokens(a, a + n).tolist() for a, n in ((0, 40), (310, 9), (500, 1), (0, 0))]
    assert decode_many(tok, ids) == [tok.decode(x) for x in ids]
    assert decode_many(tok, ids)[0].strip()


def test_full_mode_truncates_middle(retriever):
    n = retriever.store.num_tokens
    spans = retriever.retrieve("paris", "full", 100)
    assert [(s.start, s.end) for s in spans] == [(0, 50), (n - 50, n)]


def test_answer_generates(retriever):
    ans = retriever.answer("paris queen", "hybrid", 64, max_new_tokens=4)
    assert isinstance(ans.text, str) and ans.prompt_tokens > 0 and ans.spans


def test_idf_and_pooling():
    df = np.array([0, 1, 10, 1000])
    np.testing.assert_allclose(idf_weights(df, 10, "inverse_log"), 1 / (np.log1p(df) + 1), rtol=1e-6)
    idx = np.array([[0, 1], [1, 2]])
    act = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(pool_features(idx, act, 4, "sum"), [1, 5, 4, 0])
    np.testing.assert_allclose(pool_features(idx, act, 4, "max"), [1, 3, 4, 0])


def test_question_token_range(retriever):
    tok = retriever.tokenizer
    prompt = "the city of the north Question: paris queen river\nAnswer:"
    lo, hi = question_token_range(tok, prompt, "paris queen river")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids[lo:hi]).split() == ["paris", "queen", "river"]


def test_bad_questions(retriever):
    with pytest.raises(S3Error, match="empty"):
        retriever.retrieve("   ", "hybrid", 64)
    with pytest.raises(S3Error, match="budget"):
        retriever.retrieve(words(100, 9), "hybrid", 16)
    with pytest.raises(S3Error, match="--mode"):
        retriever.retrieve("paris", "dense", 64)


def _ask(argv, capsys):
    from s3attn.index_builder.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    return exc.value.code, err


def test_ask_cli_json(tiny_index, capsys):
    from s3attn.index_builder.cli import main

    assert (
        main(["ask", str(tiny_index["index"]), "paris queen", "--budget", "64", "--json", "--no-generate"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["spans"] and sum(s["end"] - s["start"] for s in out["spans"]) <= 64


def test_ask_cli_show_spans_says_why_each_side_got_its_share(tiny_index, capsys):
    from s3attn.index_builder.cli import main

    argv = [
        "ask",
        str(tiny_index["index"]),
        "paris queen",
        "--budget",
        "256",
        "--show-spans",
        "--no-generate",
        "--fusion",
        "adaptive",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("hybrid (adaptive):"))
    assert "bm25 gets" in line and "term weight" in line and "median peak" in line
    assert '"bm25_share"' in out and '"slot"' in out


def test_ask_cli_bad_input(tiny_index, tmp_path, capsys):
    index = str(tiny_index["index"])
    code, err = _ask(["ask", index, ""], capsys)
    assert code == 2 and "empty" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, err = _ask(["ask", str(tmp_path / "nope"), "paris"], capsys)
    assert code == 2 and "no s3attn index" in err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{not json")
    code, err = _ask(["ask", str(corrupt), "paris"], capsys)
    assert code == 2 and "corrupt" in err
    code, err = _ask(["ask", index, "paris", "--mode", "magic"], capsys)
    assert code == 2 and "--mode" in err
    code, err = _ask(["ask", index, "paris", "--fusion", "sum"], capsys)
    assert code == 2 and "--fusion sum" in err and len(err.strip().splitlines()) == 1


def test_index_for_another_model_is_refused(tiny_index, tmp_path):
    other_dir = save_tiny_model_dir(tmp_path / "other-model", "qwen2")
    other = load_model(str(other_dir))
    from s3attn.models.taps import attention_geometry
    from s3attn.saes.checkpoint import load_many

    stack = (other, load_many(tiny_index["release"]), attention_geometry(other.model))
    with pytest.raises(S3Error, match="built with model"):
        Retriever(tiny_index["index"], stack=stack)


def test_query_sites_code_the_right_vectors(retriever):
    """site key: the question's key vector per KV head; query: the group's query heads; both: stacked."""
    import s3attn.retrieval.question as q
    from s3attn.models.taps import tap_heads

    ids = torch.tensor(retriever.tokenizer("where is the queen", add_special_tokens=False)["input_ids"])
    n, kv_of_q = len(ids), retriever.geom.kv_head_of_query
    args = (retriever.model, retriever.saes, kv_of_q, ids, (0, n))
    codes = {site: q.question_codes(*args, site=site) for site in ("key", "query", "both")}
    taps = tap_heads(retriever.model, ids[None], sorted(retriever.saes))
    for (layer, kv), (idx, act) in codes["key"].items():
        enc = retriever.saes[layer].encode(taps.keys[layer][0, :, kv])
        np.testing.assert_array_equal(idx, enc.top_indices.numpy())
        np.testing.assert_allclose(act, enc.top_acts.detach().numpy(), rtol=1e-5, atol=1e-6)
        group = sum(1 for h in kv_of_q if h == kv)
        q_idx, _ = codes["query"][(layer, kv)]
        assert q_idx.shape[0] == n * group
        both_idx, both_act = codes["both"][(layer, kv)]
        np.testing.assert_array_equal(both_idx, np.concatenate([q_idx, idx]))
        assert both_act.shape == both_idx.shape
    with pytest.raises(S3Error, match="question site"):
        q.question_codes(*args, site="value")


def test_query_heads_code_only_the_chosen_query_heads(retriever):
    """--query-heads: the query rows of the chosen heads only; a KV head with none of them is not read at
    site query and keeps its key rows at site both; a head the model lacks is refused."""
    import s3attn.retrieval.question as q
    from s3attn.models.taps import tap_heads

    ids = torch.tensor(retriever.tokenizer("where is the queen", add_special_tokens=False)["input_ids"])
    n, kv_of_q = len(ids), retriever.geom.kv_head_of_query
    args = (retriever.model, retriever.saes, kv_of_q, ids, (0, n))
    chosen = len(kv_of_q) - 1  # the last query head: its KV group only
    codes = q.question_codes(*args, site="query", query_heads=[chosen])
    taps = tap_heads(retriever.model, ids[None], sorted(retriever.saes))
    assert {kv for _, kv in codes} == {kv_of_q[chosen]}
    for (layer, _), (idx, _) in codes.items():
        enc = retriever.saes[layer].encode(taps.queries[layer][0, :, chosen])
        np.testing.assert_array_equal(idx, enc.top_indices.numpy())
    both = q.question_codes(*args, site="both", query_heads=[chosen])
    keys = q.question_codes(*args, site="key")
    for key, (idx, _) in keys.items():
        extra = n if key[1] == kv_of_q[chosen] else 0
        assert both[key][0].shape[0] == idx.shape[0] + extra
    with pytest.raises(S3Error, match="query-heads"):
        q.question_codes(*args, site="query", query_heads=[len(kv_of_q)])


def _question_codes(retriever, question: str) -> dict:
    """The question's SAE codes per (layer, KV head), as ``Retriever.s3_scores`` computes them."""
    prompt = retriever.prompt("", question)
    ids = torch.tensor(retriever.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return retriever.encoder.codes(ids, question_token_range(retriever.tokenizer, prompt, question))


def test_stop_features_are_skipped(retriever):
    """No feature with more than stop_ratio x the average postings is read; 0 keeps them."""
    from s3attn.retrieval.question import QuestionConfig, head_features

    store = retriever.store
    codes = _question_codes(retriever, "paris queen river")
    mean_df = store.num_tokens * int(store.attrs["k"]) / int(store.attrs["num_latents"])
    kept = head_features(codes, store, QuestionConfig(stop_ratio=1.0))
    every = head_features(codes, store, QuestionConfig(stop_ratio=0))
    assert all((hq.df <= mean_df).all() for hq in kept.values())
    assert any((hq.df > mean_df).any() for hq in every.values())  # the cap did remove something


def test_read_stats_count_lists_postings_and_budget_skips(retriever):
    """read_stats adds up what a question reads; a small posting budget reads the top impact tiers of more
    lists (index format 3) than whole lists would fit, and whole lists that no longer fit are skipped."""
    from s3attn.retrieval.question import QuestionConfig, head_features, read_stats

    store = retriever.store
    codes = _question_codes(retriever, "paris queen river")
    wide = head_features(codes, store, QuestionConfig(stop_ratio=0))
    stats = read_stats(wide)
    assert stats["lists"] == sum(h.features.size for h in wide.values()) > 0
    assert stats["postings"] == sum(int(h.df.sum()) for h in wide.values())
    assert stats["lists_skipped"] == 0 and stats["tiers"] >= stats["lists"]
    budget = len(wide) * 8
    tight = read_stats(head_features(codes, store, QuestionConfig(stop_ratio=0, max_postings=budget)))
    whole = read_stats(
        head_features(codes, store, QuestionConfig(stop_ratio=0, max_postings=budget, impact_tiers=False))
    )
    assert tight["postings"] <= budget and whole["postings"] <= budget and whole["lists_skipped"] > 0
    assert tight["lists"] > whole["lists"] and whole["tiers"] == whole["lists"]
    retriever.s3_scores("paris queen river")
    assert retriever.last_read["lists"] > 0


def test_read_layers_restrict_the_postings_read(retriever):
    from s3attn.retrieval.question import QuestionConfig, head_features

    store = retriever.store
    codes = _question_codes(retriever, "paris queen river")
    first = int(store.meta.layers[0])
    only = head_features(codes, store, QuestionConfig(read_layers=[first]))
    assert only and {layer for layer, _ in only} == {first}
    assert set(head_features(codes, store, QuestionConfig())) == set(codes)
    with pytest.raises(S3Error, match="--read-layers"):
        head_features(codes, store, QuestionConfig(read_layers=[999]))


def test_attention_sink_gets_no_s3_score(retriever):
    """The first token of every document is excluded from S3 scoring (its key is the attention sink)."""
    starts = [s for _, _, s, _ in retriever.doc_table]
    np.testing.assert_array_equal(np.sort(retriever._sink_positions), starts)


@pytest.mark.parametrize("fusion", ["tiered", "linear", "rrf"])
def test_hybrid_fusions_keep_budget_bias_and_find_the_planted_words(tiny_index, retriever, fusion):
    r = configured(tiny_index, retriever, fusion=fusion)
    spans = r.retrieve("paris queen", "hybrid", 300)
    assert sum(s.end - s.start for s in spans) <= 300
    assert spans[0].start == 0 and spans[0].source.startswith("bias")
    assert any("paris queen" in s.text for s in spans)
    if fusion != "tiered":
        assert all("fused" in s.why for s in spans if s.source != "bias")


def test_hybrid_drops_weak_s3_spans(tiny_index, retriever):
    """tiered hybrid keeps only S3 spans scoring at least s3_min_relevance of the best one; 0 keeps all."""

    def s3_only(min_rel: float) -> list:
        r = configured(tiny_index, retriever, fusion="tiered", s3_min_relevance=min_rel)
        return [s for s in r.retrieve("where is the queen of paris", "hybrid", 400) if "s3" in s.source]

    every, strong = s3_only(0.0), s3_only(0.9)
    assert any(s.score < 0.9 for s in every)
    assert strong and all(s.score >= 0.9 for s in strong)
    assert len(strong) < len(every)


def test_questions_run_in_the_precision_the_index_was_built_in(tiny_index, retriever: Retriever) -> None:
    """The fixture's build used --dtype auto: the index records what that resolved to on this CPU (bf16
    with AMX / AVX512-BF16, else float32) and the retriever loads the model in the same precision."""
    from s3attn.models.precision import dtype_name, resolve_dtype

    auto = resolve_dtype("auto", "cpu")
    assert retriever.store.meta.dtype == dtype_name(auto) == retriever.dtype
    assert retriever.model.dtype == auto
