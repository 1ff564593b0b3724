"""Where an evaluation run ran and what it cost: its environment record, the peak RSS, quiet logs during index builds."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import resource
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


QUIET_BUILD_LOGS = {
    "s3attn": logging.WARNING,
    "lightning.pytorch": logging.ERROR,
    "lightning.fabric": logging.ERROR,
}


@contextlib.contextmanager
def quiet_logs(levels_by_logger: dict[str, int] = QUIET_BUILD_LOGS) -> Iterator[None]:
    """Inside (an index build): these loggers at these levels at least, and no Python warnings."""
    loggers = [logging.getLogger(name) for name in levels_by_logger]
    levels = [lg.level for lg in loggers]
    try:
        for lg, level in zip(loggers, levels_by_logger.values()):
            lg.setLevel(max(level, lg.getEffectiveLevel()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def peak_rss_mb() -> float:
    """The process's resident-set high-water mark in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def git_state() -> tuple[str, bool | None]:
    """(HEAD commit, whether the checkout has uncommitted changes) of the code that runs; ("", None) outside
    a git checkout."""
    import subprocess

    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "", None
    commit_id = commit.stdout.strip()
    return commit_id, bool(status.stdout.strip()) if commit_id and status.returncode == 0 else None


def environment(stack, window: int, release: Path) -> dict[str, Any]:
    """The machine, library versions, model, window, SAE release, git commit and dirtiness of a run."""
    import torch
    import transformers

    loaded, saes, _ = stack
    commit_id, dirty = git_state()
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
        "git_commit": commit_id or None,
        "git_dirty": dirty,  # uncommitted changes in the checkout (None: not a git checkout)
    }
