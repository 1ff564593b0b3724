"""SAE checkpoint format: roundtrips, releases, eai-sparsify interop, and the loader's refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import s3attn.saes.checkpoint as ckpt
from s3attn.constants import RELEASE_CARD, RELEASE_CONFIG, SAE_CFG, SAE_FORMAT_VERSION, SAE_WEIGHTS
from s3attn.errors import S3Error
from s3attn.saes import (
    SaeConfig,
    SaeMeta,
    TopKSAE,
    check_compatible,
    load,
    load_many,
    read_release_config,
    save_sae,
    write_release,
)

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
INFO = {"model_id": MODEL, "dataset": "wikitext-2", "dataset_license": "CC-BY-SA-3.0", "context_length": 512}


def make_sae(seed=0, d_in=8, latents=32, k=4) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(SaeConfig(d_in=d_in, num_latents=latents, k=k))
    with torch.no_grad():
        sae.encoder.bias.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


def meta(layer=3, **kw) -> SaeMeta:
    base = dict(model_id=MODEL, layer=layer, sites=("k", "q"), head_dim=8, training_tokens=1000, fvu=0.12,
                dead_fraction=0.01)  # fmt: skip
    return SaeMeta(**{**base, **kw})


@pytest.fixture
def release(tmp_path) -> Path:
    saes = {layer: make_sae(seed=layer) for layer in (0, 5)}
    return write_release(tmp_path / "rel", saes, {layer: meta(layer) for layer in saes}, INFO)


def test_save_load_roundtrip(tmp_path):
    sae = make_sae()
    save_sae(sae, tmp_path / "layers.3", meta())
    assert sorted(p.name for p in (tmp_path / "layers.3").iterdir()) == [SAE_CFG, SAE_WEIGHTS]
    back = load(tmp_path / "layers.3")
    assert back.cfg == sae.cfg
    assert back.meta == meta()
    for name, p in sae.state_dict().items():
        assert torch.equal(p, back.state_dict()[name]), name
    x = torch.randn(20, 8)
    a, b = sae(x), back(x)
    assert torch.equal(a.top_indices, b.top_indices) and torch.equal(a.sae_out, b.sae_out)
    half = load(tmp_path / "layers.3", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    cfg = json.loads((tmp_path / "layers.3" / SAE_CFG).read_text())
    assert cfg["activation"] == "topk" and cfg["d_in"] == 8 and cfg["expansion_factor"] == 4
    assert cfg["format_version"] == SAE_FORMAT_VERSION and cfg["sites"] == ["k", "q"]


def test_write_release_and_load_many(release):
    cfg = read_release_config(release)
    assert cfg["layers"] == [0, 5] and cfg["model_id"] == MODEL and cfg["head_dim"] == 8
    assert cfg["k"] == 4 and cfg["num_latents"] == 32 and cfg["sites"] == ["k", "q"]
    assert cfg["training_tokens"] == 1000 and cfg["dataset_license"] == "CC-BY-SA-3.0"
    card = (release / RELEASE_CARD).read_text()
    assert "| 5 | 0.1200 | 1.00% | 4 | 1,000 |" in card and "load_many" in card
    assert [p.name for p in release.parent.iterdir()] == ["rel"]  # no temp folders left
    saes = load_many(release)
    assert list(saes) == [0, 5] and saes[5].meta.layer == 5
    assert torch.equal(saes[5].W_dec, make_sae(seed=5).W_dec)
    assert list(load_many(release, layers=[5])) == [5]
    with pytest.raises(S3Error, match="has no layer 7"):
        load_many(release, layers=[7])


def test_write_release_interrupted_leaves_old_release(release, monkeypatch):
    before = (release / RELEASE_CONFIG).read_text()
    real_save = ckpt.save_sae
    calls = []

    def failing_save(sae, folder, m):
        calls.append(folder)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(sae, folder, m)

    monkeypatch.setattr(ckpt, "save_sae", failing_save)
    saes = {layer: make_sae(seed=10 + layer) for layer in (0, 5)}
    with pytest.raises(KeyboardInterrupt):
        write_release(release, saes, {layer: meta(layer) for layer in saes}, INFO)
    assert (release / RELEASE_CONFIG).read_text() == before
    assert [p.name for p in release.parent.iterdir()] == ["rel"]
    assert torch.equal(load_many(release)[0].W_dec, make_sae(seed=0).W_dec)


def test_sparsify_loads_our_folder(release):
    sparsify = pytest.importorskip("sparsify")
    theirs = sparsify.SparseCoder.load_from_disk(release / "layers.5")
    ours = load(release / "layers.5")
    torch.manual_seed(7)
    x = torch.randn(64, 8)
    t_acts, t_idx, _ = theirs.encode(x)
    o_acts, o_idx = ours.encode(x)
    t_order, o_order = t_idx.argsort(1), o_idx.argsort(1)
    assert torch.equal(t_idx.gather(1, t_order), o_idx.gather(1, o_order))
    torch.testing.assert_close(t_acts.gather(1, t_order), o_acts.gather(1, o_order))
    torch.testing.assert_close(theirs(x).sae_out, ours(x).sae_out)


def test_check_compatible(release):
    check_compatible(release, model_id=MODEL, head_dim=8, num_layers=30, layers=[0, 5])
    expected = f"SAE release {release} was trained for model {MODEL}, not other/model"
    with pytest.raises(S3Error, match=re.escape(expected)):
        check_compatible(release, model_id="other/model", head_dim=8, num_layers=30)
    with pytest.raises(S3Error, match="head_dim 8.*head_dim 64"):
        check_compatible(release, model_id=MODEL, head_dim=64, num_layers=30)
    with pytest.raises(S3Error, match="layer 5.*only 4 layers"):
        check_compatible(release, model_id=MODEL, head_dim=8, num_layers=4)
    with pytest.raises(S3Error, match="has no layer 2"):
        check_compatible(release, model_id=MODEL, head_dim=8, num_layers=30, layers=[2])
    saes = load_many(release)
    check_compatible(saes, model_id=MODEL, head_dim=8, num_layers=30)
    with pytest.raises(S3Error, match="not other/model"):
        check_compatible(saes[0], model_id="other/model", head_dim=8, num_layers=30)
    with pytest.raises(S3Error, match="no .meta"):
        check_compatible(make_sae(), model_id=MODEL, head_dim=8, num_layers=30)


def _rewrite_cfg(folder: Path, **changes) -> None:
    cfg = json.loads((folder / SAE_CFG).read_text())
    cfg.update(changes)
    (folder / SAE_CFG).write_text(json.dumps(cfg))


def test_loader_refusals(release):
    layer = release / "layers.0"
    tensors = load_file(layer / SAE_WEIGHTS)

    save_file({k: v for k, v in tensors.items() if k != "W_dec"}, layer / SAE_WEIGHTS)
    with pytest.raises(S3Error, match="tensor 'W_dec' is missing"):
        load(layer)
    save_file({**tensors, "b_dec": torch.zeros(9)}, layer / SAE_WEIGHTS)
    with pytest.raises(S3Error, match=r"'b_dec' has shape \(9,\)"):
        load(layer)
    (layer / SAE_WEIGHTS).write_bytes((layer.parent / "layers.5" / SAE_WEIGHTS).read_bytes()[:200])
    with pytest.raises(S3Error, match="unreadable"):
        load(layer)
    (layer / SAE_WEIGHTS).unlink()
    with pytest.raises(S3Error, match=f"{SAE_WEIGHTS} is missing"):
        load(layer)

    good = release / "layers.5"
    _rewrite_cfg(good, format_version=SAE_FORMAT_VERSION + 1)
    with pytest.raises(S3Error, match="newer than"):
        load(good)
    _rewrite_cfg(good, format_version=SAE_FORMAT_VERSION, activation="groupmax")
    with pytest.raises(S3Error, match="activation 'groupmax'"):
        load(good)
    _rewrite_cfg(good, activation="topk", some_future_field={"x": 1})  # unknown extras are ignored
    assert load(good).meta.layer == 5
    (good / SAE_CFG).write_text("{not json")
    with pytest.raises(S3Error, match="unreadable JSON"):
        load(good)
    (good / SAE_CFG).unlink()
    with pytest.raises(S3Error, match=f"{SAE_CFG} is missing"):
        load(good)
    with pytest.raises(S3Error, match="no such folder"):
        load(release / "layers.9")


def test_release_config_refusals(tmp_path, release):
    cfg = json.loads((release / RELEASE_CONFIG).read_text())
    (release / RELEASE_CONFIG).write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(S3Error, match="newer than"):
        load_many(release)
    with pytest.raises(S3Error, match="no such folder"):
        read_release_config(tmp_path / "nope")
    with pytest.raises(S3Error, match="lacks"):
        write_release(tmp_path / "r2", {0: make_sae()}, {0: meta(0)}, {"model_id": MODEL})
    with pytest.raises(S3Error, match="meta says layer 3"):
        write_release(tmp_path / "r2", {0: make_sae()}, {0: meta(3)}, INFO)
    with pytest.raises(S3Error, match="head_dim=16"):
        save_sae(make_sae(), tmp_path / "x", meta(head_dim=16))


def test_resolve_release_takes_a_folder_or_a_published_name(tmp_path, release, monkeypatch):
    """``--sae`` names a folder, or a release shipped in ``checkpoints/`` by its folder name; anything else is
    refused with the published names listed."""
    from s3attn.saes import stack

    monkeypatch.chdir(tmp_path)  # a relative name must not be found as a folder here
    published = stack.published_releases()
    assert stack.DEFAULT_RELEASE in published and stack.default_release() == published[stack.DEFAULT_RELEASE]
    by_name = stack.resolve_release(stack.DEFAULT_RELEASE, None)
    assert by_name.path == published[stack.DEFAULT_RELEASE] and by_name.layers == by_name.config["layers"]
    assert stack.resolve_release(str(release), [5]).path == release
    with pytest.raises(S3Error, match=f"no such folder.*{stack.DEFAULT_RELEASE}"):
        stack.resolve_release("no-such-release", None)
