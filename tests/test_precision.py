"""Model precision as a load-time choice (``--dtype``), recorded in the index.

Precision selection (auto on CPUs with and without the bf16 flags, explicit names, bad names), the field an
index records (a tiny bf16 build; an old index reads as float32), questions answered in the index's precision
unless told otherwise (then one warning), the fp16 question view only for fp32 models, and the eval cache key
and environment. Everything runs on the tiny random models of conftest.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch
from conftest import TINY_WORDS, make_tiny_release, save_tiny_model_dir, tiny_model, tiny_tokenizer

from s3attn.errors import S3Error
from s3attn.index_builder.meta import IndexAttrs
from s3attn.index_builder.reader import IndexReader
from s3attn.models import precision
from s3attn.models.half import half_weight_view
from s3attn.models.precision import DTYPE_CHOICES, dtype_name, resolve_dtype
from s3attn.retrieval.retriever import Retriever

DATA = Path(__file__).parent / "data"
LAYERS = (1, 3)
CHAT = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}east west {% endif %}"
NO_BF16 = frozenset({"fpu", "sse2", "avx2", "avx512f"})  # an x86 CPU without AMX / AVX512-BF16


# ---- choosing the precision ------------------------------------------------------------------------------
def test_auto_is_bf16_on_a_cpu_with_amx_or_avx512_bf16_else_fp32() -> None:
    assert resolve_dtype("auto", "cpu", cpu_flags={"sse2", "amx_bf16", "amx_tile"}) == torch.bfloat16
    assert resolve_dtype("auto", "cpu", cpu_flags={"avx512f", "avx512_bf16"}) == torch.bfloat16
    assert resolve_dtype("auto", "cpu", cpu_flags=set(NO_BF16)) == torch.float32
    assert resolve_dtype("auto", "cpu", cpu_flags=set()) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu"), cpu_flags=set()) == torch.float32
    assert resolve_dtype("auto", "meta", cpu_flags={"amx_bf16"}) == torch.float32  # other devices: fp32
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert resolve_dtype("auto", "cuda", cpu_flags=set()) == (torch.bfloat16 if gpu_bf16 else torch.float32)


def test_explicit_names_whatever_the_cpu() -> None:
    for flags in (set(), {"amx_bf16"}):
        assert resolve_dtype("float32", "cpu", cpu_flags=flags) == torch.float32
        assert resolve_dtype("bfloat16", "cpu", cpu_flags=flags) == torch.bfloat16
        assert resolve_dtype("float16", "cpu", cpu_flags=flags) == torch.float16
    assert DTYPE_CHOICES == ("auto", "bfloat16", "float16", "float32")
    for name in DTYPE_CHOICES[1:]:
        assert dtype_name(resolve_dtype(name)) == name


@pytest.mark.parametrize("bad", ["bf16", "fp32", "half", "", "Float32"])
def test_a_bad_name_is_one_line_naming_the_option(bad: str) -> None:
    with pytest.raises(S3Error) as err:
        resolve_dtype(bad, "cpu")
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"--dtype {bad}:") and "float32" in text


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path, monkeypatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    monkeypatch.setattr(precision, "_CPUINFO", info)
    monkeypatch.setattr(precision.sys, "platform", "linux")
    precision.read_cpu_flags.cache_clear()
    try:
        assert precision.read_cpu_flags() == {"fpu", "sse2", "avx512_bf16"}
        assert resolve_dtype("auto", "cpu") == torch.bfloat16
        info.write_text("flags\t\t: fpu sse2 avx512f\n")
        precision.read_cpu_flags.cache_clear()
        assert resolve_dtype("auto", "cpu") == torch.float32
        monkeypatch.setattr(precision.sys, "platform", "darwin")  # not read elsewhere: fp32
        precision.read_cpu_flags.cache_clear()
        assert precision.read_cpu_flags() == frozenset() and resolve_dtype("auto", "cpu") == torch.float32
    finally:
        precision.read_cpu_flags.cache_clear()


# ---- the recorded precision ------------------------------------------------------------------------------
def test_an_old_index_reads_as_float32() -> None:
    with IndexReader.open(DATA / "index_v1") as store:
        assert store.meta.dtype == "float32"
        assert "dtype" not in store.meta.extra
    raw = json.loads((DATA / "index_v1" / "index.zarr" / "zarr.json").read_text())["attributes"]
    assert "dtype" not in raw
    attrs = IndexAttrs.from_json(raw)
    assert attrs.dtype == "float32" and "dtype" not in attrs.to_json()  # an fp32 index writes no key
    bf16 = IndexAttrs.from_json({**raw, "dtype": "bfloat16"})
    assert bf16.dtype == "bfloat16" and bf16.to_json()["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        IndexAttrs.from_json({**raw, "dtype": 16})


def _words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(TINY_WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny Llama folder (with a chat template), a tiny SAE release on layers 1 and 3, a two-document corpus and an index of it
    built with ``s3-index build --dtype bfloat16``."""
    from s3attn.index_builder.cli import main

    root = tmp_path_factory.mktemp("prec")
    model_dir = save_tiny_model_dir(root / "model")
    tok = tiny_tokenizer()
    tok.chat_template = CHAT  # the RULER prompts of s3-eval need one
    tok.save_pretrained(model_dir)
    release = make_tiny_release(root / "release", model_dir, LAYERS)
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(_words(150, 1) + " paris queen paris queen " + _words(100, 2))
    (corpus / "b.txt").write_text(_words(200, 3))

    def build(out: Path, *extra: str) -> int:
        args = ["build", str(corpus), "--out", str(out), "--sae", str(release), "--model", str(model_dir)]
        return main([*args, "--chunk", "64", "--overlap", "8", "--no-progress", *extra])

    index = root / "index-bf16"
    assert build(index, "--dtype", "bfloat16") == 0
    return {"root": root, "index": index, "build": build, "model_dir": model_dir, "release": release}


