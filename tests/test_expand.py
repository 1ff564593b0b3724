"""Question expansion (``--expand``, HyDE): what is coded, the model's passage, the cache, bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import build_tiny_index, filler_words

import s3attn.retrieval.expand as expand_mod
from s3attn.retrieval.config import QuestionConfig, RetrievalConfig
from s3attn.retrieval.expand import Expander, hypothesis_prompt
from s3attn.retrieval.retriever import Retriever

QUESTION = "where is the queen of paris"
PASSAGE = "the river queen lives in paris"


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("expand")
    docs = {"a.txt": filler_words(300, 1) + " paris queen river " + filler_words(200, 2)}
    return build_tiny_index(root, docs)[0]


@pytest.fixture(scope="module")
def plain(tiny_index) -> Retriever:
    return Retriever(tiny_index)


def with_expand(tiny_index, plain: Retriever, **options) -> Retriever:
    """A retriever sharing ``plain``'s model and SAEs, with QuestionConfig(**options)."""
    cfg = RetrievalConfig(question=QuestionConfig(**options))
    return Retriever(tiny_index, cfg=cfg, stack=(plain.loaded, plain.saes, plain.geom))


@pytest.fixture
def fake_model(monkeypatch) -> list[str]:
    """The model 'writes' PASSAGE; returns the prompts it was given."""
    prompts: list[str] = []

    def fake_generate(model, tokenizer, prompt, max_new_tokens):
        prompts.append(prompt)
        return f"  {PASSAGE}\n", 0

    monkeypatch.setattr(expand_mod, "generate", fake_generate)
    return prompts


def same_scores(a, b) -> None:
    assert np.array_equal(a.positions_N, b.positions_N)
    np.testing.assert_array_equal(a.values_N, b.values_N)


@pytest.mark.parametrize(("mode", "coded"), [("hypothesis", PASSAGE), ("both", f"{QUESTION} {PASSAGE}")])
def test_the_model_s_passage_is_coded(tiny_index, plain, fake_model, mode, coded):
    r = with_expand(tiny_index, plain, expand=mode)
    none = with_expand(tiny_index, plain, expand="none")
    assert r.expander.coded_text(QUESTION, r.cfg.question) == coded
    same_scores(r.s3_scores(QUESTION)[0], none.s3_scores(coded)[0])
    assert len(fake_model) == 1 and QUESTION in fake_model[0]
    assert not np.array_equal(none.s3_scores(QUESTION)[0].values_N, r.s3_scores(QUESTION)[0].values_N)


def test_none_codes_the_question_without_running_the_model(tiny_index, plain, fake_model):
    r = with_expand(tiny_index, plain, expand="none")
    assert r.expander.coded_text(QUESTION, r.cfg.question) == QUESTION
    r.retrieve(QUESTION, "s3", 64)
    assert fake_model == []


def test_the_default_codes_the_question_then_the_passage(plain, fake_model):
    assert plain.cfg.question.expand == "both"
    assert plain.expander.coded_text(QUESTION, plain.cfg.question) == f"{QUESTION} {PASSAGE}"


def test_a_question_asked_again_reuses_the_passage(tiny_index, plain, fake_model):
    r = with_expand(tiny_index, plain, expand="hypothesis")
    for mode in ("s3", "hybrid", "s3"):
        r.retrieve(QUESTION, mode, 128)
    assert len(fake_model) == 1
    r.expander.hypothesis("another question", r.cfg.question)
    assert len(fake_model) == 2


def test_an_empty_passage_falls_back_to_the_question(tiny_index, plain, monkeypatch, caplog):
    monkeypatch.setattr(expand_mod, "generate", lambda *a: (" \n", 0))
    r = with_expand(tiny_index, plain, expand="hypothesis")
    assert r.expander.coded_text(QUESTION, r.cfg.question) == QUESTION
    assert "wrote nothing" in caplog.text


def test_real_generation_is_greedy_and_bounded(plain):
    cfg = QuestionConfig(expand="hypothesis", expand_tokens=6)
    first = Expander(plain.model, plain.tokenizer).hypothesis(QUESTION, cfg)
    again = Expander(plain.model, plain.tokenizer).hypothesis(QUESTION, cfg)
    assert first == again
    assert len(plain.tokenizer(first, add_special_tokens=False)["input_ids"]) <= 6 + 2  # re-tokenised


def test_prompt_fills_the_question_in(plain):
    template = "Write a passage for: {question}"
    prompt = hypothesis_prompt(plain.tokenizer, QUESTION, template)
    assert f"Write a passage for: {QUESTION}" in prompt

    class Plain:
        chat_template = None

    assert hypothesis_prompt(Plain(), QUESTION, template) == f"Write a passage for: {QUESTION}\n"


def test_show_spans_shows_the_coded_passage(tiny_index, capsys, fake_model):
    from s3attn.index_builder.cli import main

    argv = ["ask", str(tiny_index), QUESTION, "--mode", "s3", "--budget", "64", "--json", "--no-generate"]
    assert main([*argv, "--expand", "hypothesis", "--show-spans"]) == 0
    spans = json.loads(capsys.readouterr().out)["spans"]
    assert spans and all(s["why"]["expand_hypothesis"] == PASSAGE for s in spans)


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--expand", "magic", "--expand magic: choose one of none, hypothesis, both"),
        ("--expand-prompt", "no placeholder", "put {question} where the question goes"),
        ("--expand-tokens", "0", "--expand-tokens 0: must be at least 1"),
    ],
)
def test_bad_expand_options_are_one_line_errors(tiny_index, capsys, option, value, says):
    from s3attn.index_builder.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["ask", str(tiny_index), QUESTION, "--no-generate", option, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and says in err and len(err.strip().splitlines()) == 1
