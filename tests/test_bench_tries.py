"""The tries of bench/ for issue 14: the attention rerank picks by the model's attention, the code-overlap
query map lowers its loss and raises the overlap of codes it was trained for, and the question-to-evidence
query map takes its targets from the evidence's keys."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from s3attn.retrieval.spans import Span
from s3attn.saes.sae import SaeConfig, TopKSAE

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench(name: str):
    sys.path.insert(0, str(BENCH))  # the scripts import their siblings
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_rerank_takes_the_candidates_the_question_attends_to():
    rr = _bench("rerank_attention")
    pos = np.arange(1000, 1300)
    prof = np.full((4, pos.size), 0.001, np.float32)
    prof[:, 250:260] = 0.05  # the question attends to index tokens 1250-1259: inside the S3 span
    q = {
        "bias": [],
        "bm25": [Span(1000, 1128, 9.0, "bm25", {"coverage": 0.9, "bm25": 9.0})],
        "s3": [Span(1240, 1280, 1.0, "s3", {})],
        "prof": {"after": prof, "last": prof},
        "pos": pos,
    }
    for agg in ("max", "mean", "top8"):
        (got,) = rr.reranked(q, 40, prof.mean(0), rr.AGGREGATES[agg])
        assert (got.start, got.end) == (1240, 1280)
    prof[:, 10:20] = 0.2  # now the BM25 passage holds the most attended tokens
    (got,) = rr.reranked(q, 128, prof.mean(0), rr.AGGREGATES["max"])
    assert (got.start, got.end) == (1000, 1128)


def _sae(d: int = 8, latents: int = 64, k: int = 4) -> TopKSAE:
    torch.manual_seed(0)
    return TopKSAE(SaeConfig(d_in=d, num_latents=latents, k=k)).eval()


def test_code_overlap_training_lowers_its_loss_and_raises_the_overlap():
    qc = _bench("query_map_codes")
    sae, n, h, d = _sae(), 4000, 2, 8
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(n, h, d, generator=gen)
    mix = torch.randn(h, d, d, generator=gen)
    y = torch.tanh(torch.einsum("nhd,hde->nhe", q, mix)) * 3  # a key the query's map cannot reach linearly
    m = torch.rand(n, h, generator=gen) + 0.1
    target = qc.CodeTarget(sae, y.reshape(-1, d), idf_power=1.0)
    w0, b0 = torch.zeros(h, d, d), torch.zeros(h, d)  # start far from any good map

    def loss(w, b):
        tw, ti = target.codes(y)
        logp = torch.log_softmax(target.preacts(w, b, q), -1)
        return float(-((tw * logp.gather(-1, ti)).sum(-1) * m).sum() / m.sum())

    w1, b1 = qc.refine(target, w0, b0, (q, y, m), steps=150, lr=3e-2, batch=512, seed=0)
    assert loss(w1, b1) < loss(w0, b0) - 0.1
    assert target.overlap(w1, b1, (q, y, m)) > target.overlap(w0, b0, (q, y, m)) + 0.1


def test_retrieval_heads_are_those_attending_to_the_evidence():
    rr = _bench("rerank_attention")
    rng = np.random.default_rng(0)
    pos = np.arange(500, 800)
    questions = []
    for start in (520, 700):
        heads = rng.random((3, 4, pos.size)).astype(np.float16)
        heads[2, 1, start - 500 : start - 490] = 5.0  # (2, 1) looks at the evidence, both times
        heads[0, 3, start - 500 : start - 490] = 5.0 if start == 520 else 0.0  # (0, 3) only once
        questions.append({"pos": pos, "evidence": [(start, start + 10)], "heads": heads})
    assert rr.retrieval_heads(questions, 2) == [(2, 1), (0, 3)]


def test_summarize_runs_takes_one_method_of_a_run(tmp_path):
    """``NAME=FOLDER#METHOD`` keeps only METHOD's rows, renamed; a plain NAME=FOLDER of several refuses."""
    import json

    rows = [{"method": m, "task": "t", "evidence_recall": 1.0} for m in ("bm25", "hybrid", "s3")]
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows, "environment": {"git_commit": "x"}}))
    summarize = _bench("summarize_runs")
    got, env = summarize.load(f"hybrid.adaptive={tmp_path}#hybrid")
    assert [r["method"] for r in got] == ["hybrid.adaptive"] and env["git_commit"] == "x"
    assert [r["method"] for r in summarize.load(str(tmp_path))[0]] == ["bm25", "hybrid", "s3"]
    with pytest.raises(SystemExit):
        summarize.load(f"x={tmp_path}")


