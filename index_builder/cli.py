"""``s3-index``: build, inspect, verify, merge and query a posting-list index.

s3-index build corpus/ [--out INDEX] [--sae RELEASE] [--layers 6,12] [--chunk N] [--dtype auto] [--resume]
               [--devices N] [--num-nodes M] [--storage-options JSON]
s3-index info INDEX
s3-index verify INDEX
s3-index merge INDEX
s3-index gc INDEX
s3-index ask INDEX "question" [--mode s3|bm25|hybrid|full] [--budget N] [--fusion F] [--dtype index]
             [--show-spans] [--json]
s3-index serve INDEX [--host 127.0.0.1] [--port 8000] [--mode M] [--budget N]  (HTTP JSON server)

build and ask take --config FILE (YAML); `s3-index build --help` and `s3-index ask --help` list every
option with its effective default. INDEX may be a folder or an fsspec URL (s3://bucket/prefix, gs://...,
memory://...); credentials and endpoint come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID ...)
or --storage-options JSON (`s3-index --storage-options JSON COMMAND ...` for every command).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from s3attn.config import CliParser, add_config
from s3attn.errors import S3Error, cli_entry
from s3attn.index_builder.config import BuildConfig
from s3attn.logs import setup_cli_logging
from s3attn.storage import set_storage_options, storage_error

PROG = "s3-index"


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The s3-index parser; ``argv`` is read for the chosen command's ``--config FILE``."""
    command = argv[0] if argv else None
    parser = CliParser(prog=PROG, description=__doc__)
    parser.add_argument(
        "--storage-options",
        dest="global_storage_options",
        metavar="JSON",
        help="fsspec storage options (a JSON object) for an index URL, any command",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = sub.add_parser(
        "build", help="index a corpus folder (streaming prefill -> Zarr posting lists + BM25)"
    )
    build.add_argument(
        "corpus", help="folder (read recursively) of .txt/.md/.jsonl/.parquet, or one such file"
    )
    add_config(build, BuildConfig, "index", argv if command == "build" else [])
    for name, text in (
        ("info", "documents, tokens, postings, bytes per posting, segments"),
        ("verify", "check offsets, positions, k postings per token, token counts, checksums"),
        ("merge", "tiered merge of small segments"),
        ("gc", "delete segments that neither the index nor a live reader's generation needs"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("index", help="index folder or fsspec URL (s3://bucket/prefix ...)")
        p.add_argument("--storage-options", metavar="JSON", help="fsspec storage options for a URL (JSON)")
        if name == "merge":
            p.add_argument(
                "--tier", type=int, default=8, help="segments per tier before a merge (default: 8)"
            )
            p.add_argument("--all", action="store_true", help="merge everything into one segment")
        if name in ("info",):
            p.add_argument("--json", action="store_true", help="print JSON")
    from s3attn.retrieval.cli import add_ask_parser

    add_ask_parser(sub, argv if command == "ask" else [])
    from s3attn.retrieval.serve import add_serve_parser

    add_serve_parser(sub)
    return parser


def cmd_build(args: argparse.Namespace) -> int:
    from s3attn.index_builder.pipeline import build_index

    out = build_index(args.corpus, args.cfg)
    print(f"{PROG}: index at {out}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from s3attn.index_builder.reader import IndexReader

    with IndexReader.open(args.index) as store:
        info = store.info()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, list | dict):
            value = json.dumps(value)
        print(f"{key:>22}: {value}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from s3attn.index_builder.reader import IndexReader

    with IndexReader.open(args.index) as store:
        problems = store.verify()
        n = len(store.segments)
    if problems:
        for p in problems:
            print(f"{PROG}: verify: {p}", file=sys.stderr)
        raise S3Error(
            f"{args.index}: {len(problems)} problem(s) found; rebuild the index or the named segments"
        )
    print(f"{args.index}: ok ({n} segments)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from s3attn.index_builder.indexer import IndexWriter

    with IndexWriter.open(args.index) as store:
        before = len(store.segments)
        merged = store.merge(args.tier, into_one=args.all, progress=True)
        after = len(store.segments)
    print(f"{args.index}: merged {merged} segments ({before} -> {after})")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from s3attn.index_builder.indexer import IndexWriter

    with IndexWriter.open(args.index) as store:  # opening for writing collects (store.last_gc)
        report = store.last_gc
    leased = ", ".join(str(g) for g in report.leased) or "none"
    print(
        f"{args.index}: deleted {len(report.deleted)} segment folders; "
        f"{len(report.pending)} kept for live readers (leased generations: {leased})"
    )
    return 0


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    setup_cli_logging()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    cfg = getattr(args, "cfg", None)
    opts = getattr(args, "storage_options", None) or getattr(cfg, "storage_options", None)
    set_storage_options(opts or args.global_storage_options or None)  # None: from the environment
    try:
        return _run(args)
    except Exception as err:  # an object store's client error (no credentials, endpoint down, ...)
        bad = storage_error(err)
        if bad is None:
            raise
        raise bad from None


def _run(args: argparse.Namespace) -> int:
    if args.command == "ask":
        from s3attn.retrieval.cli import cmd_ask

        return cmd_ask(args)
    if args.command == "serve":
        from s3attn.retrieval.serve import cmd_serve

        return cmd_serve(args)
    commands = {"build": cmd_build, "info": cmd_info, "verify": cmd_verify, "merge": cmd_merge, "gc": cmd_gc}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
