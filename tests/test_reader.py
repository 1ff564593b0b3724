"""Answering with another model (``Retriever(..., reader=...)``, ``s3-index ask --reader``): an index built
with a tiny Llama read by a tiny Qwen2 whose tokenizer has its own chat template, and the real SmolLM2 as
reader (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import save_tiny_model_dir, tiny_tokenizer
from test_filters import build_tiny_index, words

from s3attn.models.precision import DTYPES, model_dtype
from s3attn.retrieval.generate import chat_prompt
from s3attn.retrieval.retriever import Retriever

QUESTION = "where is the queen of paris"
# the reader's chat template: many more tokens around the question than the plain prompt of the index model
TEMPLATE = (
    "{% for m in messages %}the king the king the king {{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %} queen queen queen{% endif %}"
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reader")
    model_dir = save_tiny_model_dir(root / "model", "llama")
    docs = {"a.txt": words(200, 1) + " paris queen paris queen " + words(150, 2), "b.txt": words(200, 3)}
    index = build_tiny_index(root, model_dir, docs)
    reader_dir = save_tiny_model_dir(root / "reader", "qwen2")
    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    tok.save_pretrained(reader_dir)
    base = Retriever(index)
    return {"index": index, "reader_dir": reader_dir, "base": base}


def counting(module) -> list[int]:
    """A list whose length is the number of forward calls of ``module`` from now on."""
    calls: list[int] = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_reader_answers_and_the_index_model_retrieves(setup):
    base: Retriever = setup["base"]
    stack = (base.loaded, base.saes, base.geom)
    r = Retriever(setup["index"], stack=stack, reader=setup["reader_dir"])
    assert r.model.config.model_type == "llama" and r.reader.model.config.model_type == "qwen2"
    assert model_dtype(r.reader.model) == DTYPES[r.dtype]  # the reader loads in the retrieval precision
    reader_calls, index_calls = counting(r.reader.model), counting(r.model)
    spans = r.retrieve(QUESTION, "hybrid", 96)
    assert reader_calls == []  # the reader is not used for retrieval
    assert spans == base.retrieve(QUESTION, "hybrid", 96)  # same spans as without a reader
    n0 = len(index_calls)
    r.retrieve(QUESTION, "hybrid", 96)
    n1 = len(index_calls)
    ans = r.answer(QUESTION, "hybrid", 96, max_new_tokens=3)
    assert len(reader_calls) == 3  # the reader generates (one forward per new token) ...
    assert len(index_calls) - n1 == n1 - n0  # ... and the index model only retrieves
    assert ans.spans == spans
    context = "\n...\n".join(s.text.strip() for s in spans)
    tok = r.reader.tokenizer
    prompt = chat_prompt(tok, context, QUESTION)
    assert prompt.startswith("the king the king the king") and prompt.endswith("queen queen queen")
    assert ans.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    plain = base.answer(QUESTION, "hybrid", 96, max_new_tokens=3)
    assert plain.prompt_tokens != ans.prompt_tokens  # the index model's own (plain) prompt
    assert ans.seconds >= ans.retrieval_seconds > 0 and ans.generation_seconds > 0


def test_reader_accepts_a_loaded_model(setup):
    base: Retriever = setup["base"]
    r = Retriever(setup["index"], stack=(base.loaded, base.saes, base.geom), reader=base.loaded)
    assert r.reader is base.loaded
    assert r.answer(QUESTION, "bm25", 64, max_new_tokens=2).prompt_tokens == (
        base.answer(QUESTION, "bm25", 64, max_new_tokens=2).prompt_tokens
    )


def test_ask_cli_reader(setup, tmp_path: Path, capsys):
    from s3attn.index_builder.cli import main

    index, reader = str(setup["index"]), str(setup["reader_dir"])
    argv = ["ask", index, QUESTION, "--budget", "64", "--max-new-tokens", "2", "--json", "--reader", reader]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reader"] == reader and isinstance(out["answer"], str) and out["spans"]
    assert out["generation_seconds"] > 0 and out["retrieval_seconds"] > 0
    with pytest.raises(SystemExit) as exc:
        main(["ask", index, QUESTION, "--reader", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["ask", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--reader" in out and "--documents" in out


@pytest.mark.slow
def test_smollm2_as_reader(setup, smollm2):
    """The real SmolLM2 answers from the tiny index, with its own chat template and tokenizer."""
    base: Retriever = setup["base"]
    r = Retriever(setup["index"], stack=(base.loaded, base.saes, base.geom), reader="smollm2-135m")
    assert r.reader.model_id == smollm2.model_id and r.reader.model.config.model_type == "llama"
    spans = r.retrieve(QUESTION, "hybrid", 64)
    assert spans == base.retrieve(QUESTION, "hybrid", 64)
    ans = r.answer(QUESTION, "hybrid", 64, max_new_tokens=8)
    tok = smollm2.tokenizer
    prompt = chat_prompt(tok, "\n...\n".join(s.text.strip() for s in spans), QUESTION)
    assert "<|im_start|>assistant" in prompt  # SmolLM2's chat template
    assert ans.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert ans.text.strip()
