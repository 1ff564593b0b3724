"""The published SAE format: one ``layers.<L>/`` folder per layer (eai-sparsify layout) inside a release.

::

    RELEASE/config.json                 model, dataset, context length, layers, sites, k, latents, head_dim
    RELEASE/README.md                   model card (per-layer FVU, dead fraction, L0, tokens; how to load)
    RELEASE/layers.<L>/cfg.json         eai-sparsify fields + ours (model_id, layer, sites, head_dim, ...)
    RELEASE/layers.<L>/sae.safetensors  encoder.weight, encoder.bias, W_dec, b_dec

``sparsify.SparseCoder.load_from_disk(RELEASE / "layers.<L>")`` reads a layer folder unchanged (it drops the
fields it does not know). Every write goes to a temp name first, so an interrupted save leaves the old
files (or nothing), never half of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from s3attn.constants import (
    LAYER_DIR_PREFIX,
    RELEASE_CARD,
    RELEASE_CONFIG,
    SAE_CFG,
    SAE_FORMAT_VERSION,
    SAE_WEIGHTS,
    TENSOR_B_DEC,
    TENSOR_ENCODER_B,
    TENSOR_ENCODER_W,
    TENSOR_W_DEC,
)
from s3attn.errors import S3Error
from s3attn.paths import atomic_write_json, atomic_write_text, kill_point, staged_dir

from .card import front_matter
from .sae import SaeConfig, TopKSAE

_LAYER_RE = re.compile(r"layers[._](\d+)$")
_RELEASE_KEYS = ("model_id", "dataset", "dataset_license", "context_length")


@dataclass(frozen=True)
class SaeMeta:
    """What an SAE was trained on and how well it does; stored in ``cfg.json`` next to sparsify's fields."""

    model_id: str | None
    layer: int
    sites: tuple[str, ...] = field(default=())
    head_dim: int = 0
    format_version: int = SAE_FORMAT_VERSION
    training_tokens: int = 0
    fvu: float | None = None
    dead_fraction: float | None = None


def _layer_dir(release: Path, layer: int) -> Path:
    return Path(release) / f"{LAYER_DIR_PREFIX}{layer}"


def _sae_cfg_dict(sae: TopKSAE, meta: SaeMeta) -> dict[str, Any]:
    cfg = sae.cfg
    return {
        # eai-sparsify's SparseCoderConfig fields + d_in
        "activation": "topk",
        "expansion_factor": cfg.expansion_factor,
        "normalize_decoder": cfg.normalize_decoder,
        "num_latents": cfg.num_latents,
        "k": cfg.k,
        "multi_topk": cfg.multi_topk,
        "skip_connection": False,
        "transcode": False,
        "d_in": cfg.d_in,
        # ours
        **{**asdict(meta), "sites": list(meta.sites), "format_version": SAE_FORMAT_VERSION},
    }


def save_sae(sae: TopKSAE, folder: str | Path, meta: SaeMeta) -> None:
    """Write ``cfg.json`` + ``sae.safetensors`` into ``folder`` (each by temp file + rename)."""
    if meta.head_dim != sae.cfg.d_in:
        raise S3Error(f"save_sae: meta.head_dim={meta.head_dim} but the SAE's d_in is {sae.cfg.d_in}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        TENSOR_ENCODER_W: sae.encoder.weight,
        TENSOR_ENCODER_B: sae.encoder.bias,
        TENSOR_W_DEC: sae.W_dec,
        TENSOR_B_DEC: sae.b_dec,
    }
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    tmp = folder / f".{SAE_WEIGHTS}.{os.getpid()}.tmp"
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, folder / SAE_WEIGHTS)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_json(folder / SAE_CFG, _sae_cfg_dict(sae, meta))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise S3Error(f"{what} {path.parent}: {path.name} is missing; is this a folder written by save_sae?")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise S3Error(f"{what} {path}: unreadable JSON ({err}); re-download or re-export it") from None
    if not isinstance(obj, dict):
        raise S3Error(f"{what} {path}: expected a JSON object")
    return obj


