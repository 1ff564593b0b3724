"""``s3-index ask INDEX "question"``: retrieve spans and answer (wired into the ``s3-index`` command)."""

from __future__ import annotations

import argparse
import json
import sys

from s3attn.retrieval.fusion import FUSIONS, check_fusion
from s3attn.retrieval.retriever import MODES, RetrievalConfig


def add_ask_parser(sub) -> None:
    p = sub.add_parser("ask", help="answer a question from an index (retrieval + generation)")
    p.add_argument("index", help="index folder built by s3-index build")
    p.add_argument("question", help="the question")
    p.add_argument("--mode", default="hybrid", help=f"one of {', '.join(MODES)} (default: hybrid)")
    p.add_argument("--budget", type=int, default=2048, help="context tokens fed to the model (default: 2048)")
    p.add_argument(
        "--fusion",
        default=None,
        help=f"how hybrid ranks BM25 passages against S3 spans: {', '.join(FUSIONS)} "
        f"(default: {RetrievalConfig.fusion})",
    )
    p.add_argument("--show-spans", action="store_true", help="print each span and why it was chosen")
    p.add_argument("--json", action="store_true", help="print the answer and spans as JSON")
    p.add_argument("--no-generate", action="store_true", help="retrieve only, do not generate an answer")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generated tokens at most (default: 48)")


def cmd_ask(args: argparse.Namespace) -> int:
    from s3attn.errors import S3Error
    from s3attn.retrieval.retriever import Retriever

    if args.mode not in MODES:
        raise S3Error(f"--mode {args.mode}: choose one of {', '.join(MODES)}")
    if args.fusion is not None:
        check_fusion(args.fusion, "--fusion")
    if args.budget < 1:
        raise S3Error(f"--budget {args.budget}: must be at least 1 token")
    if not args.question.strip():
        raise S3Error("the question is empty; ask something")
    cfg = RetrievalConfig() if args.fusion is None else RetrievalConfig(fusion=args.fusion)
    retriever = Retriever(args.index, cfg=cfg)
    if args.no_generate:
        spans = retriever.retrieve(args.question, args.mode, args.budget, explain=args.show_spans)
        text, n_prompt, secs = None, 0, 0.0
    else:
        ans = retriever.answer(
            args.question, args.mode, args.budget, max_new_tokens=args.max_new_tokens, explain=args.show_spans
        )
        spans, text, n_prompt, secs = ans.spans, ans.text, ans.prompt_tokens, ans.seconds
    if args.json:
        print(
            json.dumps(
                {
                    "question": args.question,
                    "mode": args.mode,
                    "budget": args.budget,
                    "answer": text,
                    "prompt_tokens": n_prompt,
                    "seconds": round(secs, 3),
                    "spans": [s._asdict() for s in spans],
                },
                indent=2,
            )
        )
        return 0
    if args.show_spans:
        for i, s in enumerate(spans, 1):
            why = json.dumps(s.why, sort_keys=True)
            print(f"[{i}] {s.document} tokens {s.start}-{s.end} score {s.score:.3f} via {s.source} {why}")
            print("    " + " ".join(s.text.split())[:400])
        print()
    if text is not None:
        print(text)
        print(
            f"({len(spans)} spans, {sum(s.end - s.start for s in spans)} context tokens, "
            f"{n_prompt} prompt tokens, {secs:.2f} s)",
            file=sys.stderr,
        )
    return 0
