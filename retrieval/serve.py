"""``s3-index serve INDEX``: a resident HTTP JSON server (FastAPI + uvicorn) over one loaded ``Retriever``.

``make_app(retriever)`` builds the app: ``POST /retrieve``, ``POST /answer`` (the fields of ``s3-index ask
--json``), ``GET /health`` and ``GET /info`` (the figures of ``s3-index info``). The index and the model load
once; requests are served one at a time on the model (one lock), and each moves the retriever to the newest
index generation first (``Retriever.refresh``), so documents that ``s3-index build`` appends are found
without a restart. Errors are one-line JSON (``{"error": "..."}``): 422 for a malformed request, 400 for bad
input (``S3Error``), 503 for a damaged index (``IndexCorruptError``), 500 (logged) for anything else.

FastAPI and uvicorn are imported only here, inside functions (``pip install 's3-attention[serve]'``).
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run time, and the
# request models are local to make_app.

import argparse
import inspect
import ipaddress
import logging
import threading
import time
from typing import Any

from s3attn.errors import IndexCorruptError, S3Error, one_line
from s3attn.retrieval.dtypes import DTYPE_INDEX
from s3attn.retrieval.retriever import DEFAULT_MODE, MODES, RetrievalConfig

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
INSTALL_HINT = "s3-index serve needs fastapi and uvicorn: pip install 's3-attention[serve]'"


def validation_line(errors: list[dict]) -> str:
    """Pydantic's validation errors on one line: ``body.budget: Input should be ...; ...``."""
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return one_line("; ".join(parts) or "invalid request")


def takes(fn, name: str) -> bool:
    """Whether the callable ``fn`` takes a keyword argument ``name``."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class Served:
    """The retriever behind one lock: every call refreshes to the newest generation, then runs alone."""

    def __init__(self, retriever, lock=None):
        self.retriever = retriever
        self.lock = lock or threading.Lock()

    def _kwargs(self, fn, documents: list[str] | None) -> dict[str, Any]:
        if documents is None:
            return {}
        if not takes(fn, "documents"):
            raise S3Error("documents: this s3attn's Retriever cannot restrict to documents; leave it out")
        return {"documents": documents}

    def retrieve(self, question: str, mode: str, budget: int | None, explain: bool, documents) -> dict:
        r = self.retriever
        with self.lock:
            t0 = time.perf_counter()
            r.refresh()
            extra = self._kwargs(r.retrieve, documents)
            spans = r.retrieve(question, mode, budget, explain=explain, **extra)
            secs = time.perf_counter() - t0
        return {"question": question, "mode": mode, "budget": budget or r.cfg.budget,
                "seconds": round(secs, 3), "spans": [s._asdict() for s in spans]}  # fmt: skip

    def answer(self, question: str, mode: str, budget: int | None, explain: bool, documents,
               max_new_tokens: int | None) -> dict:  # fmt: skip
        r = self.retriever
        with self.lock:
            r.refresh()
            extra = self._kwargs(r.answer, documents)
            ans = r.answer(question, mode, budget, max_new_tokens=max_new_tokens, explain=explain, **extra)
        return {"question": question, "mode": mode, "budget": budget or r.cfg.budget, "answer": ans.text,
                "prompt_tokens": ans.prompt_tokens, "seconds": round(ans.seconds, 3),
                "spans": [s._asdict() for s in ans.spans]}  # fmt: skip

    def info(self) -> dict:
        with self.lock:
            self.retriever.refresh()
            return self.retriever.store.info()  # what s3-index info prints


def _add_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def error(status: int, message: object) -> JSONResponse:
        return JSONResponse({"error": one_line(message)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return error(422, validation_line(list(exc.errors())))

    @app.exception_handler(S3Error)
    async def _bad_input(request, exc: S3Error):
        return error(503 if isinstance(exc, IndexCorruptError) else 400, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        return error(exc.status_code, exc.detail)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        logger.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({one_line(exc)}); see the server log")


def make_app(retriever, *, default_mode: str = DEFAULT_MODE, default_budget: int | None = None):
    """The FastAPI app serving ``retriever`` (a loaded ``Retriever``); requests without ``mode`` or
    ``budget`` get ``default_mode`` / ``default_budget`` (None: the retriever's ``cfg.budget``)."""
    from fastapi import FastAPI
    from pydantic import BaseModel, ConfigDict, Field

    class RetrieveRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question: str
        mode: str = default_mode
        budget: int | None = Field(default=default_budget, ge=1)
        explain: bool = False
        documents: str | list[str] | None = None  # path globs (when the Retriever takes them)

    class AnswerRequest(RetrieveRequest):
        max_new_tokens: int | None = Field(default=None, ge=1)

    served = Served(retriever)
    app = FastAPI(title="s3attn", description=__doc__)
    app.state.served = served
    _add_error_handlers(app)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "index": str(retriever.store.path)}

    @app.get("/info")
    def info() -> dict:
        return served.info()

    @app.post("/retrieve")
    def retrieve(req: RetrieveRequest) -> dict:
        return served.retrieve(req.question, req.mode, req.budget, req.explain, req.documents)

    @app.post("/answer")
    def answer(req: AnswerRequest) -> dict:
        return served.answer(
            req.question, req.mode, req.budget, req.explain, req.documents, req.max_new_tokens
        )

    return app


# ---- the s3-index serve subcommand -----------------------------------------------------------------


def add_serve_parser(sub) -> None:
    """The ``serve`` subcommand of ``s3-index``."""
    p = sub.add_parser("serve", help="serve an index over HTTP JSON (POST /retrieve, /answer; GET /info)")
    p.add_argument("index", help="index folder built by s3-index build")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    p.add_argument(
        "--mode", default=DEFAULT_MODE, help=f"mode of requests that name none (default: {DEFAULT_MODE})"
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help=f"budget of requests that name none (default: {RetrievalConfig().budget})",
    )
    p.add_argument("--dtype", default=DTYPE_INDEX, help="model precision (default: the index's)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serve(args: argparse.Namespace) -> None:
    if args.mode not in MODES:
        raise S3Error(f"--mode {args.mode}: choose one of {', '.join(MODES)}")
    if args.budget is not None and args.budget < 1:
        raise S3Error(f"--budget {args.budget}: must be at least 1")
    if not 0 <= args.port <= 65535:
        raise S3Error(f"--port {args.port}: must be in [0, 65535]")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise S3Error(INSTALL_HINT) from e


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from s3attn.retrieval.dtypes import check_question_dtype
    from s3attn.retrieval.retriever import Retriever

    check_serve(args)
    cfg = RetrievalConfig() if args.budget is None else RetrievalConfig(budget=args.budget)
    retriever = Retriever(args.index, cfg=cfg, dtype=check_question_dtype(args.dtype))
    app = make_app(retriever, default_mode=args.mode, default_budget=args.budget)
    if not _is_loopback(args.host):
        logger.warning("serving on %s: anyone who can reach this address can query the index", args.host)
    logger.info("serving %s on http://%s:%d", args.index, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
