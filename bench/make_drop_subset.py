"""Extract the DROP subset used by ``drop_qa`` from the BIG-bench 1.0.0 sdist.

    python bench/make_drop_subset.py /tmp/bb/bigbench-1.0.0.tar.gz evaluation/data/drop_passages.json.gz

The sdist (``pip download --no-deps --no-binary :all: bigbench==1.0.0 -d /tmp/bb``) is read as a stream
(``tarfile`` mode ``r|gz``, nothing unpacked) up to ``natural_instructions/subtask028_drop_answer_generation/
task.json``: 6500 DROP questions (Dua et al., 2019), ``input`` = ``Passage: ...\\nQuestion: ...\\nAnswer
type: ...``, ``target`` = one answer in the subtask's own notation (``3.``, ``['span'].``, ``{'day': ...}.``).

Kept: questions whose answer occurs verbatim in the passage (case-insensitive, on word boundaries): one span
(multi-span answers dropped), a date written as in the passage (``day month year`` or ``month day, year``),
or a number of at least two digits asked by a question without a counting/arithmetic cue word (so the
number is read, not computed; single digits match by accident too often). One question per distinct
passage (span before date before number, then input order), passages of at most ``MAX_WORDS`` words.
``COUNT`` passages are taken: every span and date question, then numbers in the order of a SHA-256 of the
passage text (deterministic, unrelated to topic). Title of a record: the passage's first words, as few as
make it unique (at least ``TITLE_WORDS``), then "...". The output is deterministic for a given sdist.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

MEMBER = "bigbench/benchmark_tasks/natural_instructions/subtask028_drop_answer_generation/task.json"
COUNT = 600
MAX_WORDS = 360
TITLE_WORDS = 6
_INPUT = re.compile(r"^Passage: (.*)\nQuestion: (.*)\nAnswer type: (.*)$", re.S)
_ARITHMETIC = re.compile(
    r"\b(more|less|fewer|difference|between|total|combined|sum|average|longer|shorter|percent|"
    r"after|before|than|and|or)\b",
    re.I,
)
_PRIORITY = {"Span": 0, "Date": 1, "Number": 2}


def read_task(sdist: str) -> tuple[bytes, str]:
    """(bytes of the subtask's task.json, the member name) streamed out of the sdist."""
    with tarfile.open(sdist, mode="r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(MEMBER):
                data = tar.extractfile(member)
                assert data is not None
                return data.read(), member.name
    raise SystemExit(f"{MEMBER} not found in {sdist}")


def in_passage(answer: str, passage: str) -> bool:
    pattern = r"(?<!\w)" + re.escape(answer.lower()) + r"(?!\w)"
    return bool(answer.strip()) and re.search(pattern, passage.lower()) is not None


def answers_of(kind: str, target: str, passage: str, question: str) -> list[str]:
    """The target's answer strings found verbatim in ``passage``; [] when the example is not kept."""
    raw = target.strip().removesuffix(".").strip()
    if kind == "Number":
        ok = re.fullmatch(r"\d{2,}", raw) and not _ARITHMETIC.search(question)
        return [raw] if ok and in_passage(raw, passage) else []
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return []
    if kind == "Span" and isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return [value[0].strip()] if in_passage(value[0].strip(), passage) else []
    if kind == "Date" and isinstance(value, dict):
        day, month, year = (str(value.get(k, "")).strip() for k in ("day", "month", "year"))
        forms = [" ".join(x for x in (day, month, year) if x)]
        if day and month:
            forms.append(f"{month} {day}, {year}".strip(" ,"))
        return [f for f in forms if in_passage(f, passage)][:1]
    return []


def select(examples: list[dict]) -> list[dict]:
    """One kept question per passage, ``COUNT`` passages, in a deterministic order."""
    best: dict[str, tuple[int, int, str, list[str]]] = {}
    for i, ex in enumerate(examples):
        m = _INPUT.match(ex["input"])
        if not m:
            continue
        passage, question, kind = (x.strip() for x in m.groups())
        if kind not in _PRIORITY or len(passage.split()) > MAX_WORDS or len(ex["target"]) != 1:
            continue
        answers = answers_of(kind, ex["target"][0], passage, question)
        if answers and (passage not in best or (_PRIORITY[kind], i) < best[passage][:2]):
            best[passage] = (_PRIORITY[kind], i, question, answers)

    def rank(p: str) -> tuple[int, str]:
        return (min(best[p][0], 1), hashlib.sha256(p.encode()).hexdigest())

    chosen = sorted(sorted(best, key=rank)[:COUNT], key=lambda p: best[p][1])
    titles = make_titles(chosen)
    return [
        {
            "id": f"subtask028-{best[p][1]}",
            "title": t,
            "passage": p,
            "question": best[p][2],
            "answers": best[p][3],
        }
        for p, t in zip(chosen, titles)
    ]


def make_titles(passages: list[str]) -> list[str]:
    """Each passage's first ``n`` words + "...", ``n`` >= TITLE_WORDS the fewest that make titles unique."""
    words = [re.sub(r"\s+", " ", p).split(" ") for p in passages]
    n = [TITLE_WORDS] * len(passages)
    while True:
        heads = [" ".join(w[:k]).rstrip(",;:") + "..." for w, k in zip(words, n)]
        dup = {h for h in heads if heads.count(h) > 1}
        if not dup:
            return heads
        n = [k + 1 if h in dup else k for h, k in zip(heads, n)]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    data, member = read_task(argv[0])
    task = json.loads(data)
    records = select(task["examples"])
    out = {
        "source": f"bigbench==1.0.0 sdist, {member} (DROP, Dua et al. 2019, NAACL)",
        "license": "CC BY-SA 4.0 (DROP); redistributed subset, with attribution; see data/SOURCES.md",
        "sha256_of_task_json": hashlib.sha256(data).hexdigest(),
        "records": records,
    }
    blob = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(argv[1], "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(blob)
    print(f"{len(records)} records, {Path(argv[1]).stat().st_size} bytes -> {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