def _check_version(obj: Mapping[str, Any], where: Path) -> None:
    version = obj.get("format_version", SAE_FORMAT_VERSION)
    if not isinstance(version, int) or version > SAE_FORMAT_VERSION:
        raise S3Error(
            f"{where}: format_version {version!r} is newer than this s3-attention supports "
            f"({SAE_FORMAT_VERSION}); upgrade s3-attention"
        )


def _int_field(raw: Mapping[str, Any], key: str, where: Path) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise S3Error(f"SAE {where}: {SAE_CFG} field {key!r} must be an integer, got {value!r}")
    return value


def _parse_cfg(raw: Mapping[str, Any], folder: Path) -> tuple[SaeConfig, SaeMeta]:
    _check_version(raw, folder / SAE_CFG)
    activation = raw.get("activation", "topk")
    if activation != "topk":
        raise S3Error(f"SAE {folder}: activation {activation!r} is not supported (only 'topk')")
    for flag in ("skip_connection", "transcode"):
        if raw.get(flag):
            raise S3Error(f"SAE {folder}: {flag}=true is not supported by s3-attention")
    d_in = _int_field(raw, "d_in", folder)
    num_latents = raw.get("num_latents") or d_in * _int_field(raw, "expansion_factor", folder)
    cfg = SaeConfig(
        d_in=d_in,
        num_latents=int(num_latents),
        k=_int_field(raw, "k", folder),
        normalize_decoder=bool(raw.get("normalize_decoder", True)),
        multi_topk=bool(raw.get("multi_topk", False)),
    )
    layer = raw.get("layer")
    if not isinstance(layer, int):
        match = _LAYER_RE.search(folder.name)
        layer = int(match.group(1)) if match else -1
    model_id = raw.get("model_id")
    if model_id is None and (folder.parent / RELEASE_CONFIG).is_file():
        model_id = _read_json(folder.parent / RELEASE_CONFIG, "SAE release").get("model_id")
    meta = SaeMeta(
        model_id=model_id,
        layer=layer,
        sites=tuple(raw.get("sites") or ()),
        head_dim=int(raw.get("head_dim") or d_in),
        format_version=int(raw.get("format_version", SAE_FORMAT_VERSION)),
        training_tokens=int(raw.get("training_tokens") or 0),
        fvu=raw.get("fvu"),
        dead_fraction=raw.get("dead_fraction"),
    )
    return cfg, meta


