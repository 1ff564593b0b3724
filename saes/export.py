"""Export a release to SAELens' on-disk format: one folder per (layer, site) that
``sae_lens.SAE.load_from_disk`` loads unchanged (``cfg.json`` + ``sae_weights.safetensors``).

::

    OUT/README.md                                  model card (front matter: library_name saelens)
    OUT/blocks.<L>.attn.hook_<site>/cfg.json       architecture "topk", d_in, d_sae, k, metadata
    OUT/blocks.<L>.attn.hook_<site>/sae_weights.safetensors   W_enc [d_in, d_sae], b_enc [d_sae],
                                                               W_dec [d_sae, d_in], b_dec [d_in]

The mapping is exact. Ours: ``acts, idx = topk(encoder(x - b_dec))``, then ReLU on the k values (the kernel
takes the top k of the pre-activations and ReLUs them). SAELens' TopK SAE: ``x - b_dec`` when
``apply_b_dec_to_input``, ``@ W_enc + b_enc``, then its ``TopK`` activation (top k, then ReLU). So
``W_enc = encoder.weight.T``, ``b_enc = encoder.bias``, ``W_dec`` and ``b_dec`` as they are,
``apply_b_dec_to_input = true``, ``rescale_acts_by_decoder_norm = false``, no input normalisation.
One SAE per layer reads both sites (pre-RoPE keys and queries), so it is written twice, once per
TransformerLens hook (``blocks.L.attn.hook_k`` / ``hook_q``, [batch, pos, head, d_head]; the SAE acts on
the last dimension, every head alike). Nothing here imports sae_lens.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from s3attn.constants import RELEASE_CARD
from s3attn.errors import S3Error
from s3attn.paths import atomic_write_json, atomic_write_text, staged_dir

from .card import front_matter
from .checkpoint import load_many, read_release_config
from .sae import TopKSAE

EXPORT_FORMATS = ("saelens",)
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"
"""The SAELens config format written (>= 6.0, so SAELens reads it without its pre-6.0 renames)."""


def saelens_hook_name(layer: int, site: str) -> str:
    """TransformerLens hook of the pre-RoPE key (``k``) or query (``q``) head vectors of ``layer``."""
    if site not in ("k", "q"):
        raise S3Error(f"SAELens export: unknown site {site!r} (expected 'k' or 'q')")
    return f"blocks.{layer}.attn.hook_{site}"


def saelens_tensors(sae: TopKSAE) -> dict[str, Any]:
    """Our SAE's weights under SAELens' names and shapes (contiguous CPU tensors)."""
    tensors = {
        "W_enc": sae.encoder.weight.detach().t(),
        "b_enc": sae.encoder.bias.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
    }
    return {name: t.to("cpu").contiguous() for name, t in tensors.items()}


def saelens_cfg(sae: TopKSAE, config: dict[str, Any], layer: int, site: str) -> dict[str, Any]:
    """SAELens ``cfg.json`` of the ``site`` copy of ``layer``'s SAE (a TopK SAE config)."""
    return {
        "architecture": "topk",
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.num_latents,
        "k": sae.cfg.k,
        "dtype": str(sae.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": None,
            "model_name": config["model_id"],
            "hook_name": saelens_hook_name(layer, site),
            "hook_head_index": None,
            "context_size": config.get("context_length"),
            "dataset_path": config.get("dataset"),
            "prepend_bos": True,
            "neuronpedia_id": None,
            "s3attn_layer": layer,
            "s3attn_site": site,
            "s3attn_sites": list(config.get("sites") or []),
            "s3attn_release_format_version": config.get("format_version"),
        },
    }


def _card(config: dict[str, Any], folders: list[str]) -> str:
    body = [
        f"# SAELens export of Top-k SAEs on attention head vectors of {config['model_id']}",
        "",
        "One SAE per layer, trained on pre-RoPE keys and queries alike; each folder holds it for one "
        "TransformerLens hook ([batch, pos, head, d_head]; the SAE acts on d_head, every head alike):",
        "",
        *(f"- `{name}`" for name in folders),
        "",
        "```python",
        "from sae_lens import SAE",
        f"sae = SAE.load_from_disk('path/to/this/folder/{folders[0]}')",
        "```",
        "",
    ]
    return front_matter(config, library_name="saelens", extra_tags=("saelens",)) + "\n".join(body)


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file or a folder holding anything but an earlier export (replaced)."""
    if out.exists() and not out.is_dir():
        raise S3Error(f"--out {out}: is a file; give a folder for the export")
    earlier = out.is_dir() and any((child / SAELENS_CFG).is_file() for child in out.glob("blocks.*"))
    if out.is_dir() and any(out.iterdir()) and not earlier:
        raise S3Error(
            f"--out {out}: holds files that are not a SAELens export; choose an empty or new folder"
        )


def export_saelens(release: str | Path, out: str | Path, *, layers: Iterable[int] | None = None) -> Path:
    """Write the SAELens folders of ``release`` (all layers unless ``layers``) into ``out``; return it."""
    release, out = Path(release), Path(out)
    config = read_release_config(release)
    saes = load_many(release, layers=layers)
    sites = list(config.get("sites") or ["k", "q"])
    _check_out(out)
    with staged_dir(out) as tmp:
        folders = []
        for layer, sae in saes.items():
            tensors = saelens_tensors(sae)
            for site in sites:
                name = saelens_hook_name(layer, site)
                (tmp / name).mkdir()
                save_file(tensors, str(tmp / name / SAELENS_WEIGHTS), metadata={"format": "pt"})
                atomic_write_json(tmp / name / SAELENS_CFG, saelens_cfg(sae, config, layer, site))
                folders.append(name)
        atomic_write_text(tmp / RELEASE_CARD, _card(config, folders))
    return out


def export_release(
    release: str | Path, out: str | Path, fmt: str, *, layers: Iterable[int] | None = None
) -> Path:
    """Export ``release`` to ``fmt`` (one of ``EXPORT_FORMATS``) in ``out``."""
    if fmt not in EXPORT_FORMATS:
        raise S3Error(f"--format {fmt}: unknown export format; choose from {', '.join(EXPORT_FORMATS)}")
    return export_saelens(release, out, layers=layers)
