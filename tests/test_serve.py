"""`ragcli serve` end to end: the real command on a loopback port, driven by httpx and the openai client.

One server process serves the whole module (started once, its logs captured to files). A few tests
run the app in-process on uvicorn instead, where they must hold the generator back (the queue limit,
the timeout) or make it fail (an internal error). The generator is a tiny T5 that answers in whole
words, so a stream has many pieces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import openai
import pytest
from conftest import EMBED, EMBED_REV, REPO, write_tree
from tiny_models import build_wordy_seq2seq, install_in_models_dir

pytestmark = pytest.mark.slow

KEY = "canary+key/" + "Zq7" * 12  # never to appear in any log line
GEN = "tiny/wordy"
QUESTION = "What is a delta lake"
SEED_BODY = b'{"query": "What is a delta lake", "top_k": 1, "query_context": true}'
SEED_BODY_BARE = b'{"query": "What is a delta lake", "top_k": 1, "query_context": false}'
EDITIONS = ("alpha", "bravo")
_NOT_PASSED_ON = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "MODEL_ID")


def _corpus(folder: Path, edition: str) -> Path:
    """Three one-chunk files; every chunk names its edition, so a response's sources show which
    generation they came from."""
    return write_tree(folder, {
        "delta.md": f"# Delta Lake\n\nEdition {edition}. A delta lake keeps tables as Parquet files with a "
                    "transaction log, and vacuum removes deleted files after the retention period.\n",
        "faiss.md": f"# FAISS\n\nEdition {edition}. The vector index uses HNSW graphs with thirty-two "
                    "neighbours per node for approximate search.\n",
        "runbook.md": f"# Runbook\n\nEdition {edition}. Ingestion retries a failed upload three times "
                      "before it reports the file.\n",
    })


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, headers: dict[str, str], proc: subprocess.Popen | None = None,
                  seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"ragcli serve exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", headers=headers, timeout=5).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError("ragcli serve did not come up")


@pytest.fixture(scope="module")
def served(tiny_models, tmp_path_factory):
    """`ragcli serve` on a free loopback port; logs in files. It starts before there is an index (the
    ingest of edition alpha runs while it loads, and its first request picks it up)."""
    from ragcli.config import load_settings
    from ragcli.ingest import ingest

    root = tmp_path_factory.mktemp("serve")
    models = root / "models"
    install_in_models_dir(models, EMBED, tiny_models.embed, EMBED_REV)
    install_in_models_dir(models, GEN, build_wordy_seq2seq(tiny_models.seq2seq, root / "wordy"), "6" * 40)
    index = root / "index"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAGCLI_", "DATABRICKS_")) and k not in _NOT_PASSED_ON}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "RAGCLI_MODELS_DIR": str(models), "RAGCLI_INDEX_DIR": str(index), "RAGCLI_EMBED_MODEL": EMBED,
        "RAGCLI_GEN_MODEL": GEN, "RAGCLI_API_KEY": KEY, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf"), "NO_COLOR": "1",
    })
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    out, err = root / "serve.out", root / "serve.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "ragcli", "serve", "--port", str(port), "--queue", "64"],
                                cwd=root, env=env, stdout=fo, stderr=fe)
    try:
        settings = load_settings({"models_dir": models, "index_dir": index, "embed_model": EMBED, "gen_model": GEN,
                                  "splitter": "sentence"}, env={})
        report = ingest([_corpus(root / "corpus", EDITIONS[0])], settings)
        try:
            _wait_healthy(url, {"X-Api-Key": KEY}, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {err.read_text(errors='replace')[-3000:]}") from None
        yield SimpleNamespace(url=url, settings=settings, root=root, index=index, models=models,
                              editions={report.generation: EDITIONS[0]}, logs=(out, err), proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def http(served):
    with httpx.Client(base_url=served.url, headers={"X-Api-Key": KEY}, timeout=120) as client:
        yield client


@pytest.fixture
def oai(served):
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture
def query_json(served, cli, monkeypatch):
    """`ragcli query --json` in-process, on the server's models and index."""
    for var, value in (("RAGCLI_MODELS_DIR", served.models), ("RAGCLI_INDEX_DIR", served.index),
                       ("RAGCLI_EMBED_MODEL", EMBED), ("RAGCLI_GEN_MODEL", GEN)):
        monkeypatch.setenv(var, str(value))

    def run(*args: str) -> dict:
        result = cli("query", "--json", *args)
        assert result.exit_code == 0, result.output
        return result.json()

    return run


