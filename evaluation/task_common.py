"""Shared pieces of the task generators: the ``Sample`` type, argument checks, fresh random numbers, and
length fitting (the context assembled to ``length_tokens`` as counted by the caller's ``tokenizer_len``).

Length fitting: sentence token counts are estimated from ``tokenizer_len`` on one 32-sentence chunk in
four (cached across calls per haystack and tokenizer_len), the context is assembled from the estimate,
measured once with ``tokenizer_len``, and only if that is more than 1% off is the budget corrected and the
text rebuilt (at most 6 O(n) passes, usually 1; never per-sentence calls on the whole text). A haystack of
``None`` or ``""`` is RULER's noise (``NOISE``); a text haystack is used from its start and repeated when
too short; needles go between sentences.
"""

from __future__ import annotations

import bisect
import functools
import random
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from s3attn.errors import S3Error

TokenLen = Callable[[str], int]

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
_CHUNK = 32  # sentences per tokenizer_len call when estimating sentence lengths
_STRIDE = 4  # measure one chunk in _STRIDE: token/char ratios vary ~4% between chunks of an essay text
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")


class Sample(NamedTuple):
    """One evaluation item. ``answers`` are the references for ``metric``; ``meta`` is task-specific."""

    task: str
    context: str
    question: str
    answers: list[str]
    metric: str
    meta: dict


# ---- Length fitting ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def split_units(text: str) -> tuple[str, ...]:
    """Sentences of ``text`` with their trailing whitespace, so ``"".join`` gives ``text`` back."""
    units, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        units.append(text[start : m.end()])
        start = m.end()
    if start < len(text):
        units.append(text[start:])
    if units and not units[-1][-1].isspace():
        units[-1] += " "
    return tuple(u for u in units if u.strip())


class CumulativeEstimate:
    """Cumulative token estimates of a unit stream; ``estimate(j)`` gives unit j's tokens (called in order)."""

    def __init__(self, estimate: Callable[[int], float]) -> None:
        self.estimate = estimate
        self.cum = [0.0]  # cum[n]: estimated tokens of the first n units

    def count_for(self, budget: float) -> int:
        """Number of leading units whose estimated length is closest to ``budget``."""
        while self.cum[-1] < budget:
            self.cum.append(self.cum[-1] + self.estimate(len(self.cum) - 1))
        n = bisect.bisect_left(self.cum, budget)
        if n > 0 and budget - self.cum[n - 1] < self.cum[n] - budget:
            n -= 1
        return n

    def boundary(self, n: int, depth: float) -> int:
        """Unit boundary (0..n) whose estimated token offset is closest to ``depth`` of the first n units."""
        goal = depth * self.cum[n]
        b = bisect.bisect_left(self.cum, goal, 0, n + 1)
        if b > n or (b > 0 and goal - self.cum[b - 1] <= self.cum[b] - goal):
            b -= 1
        return b


_ESTIMATES: dict[tuple[TokenLen, tuple[str, ...]], dict[int, list[float]]] = {}  # chunk estimates, reused


class SentenceStream(CumulativeEstimate):
    """Sentence units of a text, repeated cyclically, estimated in chunks of ``_CHUNK`` sentences.

    Chunk estimates are kept across calls for the last few (tokenizer_len, text) pairs, so a harness making
    many samples from one haystack pays the estimation once.
    """

    def __init__(self, text: str | None, tokenizer_len: TokenLen) -> None:
        super().__init__(self._unit_estimate)
        self.units = split_units(text if text and text.strip() else NOISE)
        self.tokenizer_len = tokenizer_len
        self.base = int(tokenizer_len(""))  # special tokens the callable adds to every string
        try:
            key = (tokenizer_len, self.units)
            self._est = _ESTIMATES.pop(key, {})
            _ESTIMATES[key] = self._est
            while len(_ESTIMATES) > 4:
                del _ESTIMATES[next(iter(_ESTIMATES))]
        except TypeError:  # unhashable callable: no reuse
            self._est = {}

    def unit(self, j: int) -> str:
        return self.units[j % len(self.units)]

    def _unit_estimate(self, j: int) -> float:
        i = j % len(self.units)
        g = i // _CHUNK
        if g not in self._est:
            chunk = self.units[g * _CHUNK : (g + 1) * _CHUNK]
            chars = sum(len(u) for u in chunk)
            lead = g - g % _STRIDE  # only every _STRIDE-th chunk is measured; the others use its ratio
            if lead == g:
                # rstrip: a trailing space is a token of its own alone, but joins the next word in context
                rate = max(int(self.tokenizer_len("".join(chunk).rstrip())) - self.base, 0) / chars
            else:
                self._unit_estimate(lead * _CHUNK)
                lead_units = self.units[lead * _CHUNK : (lead + 1) * _CHUNK]
                rate = sum(self._est[lead]) / sum(len(u) for u in lead_units)
            self._est[g] = [rate * len(u) for u in chunk]
        return self._est[g][i - g * _CHUNK]