def test_summarize_runs_reads_kept_fusions_runs_and_pairs_what_compare_names(tmp_path, capsys):
    """A kept ``fusions.json.gz`` of bench/eval_fusions.py loads like a results.json; ``--compare A,B`` pairs
    exactly A against B; a folder with no run file refuses."""
    import gzip
    import json

    rows = [
        {"method": m, "task": "literal_niah", "length": 16, "depth": None, "sample": i, "base_seed": 100,
         "evidence_recall": float(m == "a" or i == 0)}
        for m in ("a", "b") for i in range(4)
    ]  # fmt: skip
    with gzip.open(tmp_path / "fusions.json.gz", "wt") as f:
        json.dump({"rows": rows, "environment": {"git_commit": "y"}}, f)
    summarize = _bench("summarize_runs")
    assert summarize.main([str(tmp_path), "--compare", "a,b"]) == 0
    out = capsys.readouterr().out
    assert "| a vs b @16 | lexical | 3/1/0 | 4 | +0.750 |" in out and "commits: y" in out
    with pytest.raises(SystemExit):
        summarize.load(str(tmp_path / "missing"))


def test_evidence_sentence_comes_from_the_middle_half():
    qe = _bench("query_map_evidence")
    import random

    text = " ".join(f"Sentence number {i} has exactly nine words in it." for i in range(20))
    for seed in range(5):
        got = qe.evidence_sentence(text, random.Random(seed))
        at = text.index(got)
        assert len(text) // 4 <= at < 3 * len(text) // 4 and len(got.split()) == 9
    assert qe.evidence_sentence("Too short. Also short. " * 20, random.Random(0)) is None


def test_evidence_targets_are_the_attended_evidence_keys():
    """argmax: the key of the evidence token a head attends to most (through the GQA map); mean: the
    attention-weighted mean of the evidence keys; the share is the attention on the evidence."""
    from types import SimpleNamespace

    from conftest import tiny_model

    qe = _bench("query_map_evidence")
    model = tiny_model("llama")  # 4 query heads, 2 KV heads, head_dim 16
    keys_THD = torch.randn(12, 2, 16, generator=torch.Generator().manual_seed(0))
    taps = SimpleNamespace(keys={1: keys_THD[None]})
    ev = (4, 8)
    attn_HTE = torch.zeros(4, 3, 4)
    attn_HTE[:, :, 2] = 0.3  # every head, every question token: evidence token 6 most
    attn_HTE[3, :, 1] = 0.5  # except head 3 (KV head 1): evidence token 5
    y_THD, share_TH = qe.evidence_targets(model, taps, 1, attn_HTE, ev, "argmax")
    assert torch.equal(y_THD[:, 0], keys_THD[6, 0].expand(3, -1))
    assert torch.equal(y_THD[:, 3], keys_THD[5, 1].expand(3, -1))
    assert torch.allclose(share_TH[:, 3], torch.full((3,), 0.8))
    y_mean, _ = qe.evidence_targets(model, taps, 1, attn_HTE, ev, "mean")
    assert torch.allclose(y_mean[0, 3], (0.3 * keys_THD[6, 1] + 0.5 * keys_THD[5, 1]) / 0.8, atol=1e-6)


def test_pair_rows_map_the_question_alone_to_keys_of_the_evidence():
    """Inputs: the question's query rows; targets: keys of the evidence tokens (of each head's KV head)."""
    from conftest import filler_words, tiny_model, tiny_tokenizer

    from s3attn.models.taps import tap_heads

    qe = _bench("query_map_evidence")
    model, tok = tiny_model("llama"), tiny_tokenizer()
    sentence = filler_words(12, seed=1)
    context = f"{filler_words(40, seed=2)} {sentence} {filler_words(40, seed=3)}"
    pair = {"context": context, "sentence": sentence, "question": filler_words(6, seed=4)}
    full = qe.chat_prompt(tok, context, pair["question"])
    keys_THD = tap_heads(model, torch.tensor(tok(full, add_special_tokens=False)["input_ids"])[None], [1])
    lo, hi = qe.char_tokens(tok, full, full.find(sentence), len(sentence))
    ev_EHD = keys_THD.keys[1][0, lo:hi].float()
    for guide in ([], [(3, 1)]):
        rows, chance = qe.pair_rows(model, tok, [1, 2], pair, "argmax", guide)
        x, y, share = rows[1]
        assert 0 < chance < 1 and x.shape == y.shape == (6, 4, 16) and share.shape == (6, 4)
        for h, kv in enumerate((0, 0, 1, 1)):
            for t in range(6):
                assert any(torch.allclose(y[t, h], k) for k in ev_EHD[:, kv])
        if guide:  # one attention (the guide's) picks the evidence token for every head
            assert torch.equal(share[:, 0], share[:, 3])


