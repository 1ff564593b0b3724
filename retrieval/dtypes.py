"""The precision questions are answered in: the index's (``--dtype index``, the default of ``s3-index ask``)
or another one asked for (``Retriever(..., dtype=...)``)."""

from __future__ import annotations

from pathlib import Path

import torch

from s3attn.errors import S3Error
from s3attn.models.precision import DTYPE_CHOICES, DTYPES, dtype_name, model_dtype, resolve_dtype

DTYPE_INDEX = "index"  # --dtype of ask: the precision the index was built in


def check_question_dtype(dtype: str) -> str:
    """``dtype`` if it is ``index`` or a ``--dtype`` choice, else a one-line S3Error."""
    if dtype != DTYPE_INDEX and dtype not in DTYPE_CHOICES:
        raise S3Error(f"--dtype {dtype}: choose one of {DTYPE_INDEX}, {', '.join(DTYPE_CHOICES)}")
    return dtype


def question_dtype(index: str | Path, built: str, dtype: str | torch.dtype | None, stack=None) -> str:
    """The precision (a name) questions on an index built in ``built`` are answered in: ``dtype`` (a name,
    ``auto`` resolved for the CPU, or a torch dtype), or ``built`` when it is None or ``index``; with a
    ``stack`` passed in, its model's. One-line S3Errors for an unknown name or a stack in another precision."""
    if isinstance(dtype, torch.dtype):
        dtype = dtype_name(dtype)
    if dtype in (None, DTYPE_INDEX):
        if built not in DTYPES:
            raise S3Error(f"{index}: built in precision {built!r}, which this s3attn does not know; upgrade")
        asked = None
    else:
        asked = dtype_name(resolve_dtype(check_question_dtype(dtype), "cpu"))  # load_stack loads on the CPU
    if stack is None:
        return asked or built
    loaded_in = dtype_name(model_dtype(stack[0].model))
    if asked is not None and asked != loaded_in:
        raise S3Error(f"--dtype {dtype}: the model passed in is loaded in {loaded_in}; load it in {asked}")
    return loaded_in
