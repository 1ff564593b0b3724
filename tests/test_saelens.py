"""SAELens export: `s3-train-sae export RELEASE --format saelens` folders load unchanged with
`sae_lens.SAE.load_from_disk` and encode/decode exactly as our TopKSAE; release cards carry HF front matter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_tiny_release

from s3attn.saes import load_many, read_release_config
from s3attn.saes.card import front_matter, strip_front_matter
from s3attn.saes.export import SAELENS_CFG, SAELENS_WEIGHTS, saelens_hook_name
from s3attn.train.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "checkpoints" / "smollm2-135m-k32"
CARD_KEYS = {"license", "base_model", "datasets", "library_name", "tags"}


def card_meta(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path} has no front matter"
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert isinstance(meta, dict) and CARD_KEYS <= set(meta), meta
    assert isinstance(meta["datasets"], list) and isinstance(meta["tags"], list)
    return meta


def export(release: Path, out: Path, *extra: str) -> Path:
    assert train_main(["export", str(release), "--format", "saelens", "--out", str(out), *extra]) == 0
    return out


def check_same_sae(ours, folder: Path, layer: int, site: str, x_ND: torch.Tensor) -> None:
    """The SAELens SAE in ``folder`` picks the same latents with the same activations and reconstruction."""
    sae_lens = pytest.importorskip("sae_lens")
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    assert theirs.cfg.architecture() == "topk" and theirs.cfg.k == ours.cfg.k
    assert (theirs.cfg.d_in, theirs.cfg.d_sae) == (ours.cfg.d_in, ours.cfg.num_latents)
    assert (
        theirs.cfg.metadata.hook_name == saelens_hook_name(layer, site) == f"blocks.{layer}.attn.hook_{site}"
    )
    assert theirs.cfg.metadata.model_name == ours.meta.model_id
    assert tuple(theirs.W_enc.shape) == (ours.cfg.d_in, ours.cfg.num_latents)
    with torch.no_grad():
        enc = ours.encode(x_ND)
        recon_ours = ours.decode(enc.top_acts, enc.top_indices)
        _, cache = theirs.run_with_cache(x_ND)
        acts_theirs = theirs.encode(x_ND)  # dense [N, d_sae]
        recon_theirs = theirs.decode(acts_theirs)
    pre = cache["hook_sae_acts_pre"]
    idx_theirs = pre.topk(ours.cfg.k, dim=-1).indices  # what SAELens' TopK keeps
    assert torch.equal(enc.top_indices.sort(dim=1).values, idx_theirs.sort(dim=1).values)
    assert (enc.top_acts > 0).float().mean() > 0.9  # the comparison is about real, non-zero latents
    torch.testing.assert_close(acts_theirs.gather(1, enc.top_indices), enc.top_acts, atol=1e-5, rtol=1e-5)
    dense_ours = torch.zeros_like(acts_theirs).scatter_(1, enc.top_indices, enc.top_acts)
    torch.testing.assert_close(acts_theirs, dense_ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(recon_theirs, recon_ours, atol=1e-5, rtol=1e-5)


def test_tiny_release_exports_to_saelens(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("sae_lens")
    release = make_tiny_release(tmp_path / "release", tiny_model_dir, layers=(1, 3), latents=64, k=4)
    out = export(release, tmp_path / "saelens")
    saes = load_many(release)
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == [f"blocks.{layer}.attn.hook_{site}" for layer in (1, 3) for site in ("k", "q")]
    torch.manual_seed(1)
    x_ND = torch.randn(50, 16) * 2
    for layer in (1, 3):
        with torch.no_grad():  # a non-zero b_dec and encoder bias, so both offsets are checked
            saes[layer].b_dec.normal_(0, 0.5)
            saes[layer].encoder.bias.normal_(0, 0.1)
    release2 = tmp_path / "release2"
    from s3attn.saes import write_release

    metas = {layer: sae.meta for layer, sae in saes.items()}
    write_release(release2, saes, metas, read_release_config(release))
    out = export(release2, out)  # replaces the earlier export
    for layer in (1, 3):
        for site in ("k", "q"):
            folder = out / saelens_hook_name(layer, site)
            assert (folder / SAELENS_WEIGHTS).is_file()
            assert json.loads((folder / SAELENS_CFG).read_text())["metadata"]["s3attn_layer"] == layer
            check_same_sae(saes[layer], folder, layer, site, x_ND)
    meta = card_meta(out / "README.md")
    assert meta["library_name"] == "saelens" and meta["base_model"] == saes[1].meta.model_id


def test_published_layer_exports_to_saelens(tmp_path: Path) -> None:
    pytest.importorskip("sae_lens")
    layer = 12
    out = export(PUBLISHED, tmp_path / "saelens", "--layers", str(layer))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        f"blocks.{layer}.attn.hook_k",
        f"blocks.{layer}.attn.hook_q",
    ]
    ours = load_many(PUBLISHED, layers=[layer])[layer]
    torch.manual_seed(2)
    scale = 0.5 * ours.W_dec.norm(dim=1).mean()  # unit rows: vectors of a few times a row's length
    x_ND = ours.b_dec.detach() + torch.randn(64, ours.cfg.d_in) * scale * 4
    check_same_sae(ours, out / saelens_hook_name(layer, "q"), layer, "q", x_ND)


def test_export_refuses_bad_options(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as err:
        export(PUBLISHED, tmp_path / "busy", "--layers", "12")
    assert err.value.code == 2
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit) as err:
        train_main(["export", str(PUBLISHED), "--format", "nope", "--out", str(tmp_path / "x")])
    assert err.value.code == 2 and not (tmp_path / "x").exists()


def test_release_cards_have_hub_front_matter(tmp_path: Path, tiny_model_dir: Path) -> None:
    release = make_tiny_release(tmp_path / "release", tiny_model_dir, layers=(1,))
    meta = card_meta(release / "README.md")
    config = read_release_config(release)
    assert meta["base_model"] == config["model_id"] and meta["datasets"] == ["random"]
    assert meta["license"] == "apache-2.0" and "sparse-autoencoder" in meta["tags"]
    assert "# Top-k SAEs on attention" in strip_front_matter((release / "README.md").read_text())

    published = card_meta(PUBLISHED / "README.md")
    config = read_release_config(PUBLISHED)
    assert published["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" == config["model_id"]
    assert published["datasets"] == [config["dataset"]]
    text = (PUBLISHED / "README.md").read_text(encoding="utf-8")
    assert text.startswith(front_matter(config))  # the same block write_release writes
    assert "| 12 | 0.0661 |" in strip_front_matter(text)