@pytest.mark.parametrize("objective", ["code", "contrast"])
def test_cross_site_fine_tune_moves_query_codes_onto_their_keys_codes(objective):
    """bench/sae_cross_site.py: with the cross-site loss the SAE codes a query with its paired key's latents
    (held-out overlap up); without it, no gain, and the reconstruction half alone lowers the FVU."""
    from types import SimpleNamespace

    cs = _bench("sae_cross_site")
    gen = torch.Generator().manual_seed(2)
    d, n = 8, 3000
    keys = torch.randn(n, d, generator=gen) * 2
    rot = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
    queries = keys @ rot + 3.0  # the query of a key lies elsewhere: rotated and shifted
    text, held_text = (keys[:2000], queries[:2000]), (keys[2000:], queries[2000:])
    cross, held_cross = (queries[:2000], keys[:2000]), (queries[2000:], keys[2000:])
    got = {}
    for weight in (0.0, 1.0):
        sae = _sae(d=d)
        idf = cs.key_idf(sae, keys)
        keys_before = sae.encode(held_text[0]).top_indices
        before = cs.report(sae, held_cross, held_text, idf, keys_before)
        args = SimpleNamespace(
            steps=300, batch=256, lr=1e-2, seed=0, cross=weight, temperature=1.0, idf_power=1.0,
            objective=objective,
        )  # fmt: skip
        cs.fine_tune(sae, text, cross, idf, args)
        got[weight] = cs.report(sae, held_cross, held_text, idf, keys_before)
    assert got[1.0]["overlap"] > before["overlap"] + 0.2
    assert got[1.0]["overlap"] > got[0.0]["overlap"] + 0.2
    assert got[0.0]["fvu_keys"] < before["fvu_keys"]  # the reconstruction half trains the SAE


def test_cross_site_release_says_how_it_was_made(tmp_path, tiny_model_dir):
    """The fine-tuned SAEs are written as a release: the base's config less its stale hold-out figures, the
    fit under ``cross_site``, FVU and dead fraction measured, the query map shipped, a model-card section."""
    from types import SimpleNamespace

    from conftest import make_tiny_release

    from s3attn.saes.checkpoint import load_many, read_release_config
    from s3attn.saes.query_map import QueryMap

    cs = _bench("sae_cross_site")
    base = make_tiny_release(tmp_path / "base", tiny_model_dir, layers=(1,))
    saes = load_many(base)
    qmap = tmp_path / "map.safetensors"
    QueryMap({1: torch.randn(4, 16, 16)}, {1: torch.zeros(4, 16)}, {}).save(qmap)
    fit = {1: {n: {"overlap": o, "fvu_keys": f} for n, o, f in (("before", 0.01, 0.2), ("after", 0.3, 0.1))}}
    held = {1: (torch.randn(500, 16), torch.randn(500, 16))}
    args = SimpleNamespace(
        objective="contrast", cross=0.3, steps=5, lr=1e-4, batch=8, guide="3:1", query_map=str(qmap),
        out=str(tmp_path / "out"),
    )  # fmt: skip
    cs.write_cross_release(args, base, saes, fit, held)
    out = tmp_path / "out"
    config = read_release_config(out)
    assert "holdout" not in config and config["cross_site"]["fit"]["1"]["after"]["overlap"] == 0.3
    meta = load_many(out)[1].meta
    assert meta.fvu == 0.1 and meta.dead_fraction == cs.dead_fraction(saes[1], held[1])
    card = (out / "README.md").read_text()
    assert "## Cross-site fine-tune" in card and "- layer 1: overlap 0.010 -> 0.300" in card
    assert torch.equal(QueryMap.load(out / "query_map.safetensors").weight[1], QueryMap.load(qmap).weight[1])
