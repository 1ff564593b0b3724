"""s3attn.saes: the Top-k SAE, its published checkpoint format, K/Q taps and model loading.

Light on purpose: importing it pulls in torch and safetensors only (no lightning, zarr, datasets or
transformers at import time).
"""

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

# ---- lead: wire saes/taps.py and saes/models.py here (e.g. `from .taps import ...`), as long as those
# ---- modules do not import transformers at module level.

__all__ = [
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
