"""Resident server vs one-shot CLI: ``s3-index serve`` under N concurrent clients, against ``s3-index ask``.

    python bench/bench_serve.py [--index INDEX] [--clients 4] [--questions 20] [--cli-runs 3] [--mode hybrid]

Without ``--index``, ``examples/corpus`` is built (default SmolLM2 release) into a temporary folder. The
server runs as a subprocess on a free loopback port; after one warm-up question, ``--clients`` threads (one
``httpx.Client`` each) send ``--questions`` questions each to ``POST /retrieve`` (retrieval only), one after
another, bounded by ``--max-seconds``. Prints p50 / p99 latency, errors (must be 0) and throughput; then times
``s3-index ask INDEX QUESTION --no-generate --json`` as a subprocess (model and index loaded per question) on
``--cli-runs`` of the same questions. Writes ``docs/results/bench/serve.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = (
    "Who founded Varnholt, and when? | What did Nessa Pryor revive? | What is Birchmoor Station? | What was "
    "quarried at Hollin Quarry? | Who was Dagny Wolstenholme? | Where is Sollen Abbey? | What did Leopold "
    "Ashcroft invent? | When was Merrow Lighthouse built? | What is Gallowmere Forest known for? | What did "
    "Ruan Okonedo do? | What is kept in Ambleton Library? | What did Corvane Ironworks make? | Who was Edda "
    "Lindqvar? | What is The Brisk Heron? | Where is Qell Island? | What did Tobias Wrenfield build? | How "
    "deep is Lake Moraskin? | Who taught at Pellworth Academy? | When did the Doverack Bridge open? | What "
    "did Kestrel Point Observatory discover?"
).split(" | ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")


def start_server(index: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "s3attn.index_builder.cli", "serve", str(index), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.get("/health").status_code == 200:
                    return proc
            except httpx.TransportError:
                time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the server did not come up; see {log}")


def run_clients(base: str, args: argparse.Namespace) -> dict:
    """``args.clients`` threads asking ``args.questions`` questions each; latencies, errors, throughput."""
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.max_seconds

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=base, timeout=args.max_seconds) as client:
            for i in range(args.questions):
                if time.monotonic() > stop_at:
                    return
                q = {"question": QUESTIONS[(c * 7 + i) % len(QUESTIONS)], "mode": args.mode}
                t0 = time.perf_counter()
                try:
                    r = client.post("/retrieve", json=q)
                    ok, why = r.status_code == 200 and r.json()["spans"], r.text[:200]
                except httpx.HTTPError as e:
                    ok, why = False, repr(e)
                dt = time.perf_counter() - t0
                with lock:
                    (lat.append(dt) if ok else errors.append(why))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(lat) + len(errors), "errors": len(errors), "error_samples": errors[:3],
            "p50_ms": round(1000 * percentile(lat, 0.5), 1), "p99_ms": round(1000 * percentile(lat, 0.99), 1),
            "throughput_qps": round(len(lat) / wall, 2), "wall_s": round(wall, 2)}  # fmt: skip


def run_cli(index: Path, args: argparse.Namespace) -> dict:
    """``s3-index ask --no-generate --json`` per question, as a subprocess, timed end to end."""
    secs = []
    for q in QUESTIONS[: args.cli_runs]:
        cmd = [
            sys.executable,
            "-m",
            "s3attn.index_builder.cli",
            "ask",
            str(index),
            q,
            "--no-generate",
            "--json",
        ]
        cmd += ["--mode", args.mode]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        secs.append(time.perf_counter() - t0)
        if res.returncode != 0 or not json.loads(res.stdout)["spans"]:
            raise SystemExit(f"s3-index ask failed: {res.stderr[-500:]}")
    return {"runs": len(secs), "p50_s": round(statistics.median(secs), 2), "max_s": round(max(secs), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, help="a built index (default: build examples/corpus)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--questions", type=int, default=20, help="questions per client")
    ap.add_argument("--cli-runs", type=int, default=3, help="one-shot s3-index ask runs")
    ap.add_argument("--mode", default="hybrid")
    ap.add_argument("--max-seconds", type=float, default=300.0, help="stop the clients after this long")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/bench/serve.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index = args.index
        if index is None:
            index = Path(tmp) / "index"
            subprocess.run(
                ["s3-index", "build", str(ROOT / "examples/corpus"), "--out", str(index)], check=True
            )
        port = free_port()
        server = start_server(index, port, Path(tmp) / "server.log")
        base = f"http://127.0.0.1:{port}"
        try:
            httpx.post(f"{base}/retrieve", json={"question": QUESTIONS[0]}, timeout=300).raise_for_status()
            served = run_clients(base, args)
        finally:
            server.terminate()
            server.wait(timeout=30)
        cli = run_cli(index, args)
    out = {"index": str(args.index or "examples/corpus (built)"), "mode": args.mode, "clients": args.clients,
           "questions_per_client": args.questions, "served": served, "cli": cli,
           "cli_over_served_p50": round(cli["p50_s"] / max(served["p50_ms"] / 1000, 1e-9), 1)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    if served["errors"]:
        raise SystemExit(f"{served['errors']} errors")


if __name__ == "__main__":
    main()
