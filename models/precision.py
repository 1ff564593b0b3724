"""The model precision a command loads its LM in: ``--dtype auto|bfloat16|float16|float32``.

Precision is a load-time choice: the model keeps its own weights file (the converted SmolLM2 cache stays
float32) and ``load_model(..., dtype=resolve_dtype(name, device))`` casts it while loading.

How ``auto`` decides: bfloat16 where the hardware computes it natively, float32 elsewhere.

- On a CUDA GPU: bfloat16 when ``torch.cuda.is_bf16_supported()`` (Ampere and newer), else float32.
- On a CPU: bfloat16 when the CPU has AMX or AVX512-BF16 instructions (on Linux, the ``amx_bf16`` or
  ``avx512_bf16`` flag in ``/proc/cpuinfo``); else float32. On other systems the flags are not read, so
  ``auto`` is float32 there.
- Any other device (MPS, ...): float32.

float16 is never chosen by ``auto`` (its range is too narrow for some models' activations); ask for it
explicitly. An index records the precision it was built in, and questions are answered in that precision
unless ``--dtype`` says otherwise.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

from s3attn.errors import S3Error

DTYPE_AUTO = "auto"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DTYPE_CHOICES = (DTYPE_AUTO, *DTYPES)
"""The values of ``--dtype``."""
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""/proc/cpuinfo flags of a CPU that computes bfloat16 natively."""
_CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def read_cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux: the first ``flags`` line of /proc/cpuinfo); empty elsewhere."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with _CPUINFO.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def check_dtype(name: str, option: str = "--dtype") -> str:
    """``name`` if it is one of :data:`DTYPE_CHOICES`, else a one-line S3Error naming ``option``."""
    if name not in DTYPE_CHOICES:
        raise S3Error(f"{option} {name}: choose one of {', '.join(DTYPE_CHOICES)}")
    return name


def bf16_native(device: str | torch.device | None = None, *, cpu_flags: set[str] | None = None) -> bool:
    """Whether ``device`` computes bfloat16 natively (see the module docstring); ``cpu_flags`` stands in for
    the CPU's flags (tests)."""
    kind = torch.device(device).type if device is not None else default_device()
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        flags = read_cpu_flags() if cpu_flags is None else cpu_flags
        return bool(CPU_BF16_FLAGS & set(flags))
    return False


def resolve_dtype(
    name: str, device: str | torch.device | None = None, *, cpu_flags: set[str] | None = None
) -> torch.dtype:
    """The torch dtype of ``--dtype name`` for a model on ``device`` (None: CUDA if there is one, else the
    CPU); ``auto`` follows the rule of the module docstring. A bad name is a one-line S3Error."""
    check_dtype(name)
    if name != DTYPE_AUTO:
        return DTYPES[name]
    return torch.bfloat16 if bf16_native(device, cpu_flags=cpu_flags) else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``'bfloat16'`` (the name ``--dtype`` takes and an index records)."""
    return str(dtype).removeprefix("torch.")


def default_device() -> str:
    """Where a model runs when nothing says otherwise: ``cuda`` if there is a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def accelerator_device(accelerator: str) -> str:
    """The device a Lightning ``accelerator`` (auto, cpu, gpu, cuda) runs the model on."""
    return "cpu" if accelerator == "cpu" else default_device()


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of ``model``'s (first) parameter: the precision it was loaded in."""
    param = next(model.parameters(), None)
    return param.dtype if param is not None else torch.float32