def load(
    path: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> TopKSAE:
    """Load one ``layers.<L>`` folder; the result carries ``.meta`` (``SaeMeta``)."""
    folder = Path(path)
    if not folder.is_dir():
        raise S3Error(f"SAE {folder}: no such folder; pass a {LAYER_DIR_PREFIX}<L> folder of a release")
    cfg, meta = _parse_cfg(_read_json(folder / SAE_CFG, "SAE"), folder)
    weights = folder / SAE_WEIGHTS
    if not weights.is_file():
        raise S3Error(f"SAE {folder}: {SAE_WEIGHTS} is missing; re-download or re-export the release")
    expected = {
        TENSOR_ENCODER_W: (cfg.num_latents, cfg.d_in),
        TENSOR_ENCODER_B: (cfg.num_latents,),
        TENSOR_W_DEC: (cfg.num_latents, cfg.d_in),
        TENSOR_B_DEC: (cfg.d_in,),
    }
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as fh:
            present = set(fh.keys())
            for name, shape in expected.items():
                if name not in present:
                    raise S3Error(f"SAE {weights}: tensor {name!r} is missing (has {sorted(present)})")
                tensors[name] = fh.get_tensor(name)
                if tuple(tensors[name].shape) != shape:
                    raise S3Error(
                        f"SAE {weights}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                        f"but {SAE_CFG} implies {shape}"
                    )
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise S3Error(f"SAE {weights}: unreadable ({err}); re-download or re-export it") from None
    if not tensors[TENSOR_ENCODER_W].is_floating_point():
        raise S3Error(f"SAE {weights}: weights must be floating point, got {tensors[TENSOR_ENCODER_W].dtype}")
    dtype = dtype or tensors[TENSOR_ENCODER_W].dtype
    with torch.device("meta"):
        sae = TopKSAE(cfg, dtype=dtype)
    sae = sae.to_empty(device=device or "cpu")
    sae.load_state_dict({name: t.to(dtype) for name, t in tensors.items()})
    sae.meta = meta
    return sae


def _release_layers(release: Path) -> list[int]:
    found = []
    for child in release.iterdir() if release.is_dir() else ():
        match = _LAYER_RE.fullmatch(child.name)
        if match and child.is_dir():
            found.append(int(match.group(1)))
    return sorted(found)


def read_release_config(release: str | Path) -> dict[str, Any]:
    """The release's ``config.json`` (S3Error when missing, unreadable or from a newer format)."""
    release = Path(release)
    if not release.is_dir():
        raise S3Error(f"SAE release {release}: no such folder")
    config = _read_json(release / RELEASE_CONFIG, "SAE release")
    _check_version(config, release / RELEASE_CONFIG)
    return config


def load_many(
    release: str | Path,
    *,
    layers: Iterable[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[int, TopKSAE]:
    """Load the SAEs of a release, ``{layer: sae}`` sorted by layer (all layers unless ``layers``)."""
    release = Path(release)
    if (release / RELEASE_CONFIG).is_file():
        read_release_config(release)  # refuses newer formats early
    available = _release_layers(release)
    if not available:
        raise S3Error(f"SAE release {release}: no {LAYER_DIR_PREFIX}<L> folders found")
    wanted = sorted(set(layers)) if layers is not None else available
    missing = [layer for layer in wanted if layer not in available]
    if missing:
        raise S3Error(f"SAE release {release} has no layer {missing[0]} (has layers {available})")
    return {layer: load(_layer_dir(release, layer), device=device, dtype=dtype) for layer in wanted}


def _model_card(config: Mapping[str, Any], saes: Mapping[int, TopKSAE], metas: Mapping[int, SaeMeta]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    rows = [
        f"| {layer} | {num(metas[layer].fvu, '.4f')} | {num(metas[layer].dead_fraction, '.2%')} "
        f"| {saes[layer].cfg.k} | {metas[layer].training_tokens:,} |"
        for layer in sorted(saes)
    ]
    first = min(saes)
    return "\n".join(
        [
            f"# Top-k SAEs on attention {'/'.join(config['sites'])} head vectors of {config['model_id']}",
            "",
            f"- model: `{config['model_id']}`; sites: {', '.join(config['sites'])} (pre-RoPE head vectors)",
            f"- dataset: {config['dataset']} (license: {config['dataset_license']}), "
            f"context length {config['context_length']}",
            f"- head_dim {config['head_dim']}, {config['num_latents']} latents, k = {config['k']}",
            f"- format_version {config['format_version']} (eai-sparsify layout: `{LAYER_DIR_PREFIX}<L>/"
            f"{SAE_CFG}` + `{SAE_WEIGHTS}`)",
            "",
            "| layer | FVU | dead fraction | L0 | training tokens |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "## Loading",
            "",
            "```python",
            "from s3attn.saes import load_many",
            "saes = load_many('path/to/this/release')  # {layer: TopKSAE}",
            f"top_acts, top_indices = saes[{first}].encode(head_vectors)  # [N, head_dim] -> [N, k]",
            "",
            "# or with eai-sparsify:",
            "from sparsify import SparseCoder",
            f"sae = SparseCoder.load_from_disk('path/to/this/release/{LAYER_DIR_PREFIX}{first}')",
            "```",
            "",
        ]
    )


def write_release(
    out_dir: str | Path,
    saes: Mapping[int, TopKSAE],
    metas: Mapping[int, SaeMeta],
    release_info: Mapping[str, Any],
    *,
    card_notes: str = "",
    extra_files: Mapping[str, Path] | None = None,
) -> Path:
    """Write a whole release into a temp folder next to ``out_dir``, then move it into place. ``card_notes``:
    markdown appended to the model card (how the release differs from a plain training run);
    ``extra_files``: name -> file copied in beside config.json (e.g. ``QUERY_MAP_FILE``)."""
    out_dir = Path(out_dir)
    if not saes or set(saes) != set(metas):
        raise S3Error(
            f"write_release {out_dir}: need one SaeMeta per SAE (got layers {sorted(saes)} / {sorted(metas)})"
        )
    missing = [key for key in _RELEASE_KEYS if key not in release_info]
    if missing:
        raise S3Error(f"write_release {out_dir}: release_info lacks {missing}")
    shapes = {(s.cfg.d_in, s.cfg.num_latents, s.cfg.k) for s in saes.values()}
    sites = {tuple(m.sites) for m in metas.values()}
    if len(shapes) != 1 or len(sites) != 1:
        raise S3Error(f"write_release {out_dir}: all layers must share d_in/num_latents/k and sites")
    for layer, meta in metas.items():
        if meta.layer != layer or meta.model_id != release_info["model_id"]:
            raise S3Error(
                f"write_release {out_dir}: layer {layer} meta says layer {meta.layer}, model {meta.model_id!r} "
                f"(release is for {release_info['model_id']!r})"
            )
    ((d_in, num_latents, k),) = shapes
    config = {
        **dict(release_info),
        "format_version": SAE_FORMAT_VERSION,
        "layers": sorted(saes),
        "sites": list(next(iter(sites))),
        "k": k,
        "num_latents": num_latents,
        "head_dim": d_in,
        "training_tokens": int(
            release_info.get("training_tokens", max(m.training_tokens for m in metas.values()))
        ),
    }
    with staged_dir(out_dir) as tmp:
        for layer in sorted(saes):
            save_sae(saes[layer], _layer_dir(tmp, layer), metas[layer])
            kill_point("release-layer")  # test-only hook (s3attn.paths.kill_point)
        atomic_write_json(tmp / RELEASE_CONFIG, config)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        card = front_matter(config) + _model_card(config, saes, metas)
        atomic_write_text(tmp / RELEASE_CARD, card + (f"\n{card_notes.strip()}\n" if card_notes else ""))
        kill_point("release-publish")
    return out_dir


def check_compatible(
    release_or_sae: str | Path | TopKSAE | Mapping[int, TopKSAE],
    *,
    model_id: str,
    head_dim: int,
    num_layers: int,
    layers: Iterable[int] | None = None,
) -> None:
    """Refuse (S3Error) an SAE or release made for another model, head size or layer count."""
    if isinstance(release_or_sae, str | Path):
        name = f"SAE release {release_or_sae}"
        config = read_release_config(release_or_sae)
        have_model, have_dim = config.get("model_id"), config.get("head_dim")
        have_layers = list(config.get("layers") or _release_layers(Path(release_or_sae)))
    else:
        saes = {0: release_or_sae} if isinstance(release_or_sae, TopKSAE) else dict(release_or_sae)
        metas = [getattr(s, "meta", None) for s in saes.values()]
        if any(m is None for m in metas):
            raise S3Error("SAE has no .meta; load it with s3attn.saes.load so its model can be checked")
        name = f"SAE for layer(s) {sorted(m.layer for m in metas)}"
        models = {m.model_id for m in metas}
        have_model = models.pop() if len(models) == 1 else sorted(map(str, models))
        dims = {s.cfg.d_in for s in saes.values()}
        have_dim = dims.pop() if len(dims) == 1 else sorted(dims)
        have_layers = sorted(m.layer for m in metas)
    if have_model is None:
        raise S3Error(f"{name} does not record which model it was trained for; expected {model_id}")
    if str(have_model).strip().lower() != model_id.strip().lower():
        raise S3Error(f"{name} was trained for model {have_model}, not {model_id}")
    if have_dim != head_dim:
        raise S3Error(f"{name} has head_dim {have_dim}, but model {model_id} has head_dim {head_dim}")
    for layer in have_layers:
        if not 0 <= int(layer) < num_layers:
            raise S3Error(f"{name} has layer {layer}, but model {model_id} has only {num_layers} layers")
    for layer in layers if layers is not None else ():
        if layer not in have_layers:
            raise S3Error(f"{name} has no layer {layer} (has layers {sorted(have_layers)})")
