"""The releases shipped in checkpoints/: each loads (ours and eai-sparsify's loader alike), fits SmolLM2's
geometry, and its card agrees with its files; the cross-site release says how it was made and ships the query
map it is meant to be read with."""

from __future__ import annotations

import pytest
import torch

from s3attn.constants import DEFAULT_RELEASE, QUERY_MAP_FILE, RELEASE_CARD, SMOLLM2_MODEL_ID
from s3attn.saes.card import front_matter
from s3attn.saes.checkpoint import check_compatible, load_many, read_release_config
from s3attn.saes.query_map import QueryMap
from s3attn.saes.stack import published_releases

RELEASES = published_releases()
XSITE = "smollm2-135m-k32-xsite"


def test_the_default_and_the_cross_site_release_are_shipped():
    assert {DEFAULT_RELEASE, XSITE} <= set(RELEASES)


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_release_loads_fits_smollm2_and_matches_its_card(name):
    path = RELEASES[name]
    config = read_release_config(path)
    saes = load_many(path)
    assert sorted(saes) == config["layers"]
    check_compatible(path, model_id=SMOLLM2_MODEL_ID, head_dim=64, num_layers=30)
    card = (path / RELEASE_CARD).read_text(encoding="utf-8")
    assert card.startswith(front_matter(config))
    for layer, sae in saes.items():
        assert sae.meta.fvu <= 0.10 and sae.meta.dead_fraction <= 0.05, (layer, sae.meta)
        assert f"| {layer} | {sae.meta.fvu:.4f} |" in card
    sparsify = pytest.importorskip("sparsify")
    layer = min(saes)
    theirs = sparsify.SparseCoder.load_from_disk(path / f"layers.{layer}")
    x_ND = saes[layer].b_dec.detach() + torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    ours = saes[layer].encode(x_ND)
    t_acts, t_idx, _ = theirs.encode(x_ND)
    assert torch.equal(t_idx.sort(1).values, ours.top_indices.sort(1).values)


def test_cross_site_release_is_the_default_trained_further_with_its_map():
    path, base = RELEASES[XSITE], read_release_config(RELEASES[DEFAULT_RELEASE])
    config = read_release_config(path)
    assert {k: config[k] for k in base if k != "holdout"} == {k: v for k, v in base.items() if k != "holdout"}
    assert config["cross_site"]["objective"] == "contrast"
    for layer, fit in config["cross_site"]["fit"].items():  # the held-out code overlap the loss is for
        assert fit["after"]["overlap"] > fit["before"]["overlap"] + 0.15, layer
    qmap = QueryMap.load(path / QUERY_MAP_FILE)
    assert sorted(qmap.weight) == config["layers"] and qmap.weight[config["layers"][0]].shape == (9, 64, 64)
    assert "## Cross-site fine-tune" in (path / RELEASE_CARD).read_text(encoding="utf-8")
