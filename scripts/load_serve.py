"""A bounded load check of `ragcli serve`: N requests from C concurrent clients, errors and latencies.

By default it sets everything up itself, offline: the tiny test models (tests/tiny_models.py; the
generator is the T5 that answers in whole words, so streams have many pieces) in a temporary folder, an index of sample_docs/, and `ragcli serve` on a free loopback port with a fresh
API key; then it sends the questions of sample_docs/qa.jsonl, round-robin, and stops the server.
With --url it loads an already running server instead (the key from RAGCLI_API_KEY).

    python scripts/load_serve.py                         # 200 requests, 8 clients, POST /query
    python scripts/load_serve.py --endpoint stream       # /v1/chat/completions with stream: true
    python scripts/load_serve.py --url http://127.0.0.1:8000 --requests 50 --json

Reports (stdout) the status counts, p50/p95/max latency in seconds (for `stream` also the time to the
first piece), and requests per second; exits 1 if any request failed. Latency depends on the machine:
compare runs on the same one. Needs the dev and serve extras (httpx, fastapi, uvicorn).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def _questions() -> list[str]:
    lines = (REPO / "sample_docs" / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_tiny_server(work: Path) -> tuple[str, str, subprocess.Popen]:
    """Tiny models, an index of sample_docs/, and `ragcli serve`; returns (url, key, process)."""
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import build_tiny_models, build_wordy_seq2seq, install_in_models_dir

    from ragcli.config import load_settings
    from ragcli.ingest import ingest

    tiny = build_tiny_models(work / "src")
    models = work / "models"
    install_in_models_dir(models, "tiny/embed", tiny.embed, "1" * 40)
    # The T5 that answers in whole words: a streamer emits at spaces, so the first piece comes early.
    install_in_models_dir(models, "tiny/t5", build_wordy_seq2seq(tiny.seq2seq, work / "wordy"), "3" * 40)
    index = work / "index"
    settings = load_settings({"models_dir": models, "index_dir": index, "embed_model": "tiny/embed",
                              "gen_model": "tiny/t5", "splitter": "sentence"}, env={})
    ingest([REPO / "sample_docs"], settings)
    key = secrets.token_urlsafe(32)
    port = _free_port()
    env = {**os.environ, "RAGCLI_MODELS_DIR": str(models), "RAGCLI_INDEX_DIR": str(index),
           "RAGCLI_EMBED_MODEL": "tiny/embed", "RAGCLI_GEN_MODEL": "tiny/t5", "RAGCLI_API_KEY": key,
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "ragcli", "serve", "--port", str(port), "--log-level", "warning"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ragcli serve exited: {(work / 'serve.log').read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/health", headers={"X-Api-Key": key}, timeout=5).status_code == 200:
                return url, key, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("ragcli serve did not start within 300 s")


def _one(client: httpx.Client, endpoint: str, question: str) -> dict:
    started = time.perf_counter()
    first = None
    if endpoint == "query":
        r = client.post("/query", json={"query": question, "query_context": True})
        status = r.status_code
    else:
        body = {"messages": [{"role": "user", "content": question}], "stream": endpoint == "stream"}
        if endpoint == "chat":
            status = client.post("/v1/chat/completions", json=body).status_code
        else:
            with client.stream("POST", "/v1/chat/completions", json=body) as r:
                status = r.status_code
                for line in r.iter_lines():
                    if first is None and line.startswith("data: ") and '"content":"' in line \
                            and '"content":""' not in line:
                        first = time.perf_counter() - started
                    if line == "data: [DONE]":
                        break
                    if line.startswith('data: {"error"'):
                        status = 599  # an error reported inside the stream
    return {"status": status, "seconds": time.perf_counter() - started, "first": first}


def run_load(url: str, key: str, requests: int, clients: int, endpoint: str) -> dict:
    questions = _questions()
    local = threading.local()

    def task(n: int) -> dict:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=300)
        try:
            return _one(local.client, endpoint, questions[n % len(questions)])
        except httpx.HTTPError as exc:
            return {"status": f"{type(exc).__name__}", "seconds": float("nan"), "first": None}

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(task, range(requests)))
    wall = time.perf_counter() - started
    ok = [r["seconds"] for r in results if r["status"] == 200]
    firsts = [r["first"] for r in results if r["status"] == 200 and r["first"] is not None]
    report = {
        "endpoint": endpoint, "requests": requests, "clients": clients,
        "status": dict(Counter(str(r["status"]) for r in results)),
        "errors": sum(r["status"] != 200 for r in results),
        "latency_s": {"p50": round(_percentile(ok, 0.50), 4), "p95": round(_percentile(ok, 0.95), 4),
                      "max": round(max(ok), 4) if ok else None, "mean": round(statistics.fmean(ok), 4) if ok else None},
        "wall_s": round(wall, 3), "requests_per_s": round(requests / wall, 3),
    }
    if endpoint == "stream":
        report["first_piece_s"] = {"p50": round(_percentile(firsts, 0.50), 4), "p95": round(_percentile(firsts, 0.95), 4)}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (key from RAGCLI_API_KEY); default: start one on tiny models")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--endpoint", choices=("query", "chat", "stream"), default="query")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    proc = None
    with tempfile.TemporaryDirectory(prefix="ragcli-load-") as tmp:
        try:
            if args.url:
                url, key = args.url.rstrip("/"), os.environ.get("RAGCLI_API_KEY", "")
            else:
                url, key, proc = _start_tiny_server(Path(tmp))
            health = httpx.get(f"{url}/health", headers={"X-Api-Key": key}, timeout=30).json()
            report = run_load(url, key, args.requests, args.clients, args.endpoint)
            report["server"] = {"gen_model": health["gen_model"]["model"], "embed_model": health["embed_model"]["model"],
                                "generation": health["index"]["generation"], "queue_limit": health["queue"]["queue_limit"]}
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        lat = report["latency_s"]
        print(f"{report['requests']} requests to {args.endpoint} from {report['clients']} clients in {report['wall_s']} s "
              f"({report['requests_per_s']}/s): status {report['status']}")
        print(f"latency p50 {lat['p50']} s, p95 {lat['p95']} s, max {lat['max']} s")
        if "first_piece_s" in report:
            print(f"first piece p50 {report['first_piece_s']['p50']} s, p95 {report['first_piece_s']['p95']} s")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
