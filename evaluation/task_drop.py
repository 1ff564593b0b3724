"""Multi-document QA over real reading-comprehension data: DROP passages (Dua et al., 2019) and their questions.

The data is package data, ``data/drop_passages.json.gz`` (a 600-passage subset of DROP as shipped in the
BIG-bench 1.0.0 sdist, one extractive question per passage; ``bench/make_drop_subset.py`` makes it, and
``data/SOURCES.md`` gives the source and licence). A context is ``multidoc_qa``'s numbered passages
(``Passage i:\\n{title}\\n{text}``) filled to ``length_tokens`` with DROP passages: ``GOLD_PER_CONTEXT`` of them
are gold (asked in turn), the rest distractors of the same domain, shuffled as in ``multidoc_qa``.
``number % GOLD_PER_CONTEXT`` picks the question, ``number // GOLD_PER_CONTEXT`` the context, so one context
(and one index of it) serves ``GOLD_PER_CONTEXT`` questions.
"""

from __future__ import annotations

import functools
import gzip
import json
import random
import re
from importlib import resources

from s3attn.errors import S3Error
from s3attn.evaluation.task_common import (
    Sample,
    TokenLen,
    answer_sentence,
    check_length_and_seed,
    fit_length,
)
from s3attn.evaluation.task_multidoc import _Distractors, _head
from s3attn.evaluation.task_paraphrase import check_number, context_rng, spread_depths

DROP_FILE = "drop_passages.json.gz"
GOLD_PER_CONTEXT = 8
_FIELDS = ("id", "title", "passage", "question", "answers")
INSTRUCTION = "Answer the question based on the given passages. Only give me the answer."
ANSWER_PREFIX = "Answer:"


@functools.lru_cache(maxsize=1)
def drop_records() -> tuple[dict, ...]:
    """The DROP records of ``data/drop_passages.json.gz`` (validated, cached)."""
    path = resources.files("s3attn.evaluation").joinpath("data", DROP_FILE)
    fix = (
        "regenerate it: python bench/make_drop_subset.py <bigbench-1.0.0.tar.gz> evaluation/data/" + DROP_FILE
    )
    try:
        records = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))["records"]
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        raise S3Error(f"cannot read {path}: {type(e).__name__}: {e}; {fix}") from e
    ok = isinstance(records, list) and len(records) > GOLD_PER_CONTEXT
    if not ok or not all(isinstance(r, dict) and all(r.get(k) for k in _FIELDS) for r in records):
        raise S3Error(f"{path} is corrupt (records lack {', '.join(_FIELDS)}); {fix}")
    return tuple(records)


def _assemble(
    stream: _Distractors,
    n: int,
    golds: list[tuple[str, str]],
    fracs: list[float],
    passages: list[tuple[str, str]],
) -> str:
    """The first ``n`` distractor units as numbered passages, gold passage k inserted at ``fracs[k]`` (ascending)
    of the complete distractor passages."""
    groups: list[tuple[int, list[str]]] = []
    for k in range(n):
        p, s, _ = stream.units[k]
        if s == 0:
            groups.append((p, []))
        groups[-1][1].append(stream.sentences_of(p)[s])
    complete = sum(1 for p, g in groups if len(g) == len(stream.sentences_of(p)))
    blocks = [(passages[p][0], "".join(g).rstrip()) for p, g in groups]
    for k in reversed(range(len(golds))):  # from the back, so earlier insert points stay valid
        blocks.insert(round(fracs[k] * complete), golds[k])
    return "\n\n".join(_head(i + 1, t) + x for i, (t, x) in enumerate(blocks))


def drop_qa(tokenizer_len: TokenLen, length_tokens: int, seed: int, number: int) -> Sample:
    """DROP multi-document QA: numbered DROP passages filling ``length_tokens``, ``GOLD_PER_CONTEXT`` of them
    gold (depths spread evenly with a small jitter), the question of gold passage ``number %
    GOLD_PER_CONTEXT``; metric ``qa_f1``. Context: ``(length_tokens, seed, number // GOLD_PER_CONTEXT)``."""
    check_length_and_seed(length_tokens, seed)
    check_number(number)
    records = drop_records()
    passages = [(r["title"], r["passage"].strip()) for r in records]
    rng = context_rng(seed, number // GOLD_PER_CONTEXT)
    gold = rng.sample(range(len(records)), GOLD_PER_CONTEXT)
    fracs = spread_depths(rng, GOLD_PER_CONTEXT)
    others = sorted(set(range(len(records))) - set(gold))
    base = int(tokenizer_len(""))
    stream = _Distractors(passages, others, random.Random(rng.getrandbits(64)), tokenizer_len, base)
    golds = [passages[g] for g in gold]
    fixed = sum(max(int(tokenizer_len(_head(10, t) + x + "\n\n")) - base, 1) for t, x in golds)
    if length_tokens <= fixed:
        raise S3Error(
            f"length_tokens={length_tokens} is too small for {GOLD_PER_CONTEXT} DROP passages ({fixed} tokens)"
        )
    context, tokens = fit_length(
        length_tokens, tokenizer_len, fixed, stream, lambda n: _assemble(stream, n, golds, fracs, passages)
    )
    asked = number % GOLD_PER_CONTEXT
    record, (title, text) = records[gold[asked]], golds[asked]
    m = re.search(rf"Passage (\d+):\n{re.escape(title)}\n", context)
    assert m is not None
    start = m.start() + len(f"Passage {m.group(1)}:\n")
    body = start + len(title) + 1  # the passage text, after its title line
    inside = answer_sentence(text, record["answers"])
    evidence = [body + inside[0], body + inside[1]] if inside else [start, body + len(text)]
    meta = {
        "id": record["id"],
        "title": title,
        "passage_number": int(m.group(1)),
        "depth": fracs[asked],
        "evidence": [evidence],  # the gold passage's sentence holding the answer (else the whole passage)
        "gold_passage": [start, body + len(text)],
        "gold_ids": [records[g]["id"] for g in gold],
        "source": "drop",
        "length_tokens": tokens,
        "instruction": INSTRUCTION,
        "answer_prefix": ANSWER_PREFIX,
    }
    return Sample("drop_qa", context, record["question"], list(record["answers"]), "qa_f1", meta)