def fit_length(
    target: int,
    tokenizer_len: TokenLen,
    fixed_tokens: float,
    stream: CumulativeEstimate,
    assemble: Callable[[int], str],
) -> tuple[str, int]:
    """Pick the unit count whose assembled text measures closest to ``target`` tokens; (text, tokens)."""
    tolerance = max(1, target // 100)
    budget = target - fixed_tokens
    best: tuple[int, str, int] | None = None
    tried: set[int] = set()
    for _ in range(6):
        n = stream.count_for(max(budget, 0.0))
        if n in tried:
            break
        tried.add(n)
        text = assemble(n)
        tokens = int(tokenizer_len(text))
        if best is None or abs(target - tokens) < best[0]:
            best = (abs(target - tokens), text, tokens)
        if abs(target - tokens) <= tolerance:
            break
        budget += target - tokens
    assert best is not None
    return best[1], best[2]


def with_needles(
    haystack: str | None, tokenizer_len: TokenLen, length_tokens: int, needles: Sequence[tuple[float, str]]
) -> tuple[str, list[int], int]:
    """Haystack of ``length_tokens`` with each (depth, sentence) needle at the sentence boundary nearest its
    depth; needles sharing a boundary keep their list order. Returns (context, needle char offsets, tokens).
    """
    stream = SentenceStream(haystack, tokenizer_len)
    fixed = sum(max(int(tokenizer_len(s)) - stream.base, 1) for _, s in needles)
    if length_tokens <= fixed + 10:
        raise S3Error(f"length_tokens={length_tokens} is too small for the needles ({fixed:.0f} tokens)")

    def assemble(n: int) -> str:
        at: dict[int, list[int]] = {}
        for k, (depth, _) in enumerate(needles):
            at.setdefault(stream.boundary(n, depth), []).append(k)
        pieces: list[str] = []
        for b in range(n + 1):
            pieces += [needles[k][1] + " " for k in at.get(b, ())]
            if b < n:
                pieces.append(stream.unit(b))
        return "".join(pieces).rstrip()

    text, tokens = fit_length(length_tokens, tokenizer_len, fixed, stream, assemble)
    return text, [text.find(s) for _, s in needles], tokens


def check_length_and_seed(length_tokens: int, seed: int) -> None:
    """S3Error unless ``length_tokens`` is a positive int and ``seed`` an int."""
    if not isinstance(length_tokens, int) or length_tokens <= 0:
        raise S3Error(f"length_tokens must be a positive int, got {length_tokens!r}")
    if not isinstance(seed, int):
        raise S3Error(f"seed must be an int, got {seed!r}")


def fresh_numbers(rng: random.Random, count: int, digits: int, avoid: str) -> list[str]:
    """``count`` distinct random ``digits``-digit numbers, none of them a substring of ``avoid``."""
    values: list[str] = []
    while len(values) < count:
        value = str(rng.randrange(10 ** (digits - 1), 10**digits))
        if value not in values and value not in avoid:
            values.append(value)
    return values


def answer_sentence(text: str, answers: Sequence[str]) -> tuple[int, int] | None:
    """[start, end) in ``text`` of the sentence holding the earliest occurrence (case-insensitive) of any of
    ``answers``, trailing whitespace excluded; None when no answer occurs."""
    low = text.lower()
    hits = [i for i in (low.find(a.lower()) for a in answers if a.strip()) if i >= 0]
    if not hits:
        return None
    at, pos = min(hits), 0
    for unit in split_units(text):
        if pos <= at < pos + len(unit):
            return pos, pos + len(unit.rstrip())
        pos += len(unit)
    return None