def _without_times(data: dict) -> dict:
    data = json.loads(json.dumps(data))
    data["timings"] = sorted(data["timings"])
    for key in ("with_context", "without_context"):
        if data[key]:
            data[key].pop("seconds")
    return data


# -- POST /query ------------------------------------------------------------------------------------
def test_seed_request_with_context_answers_like_query_json(served, query_json):
    r = httpx.post(f"{served.url}/query", content=SEED_BODY,
                   headers={"X-Api-Key": KEY, "Content-Type": "application/json"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    assert data["with_context"]["text"] and data["without_context"] is None
    assert len(data["sources"]) == 1 and data["sources"][0]["used_in_prompt"] is True
    assert data["generation"] in served.editions
    cli_data = query_json("--context", "-k", "1", QUESTION)
    assert _without_times(data) == _without_times(cli_data)


def test_seed_request_without_context(served, query_json):
    # curl -d without -H "Content-Type: application/json" sends form encoding: still JSON to us.
    r = httpx.post(f"{served.url}/query", content=SEED_BODY_BARE,
                   headers={"X-Api-Key": KEY, "Content-Type": "application/x-www-form-urlencoded"}, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["with_context"] is None and data["sources"] == [] and data["generation"] is None
    assert _without_times(data) == _without_times(query_json("-k", "1", QUESTION))


def test_compare_and_mode(http):
    data = http.post("/query", json={"query": QUESTION, "compare": True, "mode": "bm25", "top_k": 2}).json()
    assert data["mode"] == "bm25" and data["top_k"] == 2
    assert data["with_context"]["text"] and data["without_context"]["text"]
    assert 1 <= len(data["sources"]) <= 2 and data["sources"][0]["file"] == "delta.md"  # BM25: the one naming it


# -- chat completions ---------------------------------------------------------------------------------
def test_chat_answers_like_query_with_sources(oai, http):
    expected = http.post("/query", json={"query": QUESTION, "top_k": 2}).json()
    reply = oai.chat.completions.create(
        model=GEN, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        temperature=0.7, extra_body={"ragcli": {"top_k": 2, "return_sources": True}})
    assert reply.object == "chat.completion" and reply.model == GEN
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected["with_context"]["text"]
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == expected["with_context"]["prompt_tokens"]
    ext = reply.model_extra["ragcli"]
    assert ext["retrieval"] is True and ext["generation"] == expected["generation"]
    assert ext["sources"] == expected["sources"] and ext["ignored"] == ["temperature"]


def test_chat_without_retrieval(oai, http):
    expected = http.post("/query", json={"query": QUESTION, "query_context": False}).json()
    reply = oai.chat.completions.create(model=GEN, messages=[{"role": "user", "content": QUESTION}],
                                        extra_body={"ragcli": {"retrieval": False, "return_sources": True}})
    assert reply.choices[0].message.content == expected["without_context"]["text"]
    ext = reply.model_extra["ragcli"]
    assert ext["retrieval"] is False and ext["sources"] == [] and ext["generation"] is None


def test_chat_streams_word_by_word_with_sources(oai):
    whole = oai.chat.completions.create(model=GEN, messages=[{"role": "user", "content": QUESTION}], max_tokens=24)
    chunks = list(oai.chat.completions.create(
        model=GEN, messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}], max_tokens=24,
        stream=True, stream_options={"include_usage": True}, extra_body={"ragcli": {"return_sources": True}}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3  # streamed, not sent whole
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == whole.choices[0].finish_reason
    sources = final[0].model_extra["ragcli"]["sources"]
    assert sources and all({"file", "position", "score", "text", "used_in_prompt"} <= s.keys() for s in sources)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_wire_format(http):
    body = {"messages": [{"role": "user", "content": QUESTION}], "stream": True, "max_tokens": 5}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


def test_chat_errors_in_openai_shape(oai):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.UnprocessableEntityError, match="at most 64"):
        oai.chat.completions.create(model=GEN, messages=[{"role": "user", "content": QUESTION}], max_tokens=10_000)
    with pytest.raises(openai.UnprocessableEntityError, match="last message"):
        oai.chat.completions.create(model=GEN, messages=[{"role": "user", "content": QUESTION},
                                                         {"role": "assistant", "content": "ok"}])
    with pytest.raises(openai.UnprocessableEntityError, match="Extra inputs"):
        oai.chat.completions.create(model=GEN, messages=[{"role": "user", "content": QUESTION}], stop=["\n"])


def test_health_and_models(http, oai, served):
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["target"] == "local"
    assert health["embed_model"]["model"] == EMBED and health["gen_model"]["model"] == GEN
    assert health["index"]["generation"] in served.editions and health["index"]["chunks"] == 3
    assert health["queue"]["queue_limit"] == 64
    assert [m.id for m in oai.models.list()] == [GEN]


# -- the key ------------------------------------------------------------------------------------------
def test_missing_or_wrong_key_is_401_with_one_body(served):
    bodies = set()
    for headers in ({}, {"X-Api-Key": "wrong"}, {"X-Api-Key": KEY[:-1]}, {"X-Api-Key": KEY + "x"},
                    {"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}, {"X-Api-Key": "é" + KEY}):
        raw = {k: v.encode("utf-8") for k, v in headers.items()}  # non-ASCII bytes as a client sends them
        r = httpx.post(f"{served.url}/query", content=SEED_BODY, headers=raw, timeout=30)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        bodies.add(r.text)
    assert len(bodies) == 1 and KEY not in bodies.pop()
    assert httpx.get(f"{served.url}/health", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{served.url}/openapi.json").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="wrong", max_retries=0).models.list()


# -- bad bodies ---------------------------------------------------------------------------------------
CANARY = "CANARY-9f3a"


@pytest.mark.parametrize(("body", "message"), [
    (b'{"query": "What is', "Invalid JSON"),
    (b"", "Invalid JSON"),
    (b"[1, 2]", "Input should be an object"),
    (b'{"top_k": 1}', "query: Field required"),
    (b'{"query": ""}', "query: String should have at least 1 character"),
    (b'{"query": 5}', "query: Input should be a valid string"),
    (b'{"query": "q", "top_k": "1"}', "top_k: Input should be a valid integer"),
    (b'{"query": "q", "top_k": 1.5}', "top_k: Input should be a valid integer"),
    (b'{"query": "q", "top_k": 0}', "top_k: Input should be greater than or equal to 1"),
    (b'{"query": "q", "top_k": 1000000}', "top_k: at most 20"),
    (b'{"query": "q", "query_context": "yes"}', "query_context: Input should be a valid boolean"),
    (b'{"query": "q", "mode": "magic"}', "mode: Input should be"),
    (b'{"query": "q", "CANARY-9f3a": 1}', "Extra inputs are not permitted"),
    (json.dumps({"query": "why " * 3000}).encode(), "reads at most"),
    (b'{"query": "   "}', "empty"),
])
def test_bad_query_bodies_are_422_with_a_message(http, body, message):
    r = http.post("/query", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert "Traceback" not in r.text and "why why" not in r.text


@pytest.mark.parametrize("body", [
    {"messages": []},
    {"messages": [{"role": "wizard", "content": "q"}]},
    {"messages": [{"role": "user", "content": "q"}], "temperature": 5},
    {"messages": [{"role": "user", "content": "q"}], "n": 2},
    {"messages": [{"role": "user", "content": "q"}], "stream": "yes"},
    {"messages": [{"role": "user", "content": "q"}], "ragcli": {"retrieval": False, CANARY: True}},
])
def test_bad_chat_bodies_are_422(http, body):
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith("Invalid request body")


def test_nan_is_refused(http):
    r = http.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "q"}], "temperature": NaN}')
    assert r.status_code == 422


def test_oversized_body_is_413_with_or_without_content_length(http):
    big = json.dumps({"query": "x" * 70_000}).encode()
    assert http.post("/query", content=big).status_code == 413

    def chunked():
        for _ in range(100):
            yield b" " * 1024  # JSON whitespace: only the size is wrong

    r = http.post("/query", content=chunked())
    assert r.status_code == 413 and "larger than 65536 bytes" in r.json()["error"]["message"]
    assert http.get("/health").status_code == 200


# -- re-ingest while serving ----------------------------------------------------------------------------
def test_reingest_while_requests_run_never_mixes_generations(served):
    from ragcli.ingest import ingest

    results: list[tuple[int, dict | str]] = []
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=served.url, headers={"X-Api-Key": KEY}, timeout=120) as c:
            while not stop.is_set():
                r = c.post("/query", json={"query": f"{QUESTION} {n}", "top_k": 3})
                results.append((r.status_code, r.json() if r.status_code == 200 else r.text))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        while len(results) < 4:
            time.sleep(0.1)
        report = ingest([_corpus(served.root / "corpus", EDITIONS[1])], served.settings)
        assert report.published
        served.editions[report.generation] = EDITIONS[1]
        deadline = time.monotonic() + 120
        while not any(ok == 200 and r["generation"] == report.generation for ok, r in list(results)):
            assert time.monotonic() < deadline, "the new generation was not picked up"
            time.sleep(0.1)
        seen = len(results)
        while len(results) < seen + 4:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert [status for status, _ in results if status != 200] == []
    generations = set()
    for _, data in results:
        edition = served.editions[data["generation"]]
        assert len(data["sources"]) == 3
        assert all(f"Edition {edition}." in s["text"] for s in data["sources"]), data
        generations.add(data["generation"])
    assert len(generations) == 2


def test_corrupted_generation_is_refused_and_the_old_one_kept(served, http):
    root = served.index
    serving = (root / "CURRENT").read_text().strip()
    bad = f"gen-{int(serving[4:]) + 1:06d}"
    shutil.copytree(root / serving, root / bad)
    files = root / bad / "files.json"  # the generation's own file table (its segments are shared)
    files.write_bytes(files.read_bytes().replace(b".md", b".mx", 1))  # same size, wrong checksum
    try:
        (root / "CURRENT.tmp").write_text(bad + "\n")
        os.replace(root / "CURRENT.tmp", root / "CURRENT")
        for _ in range(2):
            r = http.post("/query", json={"query": QUESTION, "top_k": 1})
            assert r.status_code == 200 and r.json()["generation"] == serving
        index = http.get("/health").json()["index"]
        assert index["generation"] == serving and index["published"] == bad
        assert index["refused"]["generation"] == bad and "checksum" in index["refused"]["error"]
    finally:
        (root / "CURRENT.tmp").write_text(serving + "\n")
        os.replace(root / "CURRENT.tmp", root / "CURRENT")
        shutil.rmtree(root / bad)


# -- in-process servers: the queue, the timeout, an internal error ----------------------------------------
class _Held:
    """The real generator, but every answer waits until the test lets it go."""

    def __init__(self, real) -> None:
        self._real = real
        self.go = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._real, name)

    def _hold(self) -> None:
        self.entered.set()
        self.go.wait(60)

    def generate(self, prompt: str, max_new_tokens: int = 64, **kwargs):
        self._hold()
        return self._real.generate(prompt, max_new_tokens, **kwargs)

    def stream(self, prompt: str, max_new_tokens: int = 64):
        self._hold()
        return self._real.stream(prompt, max_new_tokens)


class _Exploding(_Held):
    def _hold(self) -> None:
        raise RuntimeError(f"exploded near {KEY}")


class _Free(_Held):
    def __init__(self, real) -> None:
        super().__init__(real)
        self.go.set()


@contextlib.contextmanager
def _in_process(served, generator_wrapper, settings=None, **limits):
    import uvicorn

    from ragcli.config import Secret
    from ragcli.models import load_generator
    from ragcli.serve.pipeline import Pipeline
    from ragcli.serve.server import build
    from ragcli.serve.worker import Limits

    settings = (settings or served.settings).replace(api_key=Secret(KEY))
    generator = generator_wrapper(load_generator(settings))
    app = build(settings, Limits(**limits), Pipeline(settings, generator=generator))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, {"X-Api-Key": KEY}, seconds=60)
        yield url, generator
    finally:
        generator.go.set()
        server.should_exit = True
        thread.join(30)


