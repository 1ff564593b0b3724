"""What an ``s3-eval`` run asks: the tasks and their families, the fixed seed split, and the sample plan.

Seeds: every run has base seeds (``--seeds``, else ``--seed``). Base seeds in ``TUNING_SEEDS`` (0-9) are for
tuning retrieval settings; base seeds from ``HELD_OUT_FROM`` (100) up are held out, run only to report
settings chosen on the tuning seeds; any other base seed is "other". A sample's seed derives from its base
seed and (task, length, depth, number), except for the tasks of ``SHARED_CONTEXT``, which ask many questions
(``number``) of ONE context: their seed derives from (base seed, context group, length) only, so every
number of one (task, length) shares a context, and literal_niah / paraphrase_niah (one group) share theirs
too (a generator may still start a new context every K numbers). ``plan`` keeps the items of one context
next to each other, so the harness builds its index once.

``FAMILY`` groups tasks for reporting (``family_of``): lexical (the needle or passage shares words with the
question), paraphrase (it does not), real_qa, tracking and aggregation.
"""

from __future__ import annotations

import fnmatch
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

from s3attn.errors import S3Error
from s3attn.evaluation import tasks as T

TASKS = (
    "niah",
    "ruler_niah_single",
    "ruler_niah_multikey",
    "ruler_niah_multivalue",
    "ruler_niah_multiquery",
    "ruler_vt",
    "ruler_cwe",
    "multidoc_qa",
    "literal_niah",
    "paraphrase_niah",
    "paraphrase_multikey",
    "drop_qa",
)
METHODS = ("full", "bm25", "streaming", "s3", "hybrid")
LIST_TASKS = frozenset({"ruler_niah_multivalue", "ruler_niah_multiquery", "ruler_vt", "ruler_cwe"})
HAYSTACKS = ("essay", "long", "noise")
FAMILY = {
    "niah": "lexical",
    "literal_niah": "lexical",
    "ruler_niah_*": "lexical",
    "multidoc_qa": "lexical",
    "paraphrase_niah": "paraphrase",
    "paraphrase_multikey": "paraphrase",
    "drop_qa": "real_qa",
    "ruler_vt": "tracking",
    "ruler_cwe": "aggregation",
}
FAMILY_ORDER = ("lexical", "paraphrase", "real_qa", "tracking", "aggregation")
SHARED_CONTEXT = {  # task -> context group: one context per (base seed, group, length), questions by number
    "literal_niah": "niah_context",
    "paraphrase_niah": "niah_context",
    "paraphrase_multikey": "paraphrase_multikey",
    "drop_qa": "drop_qa",
}
TUNING_SEEDS = range(0, 10)
HELD_OUT_FROM = 100


class EvalItem(NamedTuple):
    task: str
    length: int
    depth: float | None  # percent, niah only
    number: int  # sample number within (task, length, depth); the question of a shared-context task
    seed: int
    base_seed: int = 0


def family_of(task: str) -> str:
    """The reporting family of ``task`` (``FAMILY``, whose keys may be glob patterns); ``other`` if none."""
    if task in FAMILY:
        return FAMILY[task]
    return next((fam for pat, fam in FAMILY.items() if fnmatch.fnmatchcase(task, pat)), "other")


def split_of(base_seed: int) -> str:
    """``tuning`` (seeds 0-9), ``held-out`` (100 and up) or ``other``."""
    if base_seed in TUNING_SEEDS:
        return "tuning"
    return "held-out" if base_seed >= HELD_OUT_FROM else "other"


def _derive(base_seed: int, key: str) -> int:
    return (base_seed * 1_000_003 + zlib.crc32(key.encode())) % (2**31)


def item_seed(
    base_seed: int, task: str, length: int, depth: float | None, number: int, same_needles: bool = False
) -> int:
    """A sample's seed: from (task, length, depth, number), or for a shared-context task from its context
    group and length only (the seed its context depends on). ``same_needles``: a shared-context task's seed
    leaves the length out, so every length plants the same needles at the same relative depths."""
    if task in SHARED_CONTEXT:
        return _derive(
            base_seed, SHARED_CONTEXT[task] if same_needles else f"{SHARED_CONTEXT[task]}|{length}"
        )
    return _derive(base_seed, f"{task}|{length}|{depth}|{number}")


