"""Where an evaluation run ran and what it cost: its environment record, the peak RSS, quiet index builds."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import resource
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def quiet_build() -> Iterator[None]:
    """Silence one index build (its banner, Lightning's per-Trainer logs and warnings); shown on failure."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    buf = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def peak_rss_mb() -> float:
    """The process's resident-set high-water mark in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def environment(stack, window: int, release: Path) -> dict[str, Any]:
    """The machine, library versions, model, window, SAE release and git commit of a run."""
    import subprocess

    import torch
    import transformers

    loaded, saes, _ = stack
    try:
        git = ["git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "HEAD"]
        commit = subprocess.run(git, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "device": str(loaded.model.device),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "model_id": loaded.model_id,
        "model_window": window,
        "sae_release": str(release.resolve()),
        "sae_layers": sorted(saes),
        "git_commit": commit or None,
    }