def _post_in_thread(url: str, out: list) -> threading.Thread:
    def run() -> None:
        out.append(httpx.post(f"{url}/query", json={"query": QUESTION, "query_context": False},
                              headers={"X-Api-Key": KEY}, timeout=60))

    t = threading.Thread(target=run)
    t.start()
    return t


def _wait_queue(url: str, running: int, waiting: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        q = httpx.get(f"{url}/health", headers={"X-Api-Key": KEY}).json()["queue"]
        if (q["running"], q["waiting"]) == (running, waiting):
            return
        time.sleep(0.05)
    raise AssertionError(f"queue never reached running={running}, waiting={waiting}")


def test_full_queue_is_503_with_retry_after(served):
    with _in_process(served, _Held, queue=1) as (url, generator):
        done: list = []
        first = _post_in_thread(url, done)
        assert generator.entered.wait(30)
        _wait_queue(url, 1, 0)
        second = _post_in_thread(url, done)
        _wait_queue(url, 1, 1)
        r = httpx.post(f"{url}/query", json={"query": QUESTION}, headers={"X-Api-Key": KEY}, timeout=30)
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "server_busy"
        generator.go.set()
        first.join(60)
        second.join(60)
        assert [d.status_code for d in done] == [200, 200]
        _wait_queue(url, 0, 0)


def test_request_past_the_timeout_is_504_and_frees_the_worker(served):
    with _in_process(served, _Held, timeout=1.5) as (url, generator):
        started = time.monotonic()
        r = httpx.post(f"{url}/query", json={"query": QUESTION, "query_context": False},
                       headers={"X-Api-Key": KEY}, timeout=30)
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
        assert time.monotonic() - started < 10
        generator.go.set()  # the held answer now runs past its deadline: it stops at its first token
        _wait_queue(url, 0, 0)
        r = httpx.post(f"{url}/v1/chat/completions", headers={"X-Api-Key": KEY}, timeout=30,
                       json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 2,
                             "ragcli": {"retrieval": False}})  # short, to finish within 1.5 s on a busy machine
        assert r.status_code == 200


