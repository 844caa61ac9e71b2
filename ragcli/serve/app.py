"""The HTTP API of `ragcli serve` (FastAPI): the same answers as `ragcli query`, over HTTP.

Endpoints (every one needs the key when RAGCLI_API_KEY is set):

- `POST /query`: body `{"query", "top_k", "query_context", "mode", "compare"}`; answers with exactly
  the JSON of `ragcli query --json`.
- `POST /v1/chat/completions`: OpenAI-compatible, streamed as server-sent events with `"stream": true`.
- `GET /health`: models, index generation, target, queue. `GET /v1/models`: the served generator.

Errors are JSON, `{"error": {"message", "type"}}` (the OpenAI shape, so its client reads them): 401
(the same body for a missing or a wrong key), 404, 413 (body too large), 422 (bad JSON, wrong types,
unknown fields, a question too long for the generator, top_k or max_tokens over the limits), 503 (queue
full, with Retry-After; or no usable index), 504 (past the per-request timeout), 500 (a bug: a generic
message; the details, secrets masked, go to the log only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request  # noqa: TID253 - ragcli.serve is imported only by `serve`
from fastapi.responses import JSONResponse, Response, StreamingResponse  # noqa: TID253
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException  # noqa: TID253

from ragcli.errors import (
    DatabricksError,
    IndexCorruptedError,
    IndexModelMismatchError,
    IndexNotFoundError,
    RagcliError,
)
from ragcli.serve.auth import KeyCheck
from ragcli.serve.schemas import ChatRequest, QueryRequest
from ragcli.serve.worker import BadQuestion, Busy, Job, Limits, TimedOut, Worker

if TYPE_CHECKING:  # pragma: no cover
    from concurrent.futures import Future

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ragcli.config import Secret
    from ragcli.query import QueryResult
    from ragcli.serve.pipeline import Pipeline

log = logging.getLogger("ragcli.serve")

_UNAVAILABLE = (IndexNotFoundError, IndexCorruptedError, IndexModelMismatchError, DatabricksError)
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# -- errors ------------------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", *,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.headers = status, message, kind, code, headers


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.kind, exc.code), status_code=exc.status, headers=exc.headers)


def _api_error(exc: BaseException) -> ApiError:
    """The HTTP error for an exception raised while answering."""
    from ragcli.config import redact

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Busy):
        return ApiError(503, str(exc), "server_busy", headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, TimedOut):
        return ApiError(504, str(exc), "timeout")
    if isinstance(exc, BadQuestion):
        return ApiError(422, str(exc))
    if isinstance(exc, _UNAVAILABLE):
        return ApiError(503, redact(str(exc)), "index_unavailable")
    if isinstance(exc, RagcliError):
        return ApiError(500, redact(str(exc)), "server_error")
    _log_internal(exc)
    return ApiError(500, "Internal server error.", "server_error")


def _log_internal(exc: BaseException) -> None:
    """One line naming the bug; the traceback at debug level (`ragcli serve --log-level debug`). The log
    filter masks secrets in both."""
    log.error("Internal error: %s: %s", type(exc).__name__, exc)
    log.debug("Traceback of the internal error", exc_info=exc)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return "Invalid request body: " + "; ".join(parts)


# -- middleware (pure ASGI, outermost first: errors, key, body size) -------------------------------
async def _send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body, separators=(",", ":")).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


class _Errors:
    """A last net for unexpected exceptions: logged as one line, answered 500 with a generic body, never
    re-raised (so no traceback with request details reaches the server log)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:  # noqa: BLE001 - the server's error boundary
            _log_internal(exc)
            if not started:
                await _send_json(send, 500, error_body("Internal server error.", "server_error"))


