"""Needle tasks that word matching cannot solve: the question paraphrases the needle (NoLiMa style).

The needles are package data, ``data/paraphrase_needles.json`` (written for this project): records with a
``needle`` sentence, a ``paraphrase`` question that shares no content word stem with it (synonyms and
associations instead: "aunt" for "mother's younger sister"), a ``literal`` question in the needle's own
words, ``answers`` (substrings of the needle; the first is the scored one) and a ``family``: records of one
family share a template shape (a relative's vehicle, a pet's name, ...) with different subjects and values.

* ``paraphrase_niah`` / ``literal_niah``: ``NEEDLES_PER_CONTEXT`` needles of different families in one
  haystack; ``number % NEEDLES_PER_CONTEXT`` picks the needle asked, ``number // NEEDLES_PER_CONTEXT`` the
  context. Both tasks plant the same needles for the same arguments (byte-identical contexts), so the pair
  measures what paraphrasing costs a retriever.
* ``paraphrase_multikey``: ``MULTIKEY_PER_CONTEXT`` needles of ONE family (the asked one and same-shape
  distractors); ``number % MULTIKEY_PER_CONTEXT`` picks the needle, ``number // MULTIKEY_PER_CONTEXT`` the
  context.

A context depends only on (haystack, length_tokens, seed, context number), so a harness can index it once
and ask all of its questions. ``meta["evidence"]`` is the asked needle's ``[start, end)`` in the context.
"""

from __future__ import annotations

import functools
import json
import random
from importlib import resources

from s3attn.errors import S3Error
from s3attn.evaluation.task_common import Sample, TokenLen, check_length_and_seed, with_needles

NEEDLES_FILE = "paraphrase_needles.json"
NEEDLES_PER_CONTEXT = 10
MULTIKEY_PER_CONTEXT = 5  # the asked needle and 4 distractors of its family
_DEPTH_RANGE = (0.05, 0.95)
_JITTER = 0.03
_FIELDS = ("family", "needle", "paraphrase", "literal", "answers")
INSTRUCTION = (
    "Some facts are hidden within the following text. Make sure to memorize them. "
    "I will quiz you about them afterwards."
)
ANSWER_PREFIX = "According to the provided text, the answer is"


@functools.lru_cache(maxsize=1)
def paraphrase_records() -> tuple[dict, ...]:
    """The needle records of ``data/paraphrase_needles.json`` (validated, cached)."""
    path = resources.files("s3attn.evaluation").joinpath("data", NEEDLES_FILE)
    fix = "reinstall s3-attention (pip install -e .) so the package data is there"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise S3Error(f"cannot read {path}: {e}; {fix}") from e
    ok = isinstance(records, list) and all(
        isinstance(r, dict) and all(k in r for k in _FIELDS) and r["answers"] for r in records
    )
    if not ok:
        raise S3Error(f"{path} is corrupt (expected a list of records with {', '.join(_FIELDS)}); {fix}")
    return tuple(records)


def families() -> dict[str, list[dict]]:
    """Records by family, families and members in file order."""
    out: dict[str, list[dict]] = {}
    for r in paraphrase_records():
        out.setdefault(r["family"], []).append(r)
    return out


def context_rng(seed: int, group: int) -> random.Random:
    """The random numbers of context ``group`` of ``seed``: ``Random(seed)`` for group 0, else seeded by
    both (a string seed, so no two (seed, group) pairs share numbers)."""
    return random.Random(seed if group == 0 else f"{seed}:{group}")


def check_number(number: int) -> None:
    """S3Error unless ``number`` is a non-negative int."""
    if not isinstance(number, int) or number < 0:
        raise S3Error(f"number must be a non-negative int, got {number!r}")


def spread_depths(rng: random.Random, count: int) -> list[float]:
    """``count`` depths evenly spread over ``_DEPTH_RANGE``, each moved by a small seeded jitter."""
    lo, hi = _DEPTH_RANGE
    steps = [lo + (hi - lo) * k / max(count - 1, 1) for k in range(count)]
    return [min(1.0, max(0.0, d + rng.uniform(-_JITTER, _JITTER))) for d in steps]