def test_internal_error_is_a_generic_500_and_the_log_masks_the_key(served, tmp_path):
    from ragcli.serve.logs import log_config

    config = log_config([KEY], "debug")
    log_file = tmp_path / "server.log"
    for handler in config["handlers"].values():
        handler.pop("stream")
        handler.update({"class": "logging.FileHandler", "filename": str(log_file)})
    logging.config.dictConfig(config)
    try:
        with _in_process(served, _Exploding) as (url, _):
            r = httpx.post(f"{url}/query", json={"query": QUESTION, "query_context": False},
                           headers={"X-Api-Key": KEY}, timeout=30)
    finally:
        for name in ("uvicorn", "uvicorn.access", "ragcli"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                handler.close()
                logger.removeHandler(handler)
            logger.propagate = True
    assert r.status_code == 500
    assert r.json() == {"error": {"message": "Internal server error.", "type": "server_error", "code": None}}
    text = log_file.read_text()
    assert "Internal error: RuntimeError: exploded near ***" in text
    assert "Traceback" in text  # debug level: the traceback is logged, masked too
    assert KEY not in text


def test_no_index_yet_answers_without_context_and_picks_up_the_first_ingest(served, tmp_path):
    from ragcli.ingest import ingest

    settings = served.settings.replace(index_dir=tmp_path / "later-index")
    with _in_process(served, _Free, settings) as (url, _):
        headers = {"X-Api-Key": KEY}
        r = httpx.post(f"{url}/query", json={"query": QUESTION}, headers=headers, timeout=60)
        assert r.status_code == 503 and r.json()["error"]["type"] == "index_unavailable"
        assert f"No index in {settings.index_dir}. Run: ragcli ingest" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/query", json={"query": QUESTION, "query_context": False}, headers=headers, timeout=60)
        assert r.status_code == 200
        report = ingest([_corpus(tmp_path / "corpus", "charlie")], settings)
        r = httpx.post(f"{url}/query", json={"query": QUESTION}, headers=headers, timeout=60)
        assert r.status_code == 200 and r.json()["generation"] == report.generation
        assert "Edition charlie." in r.json()["sources"][0]["text"]


@pytest.mark.databricks
def test_databricks_target_is_served_like_the_local_one(served, tmp_path):
    pytest.importorskip("databricks.ai_search")
    try:
        import dbx_emulator
    except ImportError:  # pragma: no cover - tests/ became a package
        from tests import dbx_emulator
    from ragcli.config import load_settings
    from ragcli.ingest import ingest

    token = "dapi-CANARY-serve-3c1d"
    with dbx_emulator.Emulator(tokens={token}, endpoints=["ep"]) as emu:
        settings = load_settings({"models_dir": served.models, "embed_model": EMBED, "gen_model": GEN,
                                  "splitter": "sentence", "target": "databricks"},
                                 env={"DATABRICKS_HOST": emu.url, "DATABRICKS_TOKEN": token,
                                      "RAGCLI_DATABRICKS_ENDPOINT": "ep", "RAGCLI_DATABRICKS_INDEX": "main.rag.chunks"})
        ingest([_corpus(tmp_path / "corpus", "delta")], settings)
        with _in_process(served, _Free, settings) as (url, _):
            headers = {"X-Api-Key": KEY}
            data = httpx.post(f"{url}/query", content=SEED_BODY, headers=headers, timeout=60).json()
            assert data["target"] == "databricks" and data["generation"] == "main.rag.chunks"
            assert len(data["sources"]) == 1 and "Edition delta." in data["sources"][0]["text"]
            health = httpx.get(f"{url}/health", headers=headers).json()
            assert health["target"] == "databricks" and health["index"]["generation"] == "main.rag.chunks"
            assert token not in json.dumps(health)


# -- `ragcli query --stream` --------------------------------------------------------------------------------
def test_query_stream_prints_the_same_answer_and_the_sources(served, query_json, cli):
    expected = query_json("--context", "-k", "2", QUESTION)
    result = cli("query", "--stream", "--context", "-k", "2", QUESTION)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Q: {QUESTION}" and lines[1] == expected["with_context"]["text"]
    assert "Sources (dense, top 2)" in result.stdout
    compare = cli("query", "--stream", "--compare", QUESTION)
    assert compare.exit_code == 0
    assert "With context:" in compare.stdout and "Without context:" in compare.stdout
    assert cli("query", "--stream", "--json", QUESTION).exit_code == 2


# -- last: the server's own logs -------------------------------------------------------------------------
def test_the_key_is_in_no_log_line(served):
    httpx.get(f"{served.url}/health", params={"api_key": KEY}, timeout=30)
    httpx.get(f"{served.url}/health?key={KEY}", timeout=30)
    httpx.get(f"{served.url}/{quote(KEY, safe='')}", headers={"X-Api-Key": KEY}, timeout=30)
    httpx.get(f"{served.url}/x/{KEY.replace('a', '%61')}", headers={"X-Api-Key": KEY}, timeout=30)
    httpx.post(f"{served.url}/query", content=SEED_BODY, headers={"X-Api-Key": KEY + "x"}, timeout=30)
    time.sleep(0.5)
    out, err = (p.read_text(errors="replace") for p in served.logs)
    assert '"POST /query HTTP/1.1" 200' in out and '"POST /query HTTP/1.1" 401' in out
    assert '"GET /health HTTP/1.1" 401' in out  # the query string is not logged
    assert "Uvicorn running on" in err and f"Loaded {EMBED} and {GEN}" in err
    for text in (out, err):
        for form in (KEY, quote(KEY, safe=""), quote(KEY)):
            assert form not in text
