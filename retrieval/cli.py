"""``s3-index ask INDEX "question"``: retrieve spans and answer (wired into the ``s3-index`` command).

Every RetrievalConfig option is one (``--budget``, ``--fusion``, ``--bm25-weight``, ``--site``, ...); the
model and SAEs are the index's own, and so is the model precision unless ``--dtype`` names another (then a
warning says so). ``--reader PATH`` answers with another model (retrieval keeps the index's), ``--documents
GLOB`` retrieves only from the documents whose path matches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from s3attn.config import add_config
from s3attn.errors import S3Error
from s3attn.retrieval.dtypes import DTYPE_INDEX, check_question_dtype
from s3attn.retrieval.retriever import DEFAULT_MODE, MODES, Answer, RetrievalConfig, check_retrieval

CONFIG_NAME = "ask"  # configs/ask.yaml, if a site ships one


@dataclass
class AskConfig:
    """Every option of ``s3-index ask``."""

    mode: str = DEFAULT_MODE
    """How the context is chosen: s3 (SAE co-activation spans), bm25 (passages), hybrid (S3 + BM25 + the
    first and last tokens) or full (the whole index text, middle-truncated)."""
    show_spans: bool = False
    """Print each span and why it was chosen."""
    json: bool = False
    """Print the answer and spans as JSON."""
    generate: bool = True
    """Generate an answer (--no-generate: retrieve only)."""
    dtype: str = DTYPE_INDEX
    """Model precision: index (the one the index was built in), auto, bfloat16, float16 or float32; another
    than the index's is used with a warning."""
    reader: str | None = None
    """Answer with this model instead of the index's (a local Hugging Face causal-LM folder, or
    smollm2-135m), in the same precision, prompted with its own tokenizer and chat template; retrieval
    still uses the index's model."""
    documents: list[str] | None = None
    """Retrieve only from the documents whose path matches one of these globs (fnmatch, comma-separated,
    e.g. 'notes/*.md'); a glob matching no document is an error."""
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    """Retrieval and generation settings."""


def add_ask_parser(sub, argv: Sequence[str] | None) -> None:
    """The ``ask`` subcommand; ``argv`` (the whole command line) may hold its ``--config FILE``."""
    p = sub.add_parser(
        "ask", help="answer a question from an index (retrieval + generation)", description=__doc__
    )
    p.add_argument("index", help="index folder built by s3-index build")
    p.add_argument("question", help="the question")
    add_config(p, AskConfig, CONFIG_NAME, argv)


def check_ask(cfg: AskConfig, question: str) -> AskConfig:
    if cfg.mode not in MODES:
        raise S3Error(f"--mode {cfg.mode}: choose one of {', '.join(MODES)}")
    check_retrieval(cfg.retrieval)
    check_question_dtype(cfg.dtype)
    if not question.strip():
        raise S3Error("the question is empty; ask something")
    return cfg


def print_spans(spans) -> None:
    from s3attn.retrieval.adaptive import trust_in
    from s3attn.retrieval.likelihood import explain

    trust = next((t for t in (trust_in(s.why) for s in spans) if t is not None), None)
    if trust is not None:
        print(f"hybrid (adaptive): {trust.explain()}")
    if (line := explain(spans)) is not None:
        print(f"hybrid (likelihood): {line}")
    for i, s in enumerate(spans, 1):
        why = json.dumps(s.why, sort_keys=True)
        print(f"[{i}] {s.document} tokens {s.start}-{s.end} score {s.score:.3f} via {s.source} {why}")
        print("    " + " ".join(s.text.split())[:400])
    print()


def cmd_ask(args: argparse.Namespace) -> int:
    from s3attn.retrieval.retriever import Retriever

    cfg = check_ask(args.cfg, args.question)
    retriever = Retriever(args.index, cfg=cfg.retrieval, dtype=cfg.dtype, reader=cfg.reader)
    if cfg.generate:
        ans = retriever.answer(args.question, cfg.mode, explain=cfg.show_spans, documents=cfg.documents)
    else:
        t0 = time.perf_counter()
        spans = retriever.retrieve(args.question, cfg.mode, explain=cfg.show_spans, documents=cfg.documents)
        secs = time.perf_counter() - t0
        ans = Answer(None, spans, 0, secs, secs, 0.0)
    spans, text, n_prompt, secs = ans.spans, ans.text, ans.prompt_tokens, ans.seconds
    if cfg.json:
        out = {"question": args.question, "mode": cfg.mode, "budget": cfg.retrieval.budget, "answer": text,
               "reader": cfg.reader, "documents": cfg.documents, "prompt_tokens": n_prompt,
               "seconds": round(secs, 3), "retrieval_seconds": round(ans.retrieval_seconds, 3),
               "generation_seconds": round(ans.generation_seconds, 3), "spans": [s._asdict() for s in spans]}  # fmt: skip
        print(json.dumps(out, indent=2))
        return 0
    if cfg.show_spans:
        print_spans(spans)
    if text is not None:
        print(text)
        print(
            f"({len(spans)} spans, {sum(s.end - s.start for s in spans)} context tokens, "
            f"{n_prompt} prompt tokens, {secs:.2f} s: retrieval {ans.retrieval_seconds:.2f} s, "
            f"generation {ans.generation_seconds:.2f} s)",
            file=sys.stderr,
        )
    return 0
