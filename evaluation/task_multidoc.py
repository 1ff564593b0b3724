"""Multi-document QA: numbered passages, an invented fact planted in one of them and asked about (``qa_f1``).

The built-in passages live in ``passages.py`` (text in ``data/passages.txt``); any (title, text) pairs do.
The facts are invented (registry codes, mascots, wax colours, distances, dates, dishes), so the answer is in
the context only; the distractor passages are shuffled and repeated when the length needs more than one round.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from s3attn.errors import S3Error
from s3attn.evaluation.task_common import (
    CumulativeEstimate,
    Sample,
    TokenLen,
    check_length_and_seed,
    fit_length,
    fresh_numbers,
    split_units,
)

_WAX = "vermilion ochre cerulean viridian mauve saffron cobalt heliotrope umber celadon".split()
_MASCOTS = "Pibbleton Quorvin Tamsk Bellowin Marrowby Fennick Osgrave Wimbrel Tollivar Grusset".split()
_DISHES = (
    "nettle and barley broth",
    "smoked trout dumplings",
    "plum and juniper tart",
    "roasted chestnut porridge",
    "saltmarsh lamb stew",
    "parsnip and honey loaf",
)
_MONTHS = "January February March April May June July August September October November December".split()


def _fact(rng: random.Random, title: str, avoid: str) -> tuple[str, str, str]:
    """An invented fact about ``title``: (sentence, question, answer); the answer is not in ``avoid``."""
    while True:
        kind = rng.randrange(6)
        if kind == 0:
            answer = fresh_numbers(rng, 1, 5, avoid)[0]
            sentence = f"The archive entry on {title} records the registry code {answer}."
            question = f"What registry code does the archive entry on {title} record?"
        elif kind == 1:
            answer = rng.choice(_MASCOTS)
            sentence = f"A footnote about {title} mentions a carved wooden mascot named {answer}."
            question = f"What was the name of the carved wooden mascot mentioned in connection with {title}?"
        elif kind == 2:
            answer = rng.choice(_WAX)
            sentence = f"The earliest surviving letter about {title} was sealed with {answer} wax."
            question = f"What colour of wax sealed the earliest surviving letter about {title}?"
        elif kind == 3:
            answer = f"{rng.randrange(11, 98)} kilometres"
            sentence = (
                f"Surveyors noted that the signal beacon linked to {title} could be seen from {answer} away."
            )
            question = f"From how far away could the signal beacon linked to {title} be seen?"
        elif kind == 4:
            answer = f"{rng.randrange(1, 29)} {rng.choice(_MONTHS)} {rng.randrange(1700, 1950)}"
            sentence = f"The visitors' book for {title} was first opened on {answer}."
            question = f"On what date was the visitors' book for {title} first opened?"
        else:
            answer = rng.choice(_DISHES)
            sentence = (
                f"Old recipe cards say the dish traditionally served in honour of {title} was {answer}."
            )
            question = f"Which dish was traditionally served in honour of {title}?"
        if answer.lower() not in avoid:
            return sentence, question, answer


def _check_passages(passages: Sequence[tuple[str, str]]) -> None:
    titles = [t for t, _ in passages]
    if len(passages) < 2 or len(set(titles)) != len(titles) or not all(x.strip() for _, x in passages):
        raise S3Error(
            "multidoc_qa: passages must be at least 2 (title, text) pairs, distinct titles, non-empty texts"
        )


def _head(number: int, name: str) -> str:
    return f"Passage {number}:\n{name}\n"


class _Distractors(CumulativeEstimate):
    """The distractor passages as a stream of units (passage, sentence, occurrence): every passage but the
    target, shuffled anew each round by ``rng``; a passage's header counts with its first sentence."""

    def __init__(
        self,
        passages: Sequence[tuple[str, str]],
        others: list[int],
        rng: random.Random,
        tokenizer_len: TokenLen,
        base: int,
    ) -> None:
        super().__init__(self._estimate)
        self.passages, self.others, self.rng = passages, others, rng
        self.tokenizer_len, self.base = tokenizer_len, base
        self.units: list[tuple[int, int, int]] = []
        self.body_est: dict[int, list[float]] = {}
        self.head_est: dict[int, float] = {}  # by number of digits of the passage number

    def sentences_of(self, p: int) -> tuple[str, ...]:
        return split_units(self.passages[p][1].strip() + " ")

    def _next_round(self) -> None:
        round_ = list(self.others)
        self.rng.shuffle(round_)
        for p in round_:
            occurrence = self.units[-1][2] + 1 if self.units else 0
            self.units.extend((p, s, occurrence) for s in range(len(self.sentences_of(p))))

    def _body(self, p: int) -> list[float]:
        """Estimated tokens of each sentence of passage ``p``, its title counted with the first."""
        sents = self.sentences_of(p)
        title = self.passages[p][0]
        tokens = max(int(self.tokenizer_len(f"{title}\n{''.join(sents).rstrip()}\n\n")) - self.base, 1)
        sizes = [len(x) for x in sents]
        sizes[0] += len(title) + 1
        return [tokens * c / sum(sizes) for c in sizes]

    def _estimate(self, j: int) -> float:
        while j >= len(self.units):
            self._next_round()
        p, s, occurrence = self.units[j]
        if p not in self.body_est:
            self.body_est[p] = self._body(p)
        if s > 0:
            return self.body_est[p][s]
        digits = len(str(occurrence + 1))
        if digits not in self.head_est:
            head = max(int(self.tokenizer_len(f"Passage {10 ** (digits - 1)}:")) - self.base, 0) + 1
            self.head_est[digits] = head
        return self.body_est[p][s] + self.head_est[digits]

    def assemble(self, n: int, title: str, target_text: str, frac: float) -> str:
        """The first ``n`` units as numbered passages, the target passage inserted at ``frac`` of the complete
        ones."""
        groups: list[tuple[int, list[str]]] = []
        for k in range(n):
            p, s, _ = self.units[k]
            if s == 0:
                groups.append((p, []))
            groups[-1][1].append(self.sentences_of(p)[s])
        complete = sum(1 for p, g in groups if len(g) == len(self.sentences_of(p)))
        blocks = [(self.passages[p][0], "".join(g).rstrip()) for p, g in groups]
        blocks.insert(round(frac * complete), (title, target_text))
        return "\n\n".join(_head(i + 1, t) + x for i, (t, x) in enumerate(blocks))


