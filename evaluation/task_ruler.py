"""NIAH and RULER tasks: the classic needle in a haystack, RULER's NIAH variants, variable tracking (VT) and
common-word extraction (CWE), deterministic per seed.

* Needles are RULER's magic numbers: ``The special magic number for {key} is: {value}.``, keys are
  adjective-noun word pairs, values 7-digit numbers, scored with ``string_match_all``. The classic
  Paul Graham NIAH uses the same needle (not the San Francisco sandwich sentence): a random number cannot
  come from model memory and is scored by substring match without an LLM judge.
* ``ruler_common_words`` uses invented 6-letter words (three consonant-vowel syllables): no word is a
  substring of another, and none can be recalled from training data.
"""

from __future__ import annotations

import random
from typing import Literal

from s3attn.errors import S3Error
from s3attn.evaluation.task_common import (
    NOISE,
    Sample,
    TokenLen,
    check_length_and_seed,
    fresh_numbers,
    with_needles,
)

NiahKind = Literal["single", "multikey", "multivalue", "multiquery"]

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


def _fresh_keys(rng: random.Random, count: int, avoid: str) -> list[str]:
    keys: list[str] = []
    while len(keys) < count:
        key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        if key not in keys and key not in avoid:
            keys.append(key)
    return keys


def needle_haystack(
    haystack_text: str | None, tokenizer_len: TokenLen, length_tokens: int, depth: float, seed: int
) -> Sample:
    """Classic needle-in-a-haystack: one magic-number needle at ``depth`` (0 = start, 1 = end) of the text."""
    check_length_and_seed(length_tokens, seed)
    if not 0.0 <= depth <= 1.0:
        raise S3Error(f"depth must be in [0, 1], got {depth!r}")
    rng = random.Random(seed)
    avoid = haystack_text or ""
    key = _fresh_keys(rng, 1, avoid)[0]
    value = fresh_numbers(rng, 1, 7, avoid)[0]
    needle = NEEDLE.format(key=key, value=value)
    context, offsets, tokens = with_needles(haystack_text, tokenizer_len, length_tokens, [(depth, needle)])
    meta = {
        "depth": depth,
        "key": key,
        "needle": needle,
        "needle_char_offset": offsets[0],
        "evidence": [[offsets[0], offsets[0] + len(needle)]],
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
    check_length_and_seed(length_tokens, seed)
    rng = random.Random(seed)
    avoid = haystack_text or ""
    count = 1 if kind == "single" else NUM_RULER_NEEDLES
    keys = _fresh_keys(rng, 1 if kind == "multivalue" else count, avoid)
    values = fresh_numbers(rng, count, 7, avoid)
    if kind == "multivalue":
        needles = [NEEDLE_MULTIVALUE.format(key=keys[0], value=v) for v in values]
    else:
        needles = [NEEDLE.format(key=k, value=v) for k, v in zip(keys, values)]
    depths = rng.sample(RULER_DEPTHS, count)
    context, offsets, tokens = with_needles(
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
        "evidence": sorted([o, o + len(n)] for o, n in list(zip(offsets, needles))[: len(answers)]),
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
    check_length_and_seed(length_tokens, seed)
    if num_chains < 1 or num_hops < 1:
        raise S3Error(f"num_chains and num_hops must be >= 1, got {num_chains} and {num_hops}")
    rng = random.Random(seed)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names: list[str] = []
    while len(names) < num_chains * (num_hops + 1):
        name = "".join(rng.choice(letters) for _ in range(5))
        if name not in names:
            names.append(name)
    values = fresh_numbers(rng, num_chains, 5, NOISE)
    chains = [names[c * (num_hops + 1) : (c + 1) * (num_hops + 1)] for c in range(num_chains)]
    statements: list[tuple[float, str]] = []
    for chain, value in zip(chains, values):
        depths = sorted(rng.random() for _ in chain)
        statements.append((depths[0], f"VAR {chain[0]} = {value}."))
        statements += [(d, f"VAR {chain[i + 1]} = VAR {chain[i]}.") for i, d in enumerate(depths[1:])]
    statements.sort(key=lambda s: s[0])
    context, offsets, tokens = with_needles(None, tokenizer_len, length_tokens, statements)
    first = {f"VAR {chains[0][0]} = {values[0]}."} | {
        f"VAR {b} = VAR {a}." for a, b in zip(chains[0], chains[0][1:])
    }
    meta = {
        "chains": chains,
        "values": values,
        "evidence": sorted([o, o + len(s)] for o, (_, s) in zip(offsets, statements) if s in first),
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


def _cwe_entries(length_tokens: int, tokenizer_len: TokenLen, seed: int, base: int) -> float:
    """Estimated number of entries of a ``length_tokens`` CWE list, from 8 probes of 32 across its numbering
    (the entry numbers' width depends on the count, so three rounds)."""
    probe_words = _invented_words(random.Random(seed), 32)

    def per_entry(total: float) -> float:
        """Mean tokens of an entry of a list of ``total`` entries."""
        starts = sorted({max(1, int(total * (q + 0.5) / 8) - 16) for q in range(8)})
        probes = [" ".join(f"{a + i}. {w}" for i, w in enumerate(probe_words)) for a in starts]
        return sum(max(int(tokenizer_len(x)) - base, 1) for x in probes) / (32 * len(probes))

    entries = 64.0
    for _ in range(3):
        entries = length_tokens / per_entry(entries)
    return entries


def _cwe_list(
    seed: int, num_common: int, n_uncommon: int, freq_cw: int, freq_uncommon: int
) -> tuple[str, list[str]]:
    """(the numbered word list, the common words) of ``n_uncommon`` uncommon words."""
    rng = random.Random(seed)
    words = _invented_words(rng, num_common + n_uncommon)
    items = words[:num_common] * freq_cw + words[num_common:] * freq_uncommon
    rng.shuffle(items)
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(items)), words[:num_common]


def _fit_cwe(
    length_tokens: int,
    tokenizer_len: TokenLen,
    seed: int,
    counts: tuple[int, int, int],
    entries: float,
    base: int,
) -> tuple[str, list[str], int]:
    """The CWE list whose length is closest to ``length_tokens`` (at most 6 measured tries): (context,
    common words, tokens). ``counts``: number of common words, their frequency, the uncommon frequency."""
    num_common, freq_cw, freq_uncommon = counts
    n_uncommon = max(0, round((entries - num_common * freq_cw) / freq_uncommon))
    tolerance = max(1, length_tokens // 100)
    best: tuple[int, str, list[str], int] | None = None
    tried: set[int] = set()
    for _ in range(6):
        if n_uncommon in tried:
            break
        tried.add(n_uncommon)
        context, common = _cwe_list(seed, num_common, n_uncommon, freq_cw, freq_uncommon)
        tokens = int(tokenizer_len(context))
        if best is None or abs(length_tokens - tokens) < best[0]:
            best = (abs(length_tokens - tokens), context, common, tokens)
        if abs(length_tokens - tokens) <= tolerance:
            break
        per_entry = max(tokens - base, 1) / (num_common * freq_cw + n_uncommon * freq_uncommon)
        n_uncommon = max(0, n_uncommon + round((length_tokens - tokens) / per_entry / freq_uncommon))
    assert best is not None
    return best[1], best[2], best[3]


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
    check_length_and_seed(length_tokens, seed)
    if num_common < 1 or freq_uncommon < 1 or freq_common <= freq_uncommon:
        raise S3Error("ruler_common_words: need num_common >= 1 and freq_common > freq_uncommon >= 1")
    base = int(tokenizer_len(""))
    entries = _cwe_entries(length_tokens, tokenizer_len, seed, base)
    freq_cw = min(freq_common, max(freq_uncommon + 1, int(entries // (3 * num_common))))
    if num_common * freq_cw > entries:
        raise S3Error(f"length_tokens={length_tokens} is too small for {num_common} common words")
    counts = (num_common, freq_cw, freq_uncommon)
    context, common, tokens = _fit_cwe(length_tokens, tokenizer_len, seed, counts, entries, base)
    meta = {
        "evidence": [],  # the answer is a count over the whole list: no localized evidence
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
