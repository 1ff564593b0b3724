"""Break-even of answering with an index against answering from the full context: how many questions about one
document pay for its index build. Reads a ``bench_retrieval.py`` result (its answering part: one document
indexed once, the same questions answered with full context and with hybrid, timed side by side):

    python bench/break_even.py docs/results/bench/retrieval-fp16-query.json

break-even = build seconds / (median full-context answer seconds - median hybrid answer seconds). Beyond the
model's window, full context is not an option at all (it is middle-truncated), so the index is then the only
way to read the whole document and there is nothing to break even with.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path


def break_even(result: dict) -> dict:
    full = statistics.median(result["answer_full_s"])
    hybrid = statistics.median(result["answer_hybrid_s"])
    build = float(result["doc_index_build_s"])
    saved = full - hybrid
    questions = build / saved if saved > 0 else math.inf
    return {"doc_tokens": result["doc_tokens"], "build_s": build, "full_answer_s": full,
            "hybrid_answer_s": hybrid, "saved_per_question_s": saved, "break_even_questions": questions}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python bench/break_even.py BENCH_RETRIEVAL_RESULT.json")
    b = break_even(json.loads(Path(argv[0]).read_text()))
    print(
        f"{b['doc_tokens']}-token document: build {b['build_s']:.1f} s once; per question full context "
        f"{b['full_answer_s']:.1f} s vs hybrid {b['hybrid_answer_s']:.1f} s (saves {b['saved_per_question_s']:.1f}"
        f" s); the index pays for itself after {b['break_even_questions']:.2f} questions "
        f"({math.ceil(b['break_even_questions'])} or more)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
