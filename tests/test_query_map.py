"""Query maps: the attention targets match the model's own attention, the ridge fit recovers a known map,
the file round-trips, and a mapped query site codes the mapped vectors."""

from __future__ import annotations

import pytest
import torch

from s3attn.errors import S3Error
from s3attn.models.taps import attention_geometry, tap_heads
from s3attn.saes.query_map import QueryMap
from s3attn.train.query_map import NormalEquations, attended_keys, fit_query_map, rope
from tests.conftest import tiny_model


def test_rope_attention_matches_the_models_own():
    model = tiny_model("llama")
    geo = attention_geometry(model)
    ids = torch.randint(4, 40, (1, 24), generator=torch.Generator().manual_seed(0))
    out = model(ids, output_attentions=True)
    taps = tap_heads(model, ids, [1])
    q, k = taps.queries[1][0], taps.keys[1][0]
    kv = torch.tensor(geo.kv_head_of_query)
    logits = torch.einsum("thd,shd->hts", rope(model, q), rope(model, k)[:, kv]) / geo.head_dim**0.5
    mask = torch.ones(24, 24, dtype=torch.bool).tril()
    mine = logits.masked_fill(~mask, float("-inf")).softmax(-1)
    torch.testing.assert_close(mine, out.attentions[1][0], atol=1e-5, rtol=1e-4)


def test_attended_keys_mean_and_argmax():
    model = tiny_model("llama")
    geo = attention_geometry(model)
    ids = torch.randint(4, 40, (1, 32), generator=torch.Generator().manual_seed(1))
    taps = tap_heads(model, ids, [0])
    q, k = taps.queries[0][0], taps.keys[0][0]
    y_mean, mass = attended_keys(model, q, k, geo.kv_head_of_query, sink=2, local=4, target="mean")
    y_arg, _ = attended_keys(model, q, k, geo.kv_head_of_query, sink=2, local=4, target="argmax")
    assert y_mean.shape == q.shape and mass.shape == q.shape[:2]
    assert torch.all(mass[:6] == 0) and torch.all(mass[6:] > 0)  # no position outside sink + local before 6
    assert torch.all((mass >= 0) & (mass <= 1 + 1e-6))
    # the argmax target is one of the group's keys outside sink and local window
    t, h = 20, 3
    cands = k[2 : t - 4 + 1, geo.kv_head_of_query[h]]
    assert torch.isclose(cands, y_arg[t, h]).all(-1).any()


def test_ridge_recovers_a_linear_map():
    torch.manual_seed(0)
    w_true, b_true = torch.randn(2, 8, 8), torch.randn(2, 8)
    eq = NormalEquations(2, 8)
    for _ in range(3):
        x = torch.randn(200, 2, 8)
        eq.add(x, torch.einsum("nhd,hde->nhe", x, w_true) + b_true, torch.rand(200, 2) + 0.1)
    w, b = eq.solve(ridge=1e-9)
    torch.testing.assert_close(w, w_true, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b, b_true, atol=1e-4, rtol=1e-4)


