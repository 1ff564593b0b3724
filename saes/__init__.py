"""s3attn.saes: the Top-k SAE and its published checkpoint format; re-exports the K/Q taps and model loading of s3attn.models.

Light on purpose: importing it pulls in torch and safetensors only (no lightning, zarr, datasets or
transformers at import time).
"""

from s3attn.models.loading import LoadedModel, load_model  # transformers is imported inside load_model only
from s3attn.models.taps import AttnGeometry, Taps, attention_geometry, check_layers, prefix_cache, tap_heads

from .checkpoint import (
    SaeMeta,
    check_compatible,
    load,
    load_many,
    read_release_config,
    save_sae,
    write_release,
)
from .sae import EncoderOutput, ForwardOutput, SaeConfig, TopKSAE, default_lr

__all__ = [
    "AttnGeometry",
    "LoadedModel",
    "Taps",
    "attention_geometry",
    "check_layers",
    "load_model",
    "prefix_cache",
    "tap_heads",
    "EncoderOutput",
    "ForwardOutput",
    "SaeConfig",
    "SaeMeta",
    "TopKSAE",
    "check_compatible",
    "default_lr",
    "load",
    "load_many",
    "read_release_config",
    "save_sae",
    "write_release",
]