def multidoc_qa(
    passages: Sequence[tuple[str, str]], length_tokens: int, tokenizer_len: TokenLen, seed: int
) -> Sample:
    """Numbered passages (``Passage i:\\n{title}\\n{text}``) filling ``length_tokens``; an invented fact is
    planted in one of them (at a random sentence) and asked about; metric ``qa_f1``.

    The other passages are distractors, shuffled and repeated when the length needs more than one round;
    the last one may be cut at a sentence boundary. The target passage appears once, never cut.
    """
    check_length_and_seed(length_tokens, seed)
    _check_passages(passages)
    rng = random.Random(seed)
    target = rng.randrange(len(passages))
    title, text = passages[target]
    avoid = " ".join(f"{t} {x}" for t, x in passages).lower()
    fact, question, answer = _fact(rng, title, avoid)
    sentences = list(split_units(text.strip() + " "))
    cut = rng.randint(1, len(sentences))
    target_text = ("".join(sentences[:cut]) + fact + " " + "".join(sentences[cut:])).strip()
    frac = rng.random()
    others = [i for i in range(len(passages)) if i != target]
    base = int(tokenizer_len(""))
    stream = _Distractors(passages, others, random.Random(rng.getrandbits(64)), tokenizer_len, base)
    fixed = max(int(tokenizer_len(_head(10, title) + target_text + "\n\n")) - base, 1)
    if length_tokens <= fixed:
        raise S3Error(f"length_tokens={length_tokens} is too small for one passage ({fixed} tokens)")

    def assemble(n: int) -> str:
        return stream.assemble(n, title, target_text, frac)

    context, tokens = fit_length(length_tokens, tokenizer_len, fixed, stream, assemble)
    found = re.search(rf"Passage (\d+):\n{re.escape(title)}\n", context)
    assert found is not None
    number = int(found.group(1))
    start = found.start() + len(f"Passage {number}:\n")  # the gold passage: title line and text
    fact_at = context.index(fact, start)
    meta = {
        "title": title,
        "fact": fact,
        "passage_number": number,
        "evidence": [[fact_at, fact_at + len(fact)]],  # the planted fact sentence
        "gold_passage": [start, start + len(title) + 1 + len(target_text)],
        "length_tokens": tokens,
        "instruction": "Answer the question based on the given passages. Only give me the answer.",
        "answer_prefix": "Answer:",
    }
    return Sample("multidoc_qa", context, question, [answer], "qa_f1", meta)