def base_seeds(cfg: Any) -> list[int]:
    """The base seeds of a run: ``cfg.seeds`` when given, else ``[cfg.seed]``."""
    return list(dict.fromkeys(cfg.seeds)) if cfg.seeds else [cfg.seed]


def check_choices(cfg: Any) -> None:
    """Refuse unknown tasks, methods and haystacks of ``cfg`` (an EvalConfig) with one-line S3Errors."""
    bad = [t for t in cfg.tasks if t not in TASKS]
    if bad or not cfg.tasks:
        raise S3Error(f"--tasks {','.join(bad) or '(none)'}: choose from {', '.join(TASKS)}")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad or not cfg.methods:
        raise S3Error(f"--methods {','.join(bad) or '(none)'}: choose from {', '.join(METHODS)}")
    if cfg.haystack not in HAYSTACKS:
        raise S3Error(f"--haystack {cfg.haystack}: choose essay, long or noise")


def plan(cfg: Any) -> list[EvalItem]:
    """Every sample to run (``cfg``: an EvalConfig): per base seed, task-major, then length, depth, number;
    seeds are stable per item. Items that may share a context (same base seed, context group and length)
    are moved next to the first of them, ordered by number then task, so consecutive items ask questions of
    one context and the harness reuses its index."""
    items = []
    for base in base_seeds(cfg):
        for task in cfg.tasks:
            for length in cfg.lengths:
                for depth in cfg.depths if task == "niah" else [None]:
                    for number in range(cfg.samples):
                        seed = item_seed(base, task, length, depth, number, cfg.same_needles)
                        items.append(EvalItem(task, length, depth, number, seed, base))
    groups: dict[tuple | int, list[EvalItem]] = {}
    for i, item in enumerate(items):
        key = (item.base_seed, SHARED_CONTEXT[item.task], item.length) if item.task in SHARED_CONTEXT else i
        groups.setdefault(key, []).append(item)
    # within a group by number first: a generator's context depends on number // its questions per context
    rank = {task: i for i, task in enumerate(cfg.tasks)}
    return [
        it for group in groups.values() for it in sorted(group, key=lambda it: (it.number, rank[it.task]))
    ]


def _haystack(haystack: str) -> str | None:
    if haystack == "long":
        return T.long_text()
    return T.paul_graham_text() if haystack == "essay" else None


def make_sample(item: EvalItem, tokenizer_len: Callable[[str], int], haystack: str = "essay") -> T.Sample:
    """The task generator's sample for ``item`` (lengths measured with ``tokenizer_len``)."""
    task, n, seed = item.task, item.length, item.seed
    if task == "niah":
        return T.needle_haystack(T.paul_graham_text(), tokenizer_len, n, (item.depth or 0.0) / 100, seed)
    if task.startswith("ruler_niah_"):
        kind = task.removeprefix("ruler_niah_")
        return T.ruler_niah(kind, _haystack(haystack), tokenizer_len, n, seed)  # type: ignore[arg-type]
    if task == "ruler_vt":
        return T.ruler_variable_tracking(n, tokenizer_len, seed)
    if task == "ruler_cwe":
        return T.ruler_common_words(n, tokenizer_len, seed)
    if task == "multidoc_qa":
        return T.multidoc_qa(T.public_domain_passages(), n, tokenizer_len, seed)
    if task in ("literal_niah", "paraphrase_niah", "paraphrase_multikey"):
        return getattr(T, task)(_haystack(haystack), tokenizer_len, n, seed, item.number)
    if task == "drop_qa":
        return T.drop_qa(tokenizer_len, n, seed, item.number)
    raise S3Error(f"--tasks {task}: choose from {', '.join(TASKS)}")
