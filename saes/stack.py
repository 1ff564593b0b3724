"""The model stack every command that uses an SAE release runs on: model + tokenizer, SAEs, geometry.

``resolve_release`` picks the release folder and the layers; ``load_stack`` loads the model the release
was trained for (or ``model``) in the precision asked for and its SAEs (float32: their encode keeps the
codes of a bf16 model faithful, see ``bench/bench_precision_sae.py``), checked to belong together, as one
typed ``ModelStack``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch

from s3attn.constants import DEFAULT_MODEL, DEFAULT_RELEASE, RELEASE_CONFIG, SMOLLM2_MODEL_ID
from s3attn.errors import S3Error
from s3attn.models.loading import LoadedModel, load_model
from s3attn.models.taps import AttnGeometry, attention_geometry
from s3attn.saes.checkpoint import check_compatible, load_many, read_release_config
from s3attn.saes.sae import TopKSAE


class ModelStack(NamedTuple):
    """A loaded model with the SAEs of the layers it is used at (unpacks as ``loaded, saes, geom``)."""

    loaded: LoadedModel
    saes: dict[int, TopKSAE]
    geom: AttnGeometry


class Release(NamedTuple):
    """An SAE release folder, its ``config.json`` and the layers chosen from it."""

    path: Path
    config: dict
    layers: list[int]


def published_releases() -> dict[str, Path]:
    """The releases shipped in ``checkpoints/`` (``s3attn.checkpoints``), by folder name."""
    root = Path(str(resources.files("s3attn.checkpoints")))
    return {p.name: p for p in sorted(root.iterdir()) if (p / RELEASE_CONFIG).is_file()}


def default_release() -> Path:
    """The published SmolLM2 release shipped in ``checkpoints/``."""
    path = published_releases().get(DEFAULT_RELEASE)
    if path is None:
        raise S3Error(
            f"no published release {DEFAULT_RELEASE}; pass --sae RELEASE_DIR (train one with s3-train-sae)"
        )
    return path


def model_name_for(model_id: str) -> str:
    """The name ``load_model`` takes for a release's model id."""
    if model_id == SMOLLM2_MODEL_ID:
        return DEFAULT_MODEL
    if Path(model_id).is_dir():
        return model_id
    raise S3Error(f"the SAE release was trained for model '{model_id}'; pass --model with its local folder")


def resolve_release(sae: str | None, layers: list[int] | None) -> Release:
    """The release folder (``sae``: a folder, or the name of a published release; else the default
    published one), its config, and the layers to use."""
    release = Path(sae) if sae else default_release()
    if not release.is_dir():
        published = published_releases()
        if sae not in published:
            raise S3Error(
                f"--sae {release}: no such folder; give an SAE release folder or a published release's name "
                f"({', '.join(published)})"
            )
        release = published[sae]
    rel_cfg = read_release_config(release)
    available = [int(x) for x in rel_cfg["layers"]]
    chosen = sorted(set(layers)) if layers else available
    missing = [x for x in chosen if x not in available]
    if missing:
        raise S3Error(f"--layers {missing}: not in the SAE release {release} (it has layers {available})")
    return Release(release, rel_cfg, chosen)


def load_stack(
    release: Path, rel_cfg: dict, layers: list[int], model: str | None, *, dtype: torch.dtype = torch.float32
) -> ModelStack:
    """Model (loaded in ``dtype``, e.g. ``resolve_dtype(name, device)``), tokenizer, SAEs per layer (float32),
    geometry: checked to belong together."""
    loaded = load_model(model or model_name_for(rel_cfg["model_id"]), dtype=dtype)
    geom = attention_geometry(loaded.model)
    check_compatible(
        release, model_id=loaded.model_id, head_dim=geom.head_dim, num_layers=geom.num_layers, layers=layers
    )
    return ModelStack(loaded, load_many(release, layers=layers), geom)