def _sample(
    task: str,
    haystack: str | None,
    tokenizer_len: TokenLen,
    length_tokens: int,
    planted: list[dict],
    depths: list[float],
    asked: int,
    question_field: str,
) -> Sample:
    """The context of ``planted`` needles at ``depths`` and the question about ``planted[asked]``."""
    needles = [r["needle"] for r in planted]
    context, offsets, tokens = with_needles(
        haystack, tokenizer_len, length_tokens, list(zip(depths, needles))
    )
    record = planted[asked]
    meta = {
        "needle": record["needle"],
        "family": record["family"],
        "accepted_answers": list(record["answers"]),
        "depth": depths[asked],
        "evidence": [[offsets[asked], offsets[asked] + len(record["needle"])]],
        "needles_in_context": needles,
        "needle_char_offsets": offsets,
        "length_tokens": tokens,
        "instruction": INSTRUCTION,
        "answer_prefix": ANSWER_PREFIX,
    }
    answers = [record["answers"][0]]
    return Sample(task, context, record[question_field], answers, "string_match_all", meta)


def _niah(
    task: str, haystack: str | None, tokenizer_len: TokenLen, length_tokens: int, seed: int, number: int
) -> Sample:
    check_length_and_seed(length_tokens, seed)
    check_number(number)
    by_family = families()
    if len(by_family) < NEEDLES_PER_CONTEXT:
        raise S3Error(f"{NEEDLES_FILE} has {len(by_family)} families, {task} needs {NEEDLES_PER_CONTEXT}")
    rng = context_rng(seed, number // NEEDLES_PER_CONTEXT)
    names = sorted(by_family)
    rng.shuffle(names)  # the first NEEDLES_PER_CONTEXT families, in context order
    planted = [rng.choice(by_family[f]) for f in names[:NEEDLES_PER_CONTEXT]]
    depths = spread_depths(rng, NEEDLES_PER_CONTEXT)
    question = "paraphrase" if task == "paraphrase_niah" else "literal"
    asked = number % NEEDLES_PER_CONTEXT
    return _sample(task, haystack, tokenizer_len, length_tokens, planted, depths, asked, question)


def paraphrase_niah(
    haystack: str | None, tokenizer_len: TokenLen, length_tokens: int, seed: int, number: int
) -> Sample:
    """``NEEDLES_PER_CONTEXT`` needles of different families in ``haystack`` (depths evenly spread over
    0.05..0.95 with a small jitter); the question paraphrases needle ``number % NEEDLES_PER_CONTEXT`` with
    no content word in common. Context: ``(haystack, length_tokens, seed, number // NEEDLES_PER_CONTEXT)``.
    """
    return _niah("paraphrase_niah", haystack, tokenizer_len, length_tokens, seed, number)


def literal_niah(
    haystack: str | None, tokenizer_len: TokenLen, length_tokens: int, seed: int, number: int
) -> Sample:
    """``paraphrase_niah``'s context and needle, asked in the needle's own words (the lexical control)."""
    return _niah("literal_niah", haystack, tokenizer_len, length_tokens, seed, number)


def paraphrase_multikey(
    haystack: str | None, tokenizer_len: TokenLen, length_tokens: int, seed: int, number: int
) -> Sample:
    """``MULTIKEY_PER_CONTEXT`` needles of ONE family (same template, different subjects and values), the
    paraphrased question about needle ``number % MULTIKEY_PER_CONTEXT``; the others are distractors of the
    same shape. Context: ``(haystack, length_tokens, seed, number // MULTIKEY_PER_CONTEXT)``."""
    check_length_and_seed(length_tokens, seed)
    check_number(number)
    eligible = [f for f, members in families().items() if len(members) >= MULTIKEY_PER_CONTEXT]
    if not eligible:
        raise S3Error(f"{NEEDLES_FILE} has no family of {MULTIKEY_PER_CONTEXT} records")
    rng = context_rng(seed, number // MULTIKEY_PER_CONTEXT)
    family = rng.choice(sorted(eligible))
    planted = rng.sample(families()[family], MULTIKEY_PER_CONTEXT)
    depths = spread_depths(rng, MULTIKEY_PER_CONTEXT)
    asked = number % MULTIKEY_PER_CONTEXT
    return _sample(
        "paraphrase_multikey", haystack, tokenizer_len, length_tokens, planted, depths, asked, "paraphrase"
    )