def test_a_bf16_build_records_bfloat16(world: dict, capsys) -> None:
    from s3attn.index_builder.cli import main

    with IndexReader.open(world["index"]) as store:
        assert store.meta.dtype == "bfloat16" and store.attrs["dtype"] == "bfloat16"
        assert store.num_tokens > 300
    capsys.readouterr()
    assert main(["info", str(world["index"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "bfloat16"


def test_auto_falls_back_to_fp32_on_a_cpu_without_bf16(world: dict, monkeypatch) -> None:
    """A CPU without AMX / AVX512-BF16 (simulated): auto builds in float32, and questions run in float32
    through the fp16-packed question view."""
    monkeypatch.setattr(precision, "read_cpu_flags", lambda: NO_BF16)
    out = world["root"] / "index-auto-nobf16"
    assert world["build"](out) == 0
    with IndexReader.open(out) as store:
        assert store.meta.dtype == "float32" and "dtype" not in store.attrs
    r = Retriever(out)
    assert r.dtype == "float32" and r.model.dtype == torch.float32
    spans = r.retrieve("paris queen", "s3", budget=64)
    assert spans and sum(s.end - s.start for s in spans) <= 64


def test_adding_to_an_index_keeps_its_precision(world: dict, monkeypatch, capsys) -> None:
    monkeypatch.setattr(precision, "read_cpu_flags", lambda: NO_BF16)  # auto alone would say float32
    assert world["build"](world["index"]) == 0  # auto on an existing bf16 index: its bf16, nothing to add
    with IndexReader.open(world["index"]) as store:
        assert store.meta.dtype == "bfloat16"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        world["build"](world["index"], "--dtype", "float32")
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "--dtype float32" in err[0] and "bfloat16" in err[0], err


def test_questions_use_the_index_precision_unless_told(world: dict, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="s3attn"):
        same = Retriever(world["index"])
        assert same.dtype == "bfloat16" and same.model.dtype == torch.bfloat16
        assert same.encoder.model is same.model  # the fp16-packed view is for fp32 models only
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        other = Retriever(world["index"], dtype="float32")
    assert other.dtype == "float32" and other.model.dtype == torch.float32
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "bfloat16" in warnings[0] and "float32" in warnings[0], warnings
    assert other.retrieve("paris queen", "s3", budget=64)
    assert Retriever(world["index"], dtype=torch.bfloat16).dtype == "bfloat16"
    assert Retriever(world["index"], dtype="index").dtype == "bfloat16"
    with pytest.raises(S3Error, match="^--dtype fp8: choose one of index, auto"):
        Retriever(world["index"], dtype="fp8")


def test_ask_dtype_override_warns_once(world: dict, capsys) -> None:
    from s3attn.index_builder.cli import main

    ask = ["ask", str(world["index"]), "paris queen", "--no-generate", "--mode", "s3", "--budget", "64"]
    assert main(ask) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*ask, "--dtype", "float32"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "bfloat16" in warnings[0] and "float32" in warnings[0], warnings
    with pytest.raises(SystemExit) as exc:
        main([*ask, "--dtype", "bf16"])
    assert exc.value.code == 2
    assert "s3-index: error: --dtype bf16: choose one of index, auto" in capsys.readouterr().err


def test_the_half_view_applies_to_fp32_cpu_models_only() -> None:
    model = tiny_model("llama")
    bf16 = tiny_model("llama").to(torch.bfloat16)
    assert half_weight_view(bf16, 3) is bf16
    assert half_weight_view(bf16.to(torch.float16), 3) is bf16
    engines = torch.backends.quantized.supported_engines
    if any(e in engines for e in ("fbgemm", "x86")):
        assert half_weight_view(model, 3) is not model


# ---- evaluation ------------------------------------------------------------------------------------------
def test_eval_cache_key_and_environment_name_the_precision(world: dict, tmp_path: Path) -> None:
    from s3attn.evaluation.cli import main
    from s3attn.evaluation.evaluate import EvalConfig
    from s3attn.evaluation.index_cache import cache_key, index_identity
    from s3attn.models.loading import load_model
    from s3attn.saes.checkpoint import load_many

    cfg = EvalConfig(chunk=64)
    stacks = {
        d: (load_model(str(world["model_dir"]), dtype=d), load_many(world["release"]), None)
        for d in (torch.float32, torch.bfloat16)
    }
    ids = {d: index_identity(s, cfg, world["release"]) for d, s in stacks.items()}
    assert "dtype" not in ids[torch.float32] and ids[torch.bfloat16]["dtype"] == "bfloat16"
    assert cache_key("text", ids[torch.float32]) != cache_key("text", ids[torch.bfloat16])
    out = tmp_path / "eval"
    argv = ["--sae", str(world["release"]), "--model", str(world["model_dir"]), "--tasks", "ruler_vt",
            "--lengths", "160", "--samples", "1", "--methods", "s3", "--budget", "48", "--max-context", "200",
            "--max-new-tokens", "2", "--chunk", "128", "--out", str(out), "--no-progress", "--dtype", "bfloat16"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["dtype"] == "bfloat16" and data["environment"]["dtype"] == "bfloat16"
    assert len(data["rows"]) == 1 and "precision bfloat16" in (out / "results.md").read_text()