def test_fit_save_load_apply(tmp_path):
    model = tiny_model("llama")
    ctxs = [torch.randint(4, 40, (40,), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    qm = fit_query_map(model, ctxs, [1, 2], sink=1, local=2)
    path = tmp_path / "qm.safetensors"
    qm.save(path)
    back = QueryMap.load(path)
    assert back.fit["rows"] == qm.fit["rows"] == 3 * (40 - 3)
    x = torch.randn(5, 4, 16)
    torch.testing.assert_close(back.apply(2, x), torch.einsum("thd,hde->the", x, qm.weight[2]) + qm.bias[2])
    with pytest.raises(S3Error, match="no layer 0"):
        back.apply(0, x)


def test_damaged_query_map_is_one_clear_error(tmp_path):
    bad = tmp_path / "qm.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(S3Error, match="not a readable query map"):
        QueryMap.load(bad)
    with pytest.raises(S3Error, match="no such file"):
        QueryMap.load(tmp_path / "missing.safetensors")


def test_query_map_cli_writes_a_map_the_release_fingerprint_ignores(tmp_path, tiny_model_dir):
    from s3attn.evaluation.index_cache import release_fingerprint
    from s3attn.train.cli import main
    from tests.conftest import filler_words, make_tiny_release

    release = make_tiny_release(tmp_path / "rel", tiny_model_dir)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"d{i}.txt").write_text(filler_words(400, i))
    before = release_fingerprint(release)
    args = ["query-map", str(release), "--model", str(tiny_model_dir), "--corpus", str(corpus)]
    args += ["--contexts", "4", "--context-length", "32"]
    assert main([*args, "--sink", "1", "--local", "2"]) == 0
    qm = QueryMap.load(release / "query_map.safetensors")
    assert sorted(qm.weight) == [1, 3] and qm.weight[1].shape == (4, 16, 16)
    assert qm.fit["rows"] == 4 * (32 - 3) and qm.fit["local"] == 2
    assert release_fingerprint(release) == before  # cached indexes of the release stay valid
    with pytest.raises(SystemExit) as exit_info:  # too few contexts: one clear error, exit code 2
        main([*args, "--contexts", "999"])
    assert exit_info.value.code == 2


def test_mapped_queries_are_what_gets_coded():
    """An identity map codes the raw queries; a zero map with a bias codes that bias for every row."""
    from s3attn.retrieval.question import question_codes
    from s3attn.saes import SaeConfig, TopKSAE

    model = tiny_model("llama")
    geo = attention_geometry(model)
    torch.manual_seed(0)
    saes = {1: TopKSAE(SaeConfig(d_in=16, num_latents=64, k=4))}
    ids = torch.randint(4, 40, (12,), generator=torch.Generator().manual_seed(2))
    kv = geo.kv_head_of_query
    raw = question_codes(model, saes, kv, ids, (0, 12), site="query")
    eye = QueryMap({1: torch.eye(16).repeat(4, 1, 1)}, {1: torch.zeros(4, 16)}, {})
    same = question_codes(model, saes, kv, ids, (0, 12), site="query", query_map=eye)
    for key in raw:
        assert (raw[key][0] == same[key][0]).all()
    bias = torch.randn(16)
    const = QueryMap({1: torch.zeros(4, 16, 16)}, {1: bias.repeat(4, 1)}, {})
    out = question_codes(model, saes, kv, ids, (0, 12), site="query", query_map=const)
    want = saes[1].encode(bias[None]).top_indices[0].sort().values
    for idx, _ in out.values():
        assert (torch.from_numpy(idx).sort(-1).values == want).all()


def test_query_map_release_takes_the_map_of_the_indexs_own_release(tmp_path):
    """``--query-map release`` codes the question exactly as the release's map file named by path does; an
    index whose release ships no map refuses it with one clear error."""
    from s3attn.retrieval.config import QuestionConfig, RetrievalConfig
    from s3attn.retrieval.retriever import Retriever
    from tests.conftest import build_tiny_index, filler_words

    index, _, release = build_tiny_index(tmp_path, {"a.txt": filler_words(300, 1)})
    plain = Retriever(index)
    stack = (plain.loaded, plain.saes, plain.geom)

    def codes(query_map: str) -> dict:
        cfg = RetrievalConfig(question=QuestionConfig(site="query", query_map=query_map))
        ids = plain.tokenizer("where is the river", return_tensors="pt").input_ids[0]
        return Retriever(index, cfg=cfg, stack=stack).encoder.codes(ids, (0, len(ids)))

    with pytest.raises(S3Error, match="--query-map release: the index's SAE release has no query_map"):
        codes("release")
    gen = torch.Generator().manual_seed(3)
    weight = {layer: torch.randn(4, 16, 16, generator=gen) for layer in (1, 3)}
    QueryMap(weight, {layer: torch.randn(4, 16, generator=gen) for layer in (1, 3)}, {}).save(
        release / "query_map.safetensors"
    )
    by_name, by_path, raw = codes("release"), codes(str(release / "query_map.safetensors")), codes("")
    assert by_name.keys() == by_path.keys() == raw.keys()
    assert all((by_name[k][0] == by_path[k][0]).all() for k in by_name)
    assert any((by_name[k][0] != raw[k][0]).any() for k in by_name)  # the map was applied
