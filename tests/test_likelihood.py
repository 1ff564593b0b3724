"""The ``likelihood`` fusion: question log-probabilities per candidate, and the spans they choose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model, tiny_tokenizer
from test_retrieval import configured, retriever, tiny_index  # noqa: F401 (fixtures)

from s3attn.errors import S3Error
from s3attn.retrieval.fusion import FusionConfig, hybrid_spans
from s3attn.retrieval.likelihood import PROMPT, likelihood_spans, question_logprobs
from s3attn.retrieval.spans import Span, bias_spans


def _one_by_one(model, tok, passage: list[int], question: str) -> float:
    """The question's mean log-probability after ``passage``, from one unpadded sequence."""
    pre = tok(PROMPT[0], add_special_tokens=False)["input_ids"]
    post = tok(" " + PROMPT[1], add_special_tokens=False)["input_ids"]
    q = tok(" " + question, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([pre + passage + post + q])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
    n = ids.shape[1]
    return float(logp[torch.arange(n - len(q) - 1, n - 1), torch.tensor(q)].mean())


def test_batched_padded_logprobs_equal_one_sequence_at_a_time():
    """Passages of different lengths share padded batches (more than one: BATCH is 8); each score equals
    the same passage scored alone."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    rng = np.random.default_rng(0)
    passages = [rng.integers(4, 40, size=int(n)).tolist() for n in rng.integers(3, 30, size=11)]
    got = question_logprobs(model, tok, passages, "where is the queen")
    want = [_one_by_one(model, tok, p, "where is the queen") for p in passages]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(set(np.round(got, 4))) > 1  # the passages do change the question's likelihood


def _span(a: int, b: int, source: str, score: float = 1.0) -> Span:
    return Span(a, b, score, source, {})


def test_candidates_are_ranked_by_the_score_alone_bias_first():
    """One S3 span the model likes best is fed although BM25 has more candidates than the budget holds;
    BM25's passages follow by score, the bias spans stay first."""
    n = 4000
    bias = bias_spans([(0, n)], 32, 32)
    bm25 = [_span(200 + 200 * i, 328 + 200 * i, "bm25", 10.0 - i) for i in range(8)]
    s3 = [_span(3000, 3040, "s3", 0.2), _span(3500, 3540, "s3", 1.0)]
    likes = {(3000, 3040): -1.0, (200, 328): -2.0, (400, 528): -2.5}
    seen = []

    def score(cands):
        seen.extend((c.start, c.end) for c in cands)
        return [likes.get((c.start, c.end), -9.0) for c in cands]

    out = likelihood_spans(bias, bm25, s3, 64 + 40 + 256, score)
    assert {(a, b) for a, b in seen} >= {(3000, 3040), (3500, 3540), (200, 328)}
    got = {(s.start, s.end) for s in out}
    assert got == {(0, 32), (200, 328), (400, 528), (3000, 3040), (n - 32, n)}
    kept = next(s for s in out if s.start == 3000)
    assert kept.why["question_logprob"] == -1.0


def test_hybrid_spans_refuses_the_model_fusion():
    with pytest.raises(S3Error, match="needs the model"):
        hybrid_spans([], [], [], np.zeros(10), 10, FusionConfig(fusion="likelihood"))


def test_retriever_runs_the_likelihood_fusion(tiny_index, retriever):  # noqa: F811
    r = configured(tiny_index, retriever, fusion="likelihood")
    spans = r.retrieve("paris queen", "hybrid", 300)
    assert sum(s.end - s.start for s in spans) <= 300
    assert spans[0].start == 0 and spans[0].source.startswith("bias")
    scored = [s for s in spans if "bias" not in s.source]
    assert scored and all("question_logprob" in s.why for s in scored)


def test_show_spans_says_why_with_the_likelihood_fusion(tiny_index, retriever, capsys):  # noqa: F811
    from s3attn.retrieval.cli import print_spans

    r = configured(tiny_index, retriever, fusion="likelihood")
    print_spans(r.retrieve("paris queen", "hybrid", 300))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("hybrid (likelihood): candidates ranked") and "best -" in first


def test_a_wider_s3_pool_lets_the_model_feed_a_span_s3_ranked_below_the_budget(
    tiny_index,  # noqa: F811
    retriever,  # noqa: F811
    monkeypatch,
):
    """With ``likelihood_pool`` 3 (the default) the model judges S3's spans within three budgets; the one it
    likes best, S3's weakest (outside what a pool of 1 offers), is fed."""
    import s3attn.retrieval.retriever as retriever_module

    seen: list[list[Span]] = []  # S3's candidates per retrieve

    def spy(model, tokenizer, tokens_of, question):
        def score(cands):
            s3 = [c for c in cands if c.source == "s3"]
            seen.append(s3)
            weakest = min(s3, key=lambda c: c.score)
            return [1.0 if c is weakest else -1.0 for c in cands]

        return score

    monkeypatch.setattr(retriever_module, "scorer", spy)
    budget = 200
    narrow_r = configured(tiny_index, retriever, fusion="likelihood", likelihood_pool=1.0)
    narrow_r.retrieve("paris queen", "hybrid", budget)
    wide = configured(tiny_index, retriever, fusion="likelihood")
    fed = wide.retrieve("paris queen", "hybrid", budget)
    narrow, pool = seen
    assert sum(c.end - c.start for c in narrow) <= budget < sum(c.end - c.start for c in pool)
    favoured = min(pool, key=lambda c: c.score)
    assert (favoured.start, favoured.end) not in {(c.start, c.end) for c in narrow}
    assert any(s.start <= favoured.start and favoured.end <= s.end for s in fed), (favoured, fed)


def test_likelihood_pool_out_of_range_is_refused():
    from s3attn.retrieval.fusion import check_fusion_config

    with pytest.raises(S3Error, match="--likelihood-pool"):
        check_fusion_config(FusionConfig(likelihood_pool=0.5))