class _RequireKey:
    def __init__(self, app: ASGIApp, key: Secret) -> None:
        self.app = app
        self.check = KeyCheck(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.check.allows(scope["headers"]):
            await _send_json(send, 401, error_body("Unauthorized.", "authentication_error"),
                             {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class _BodyLimit:
    """Refuse a body over `limit` bytes: by its Content-Length at once, else counted as it arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> str:
        return f"The request body is larger than {self.limit} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_json(send, 413, error_body(self._too_large(), "invalid_request_error"))
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counted, send)


# -- the application ---------------------------------------------------------------------------------
async def _parse(request: Request, model: type[BaseModel]) -> Any:
    """The body as `model`, whatever the Content-Type (curl sends form encoding unless told otherwise)."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise ApiError(422, _validation_message(exc)) from None


def create_app(pipeline: Pipeline, limits: Limits | None = None, *, api_key: Secret | None = None) -> FastAPI:
    """The FastAPI application over a loaded `Pipeline`. Without `api_key` no key is asked for."""
    limits = limits or Limits()
    worker = Worker(pipeline, limits)
    settings = pipeline.settings
    served_model = settings.gen_model
    started = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.shutdown()

    # No OpenAPI document or docs pages: the bodies are parsed by hand (whatever the Content-Type), and
    # their JSON schemas are those of the models in ragcli.serve.schemas.
    app = FastAPI(title="ragcli", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.worker = worker
    app.state.pipeline = pipeline

    @app.exception_handler(ApiError)
    async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(HTTPException)
    async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers)

    def check_top_k(top_k: int | None) -> None:
        if top_k is not None and top_k > limits.max_top_k:
            raise ApiError(422, f"Invalid request body: top_k: at most {limits.max_top_k} on this server.")

    async def run(job: Job) -> QueryResult:
        job.deadline = time.monotonic() + limits.timeout
        future = _submit(worker, job)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=limits.timeout)
        except asyncio.TimeoutError:
            job.cancelled.set()
            raise _api_error(TimedOut(f"No answer within the server's timeout of {limits.timeout:g} s.")) from None
        except Exception as exc:
            raise _api_error(exc) from None

    @app.post("/query")
    async def query(request: Request) -> JSONResponse:
        """Answer one question; the body of the answer is `ragcli query --json`'s."""
        body: QueryRequest = await _parse(request, QueryRequest)
        check_top_k(body.top_k)
        result = await run(Job(question=body.query, context=body.query_context or body.compare,
                               bare=body.compare or not body.query_context, top_k=body.top_k, mode=body.mode))
        return JSONResponse(result.to_json())

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        """OpenAI-compatible chat completion over retrieval (on by default)."""
        body: ChatRequest = await _parse(request, ChatRequest)
        if body.model is not None and body.model != served_model:
            raise ApiError(404, f"The model {body.model[:100]!r} is not served here; GET /v1/models lists the one "
                                "that is.",
                           code="model_not_found")
        last = body.messages[-1]
        if last.role != "user" or not last.text().strip():
            raise ApiError(422, "Invalid request body: messages: the last message must be the user's question.")
        opts = body.ragcli
        retrieval = opts.retrieval if opts else True
        check_top_k(opts.top_k if opts else None)
        max_new = body.max_completion_tokens or body.max_tokens
        if max_new is not None and max_new > settings.max_new_tokens:
            raise ApiError(422, f"Invalid request body: max_tokens: at most {settings.max_new_tokens} on this server "
                                "(its --max-new-tokens).")
        limit = max_new or settings.max_new_tokens
        job = Job(question=last.text(), context=retrieval, bare=not retrieval, top_k=opts.top_k if opts else None,
                  mode=opts.mode if opts else None, max_new_tokens=limit)
        reply = _Chat(served_model, body, limit)
        if not body.stream:
            return JSONResponse(reply.completion(await run(job)))
        return await _stream(worker, job, limits, reply)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Models, index generation and target; the queue."""
        return {
            "status": "ok",
            "target": settings.target,
            "embed_model": pipeline.embedder.info() if pipeline.embedder is not None else None,
            "gen_model": pipeline.generator.info(),
            "index": pipeline.describe(),
            "queue": worker.stats(),
            "limits": {"max_body_bytes": limits.max_body_bytes, "max_top_k": limits.max_top_k,
                       "timeout": limits.timeout, "max_new_tokens": settings.max_new_tokens},
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The one generator this server answers with, in the OpenAI list shape."""
        return {"object": "list", "data": [{"id": served_model, "object": "model", "created": started,
                                            "owned_by": "ragcli"}]}

    # Added innermost first: the body limit, then the key (checked before any body is read), then errors.
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)
    if api_key:
        app.add_middleware(_RequireKey, key=api_key)
    app.add_middleware(_Errors)
    return app


def _submit(worker: Worker, job: Job) -> Future[QueryResult]:
    try:
        return worker.submit(job)
    except Busy as exc:
        raise _api_error(exc) from None


# -- chat completions ------------------------------------------------------------------------------
class _Chat:
    """Shapes one answer as an OpenAI chat completion, whole or as chunks."""

    def __init__(self, model: str, body: ChatRequest, max_new_tokens: int) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.body = body
        self.max_new_tokens = max_new_tokens
        self.return_sources = bool(body.ragcli and body.ragcli.return_sources)
        self.ignored = [name for name in ChatRequest.IGNORED if getattr(body, name) is not None]

    @staticmethod
    def answer_of(result: QueryResult) -> Any:
        return result.with_context if result.with_context is not None else result.without_context

    def finish_reason(self, result: QueryResult) -> str:
        a = self.answer_of(result)
        return "length" if a.new_tokens >= self.max_new_tokens else "stop"

    def usage(self, result: QueryResult) -> dict[str, int]:
        a = self.answer_of(result)
        return {"prompt_tokens": a.prompt_tokens, "completion_tokens": a.new_tokens,
                "total_tokens": a.prompt_tokens + a.new_tokens}

    def extension(self, result: QueryResult) -> dict[str, Any]:
        a = self.answer_of(result)
        ext: dict[str, Any] = {
            "retrieval": result.with_context is not None,
            "generation": result.generation,
            "mode": result.mode if result.with_context is not None else None,
            "top_k": result.top_k if result.with_context is not None else None,
            "passages_used": a.passages_used,
            "passages_left_out": a.passages_left_out,
            "truncated": a.truncated,
            "no_context": a.no_context,
            "faithfulness": a.faithfulness,
            "ignored": self.ignored,
        }
        if self.return_sources:
            ext["sources"] = result.to_json()["sources"]
        return ext

    def completion(self, result: QueryResult) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.answer_of(result).text},
                         "finish_reason": self.finish_reason(result), "logprobs": None}],
            "usage": self.usage(result),
            "ragcli": self.extension(result),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        data = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
                **extra}
        return _sse(data)


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _stream(worker: Worker, job: Job, limits: Limits, reply: _Chat) -> Response:
    """Run `job` streaming its pieces as SSE chunks. The response starts once the first piece (or the
    whole answer) is there, so a request that fails before generating gets a plain JSON error."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    job.on_token = lambda which, piece: loop.call_soon_threadsafe(events.put_nowait, ("piece", piece))
    job.deadline = time.monotonic() + limits.timeout
    future = _submit(worker, job)

    def finished(f: Future[QueryResult]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, ("done", f))

    future.add_done_callback(finished)

    async def next_event() -> tuple[str, Any]:
        remaining = job.deadline - time.monotonic()
        try:
            return await asyncio.wait_for(events.get(), timeout=max(remaining, 0.001))
        except asyncio.TimeoutError:
            job.cancelled.set()
            future.cancel()
            return "done", None

    first = await next_event()
    if first[0] == "done":
        try:
            if first[1] is None:
                raise TimedOut(f"No answer within the server's timeout of {limits.timeout:g} s.")
            first[1].result()
        except Exception as exc:
            job.cancelled.set()
            return _error_response(_api_error(exc))

    async def body() -> AsyncIterator[str]:
        sent = ""
        event = first
        try:
            yield reply.chunk({"role": "assistant", "content": ""})
            while event[0] == "piece":
                sent += event[1]
                yield reply.chunk({"content": event[1]})
                event = await next_event()
            try:
                if event[1] is None:
                    raise TimedOut(f"The answer took longer than the server's timeout of {limits.timeout:g} s.")
                result = event[1].result()
            except Exception as exc:
                err = _api_error(exc)
                yield _sse(error_body(err.message, err.kind, err.code))
                yield "data: [DONE]\n\n"
                return
            text = reply.answer_of(result).text
            if not sent and text:  # an answer that was not generated (no passage found)
                yield reply.chunk({"content": text})
            yield reply.chunk({}, reply.finish_reason(result), ragcli=reply.extension(result))
            if reply.body.stream_options and reply.body.stream_options.include_usage:
                yield _sse({"id": reply.id, "object": "chat.completion.chunk", "created": reply.created,
                            "model": reply.model, "choices": [], "usage": reply.usage(result)})
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # the client went away, or we are done: stop any generation left

    return StreamingResponse(body(), media_type="text/event-stream", headers=_SSE_HEADERS)
