"""Answers for the server, one at a time, with a bounded queue and a deadline per request.

The generator and the embedder are used by one thread: their tokenizers are not safe to share
between threads, and on a CPU (or one accelerator) parallel generations only slow each other down.
So `Worker` runs each request's whole answer (reload check, retrieval, prompt, generation) on a single
thread, lets at most `queue` more wait, and refuses the rest with `Busy` (HTTP 503, Retry-After). A
request past its deadline (or whose client has gone) is dropped from the queue, or its generation stops
at the next token.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ragcli.errors import RagcliError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.query import QueryResult
    from ragcli.serve.pipeline import Pipeline


@dataclass(frozen=True)
class Limits:
    """The server's bounds. `queue` counts requests waiting behind the one being answered."""

    max_body_bytes: int = 64 * 1024
    max_top_k: int = 20
    queue: int = 16
    timeout: float = 120.0  # seconds per request, time in the queue included


class Busy(RagcliError):
    """The queue is full; `retry_after` is a guess, in seconds, of when there will be room."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"The server is busy: the queue is full. Retry in {retry_after} s.")


class TimedOut(RagcliError):
    """The request ran past the server's per-request timeout."""


class BadQuestion(RagcliError):
    """The question cannot be answered as asked (empty, longer than the generator reads)."""


class _Cancelled(Exception):
    """Raised inside the worker thread for a request that has gone or is past its deadline."""


@dataclass
class Job:
    """One request's answer: what `ragcli.query.answer` is asked, and its deadline."""

    question: str
    context: bool
    bare: bool
    top_k: int | None = None
    mode: str | None = None
    max_new_tokens: int | None = None
    deadline: float = math.inf  # time.monotonic() value
    on_token: Callable[[str, str], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def stopped(self) -> bool:
        """The request has gone or is past its deadline."""
        return self.cancelled.is_set() or time.monotonic() > self.deadline

    def check(self) -> None:
        if self.stopped():
            raise _Cancelled


class Worker:
    """One thread answering jobs in order, with at most `limits.queue` waiting."""

    def __init__(self, pipeline: Pipeline, limits: Limits) -> None:
        self.pipeline = pipeline
        self.limits = limits
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragcli-answer")
        self._lock = threading.Lock()
        self._pending = 0  # running + waiting
        self._mean_seconds = 1.0  # moving average of one answer's time, for Retry-After

    def stats(self) -> dict[str, int]:
        pending = self._pending
        return {"running": min(pending, 1), "waiting": max(pending - 1, 0), "queue_limit": self.limits.queue}

    def submit(self, job: Job) -> Future[QueryResult]:
        """Queue `job`; raises Busy when the queue is full."""
        with self._lock:
            if self._pending > self.limits.queue:
                raise Busy(max(1, min(60, math.ceil(self._mean_seconds * self._pending))))
            self._pending += 1
        try:
            future = self._executor.submit(self._run, job)
        except RuntimeError:  # shut down
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: object) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job) -> QueryResult:
        try:
            return self._answer(job)
        except _Cancelled:
            raise TimedOut(f"The answer took longer than the server's timeout of {self.limits.timeout:g} s; "
                           "it was stopped.") from None

    def _answer(self, job: Job) -> QueryResult:
        from ragcli.query import answer, check_question

        job.check()
        started = time.monotonic()
        pipeline = self.pipeline
        try:
            check_question(job.question, pipeline.generator)
        except RagcliError as exc:
            raise BadQuestion(str(exc)) from None
        settings = pipeline.settings.replace(top_k=job.top_k, mode=job.mode, max_new_tokens=job.max_new_tokens)
        retriever = pipeline.retriever() if job.context else None
        job.check()
        result = answer(job.question, settings, context=job.context, bare=job.bare, retriever=retriever,
                        generator=pipeline.generator, on_token=job.on_token, stop=job.stopped)
        job.check()  # an answer cut short by the deadline is not an answer
        self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - started)
        return result
