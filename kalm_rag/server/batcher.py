"""Micro-batching: concurrent requests share model calls.

Requests put their texts on a bounded queue and await a future. One background task takes
the first waiting request, gathers more for up to ``max_wait_ms`` or until ``max_batch_texts``
texts, runs ONE model call for all of them in a worker thread, and hands each request its
rows. A full queue answers at once (the server replies 503) instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
#: texts -> (embeddings (n, dim), token count per text)
EncodeFn = Callable[[list[str]], tuple[FloatArray, list[int]]]
T = TypeVar("T")


class QueueFullError(Exception):
    """More requests are waiting than the configured bound."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[tuple[FloatArray, list[int]]]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Owns the model thread: every model call (embedding batches, searches) runs on it, one
    at a time, so concurrent requests never compete for the same cores."""

    def __init__(self, encode: EncodeFn, *, max_batch_texts: int, max_wait_ms: float, max_queue: int) -> None:
        self._encode = encode
        self._max_batch = max_batch_texts
        self._max_wait = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kalm-model")
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # model calls made, for /health and tests
        self.texts = 0

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="kalm-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def encode(self, texts: list[str]) -> tuple[FloatArray, list[int]]:
        """Embeddings and token counts for ``texts``, computed in a shared batch."""
        future: asyncio.Future[tuple[FloatArray, list[int]]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(texts, future))
        except asyncio.QueueFull:
            raise QueueFullError(f"{self._queue.maxsize} requests are already waiting") from None
        return await future

    async def run_on_model_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run other model work (a search) on the model thread, in turn with the batches."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            jobs = [job for job in jobs if not job.future.done()]  # callers that gave up
            if not jobs:
                continue
            try:
                await self._serve(loop, jobs)
            except Exception as exc:  # keep the worker alive whatever happens to one batch
                for job in jobs:
                    _settle(job, exc)

    async def _gather(self) -> list[_Job]:
        first = await self._queue.get()
        jobs, count = [first], len(first.texts)
        deadline = time.perf_counter() + self._max_wait
        while count < self._max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            jobs.append(job)
            count += len(job.texts)
        return jobs

    async def _serve(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        try:
            vectors, tokens = await loop.run_in_executor(self._executor, self._encode, texts)
        except Exception as exc:
            if len(jobs) == 1:
                _settle(jobs[0], exc)
                return
            # One bad request must not fail its batch-mates: retry each request on its own.
            for job in jobs:
                try:
                    _settle(job, await loop.run_in_executor(self._executor, self._encode, job.texts))
                except Exception as single_exc:
                    _settle(job, single_exc)
            return
        self.batches += 1
        self.texts += len(texts)
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            _settle(job, (vectors[start:end], tokens[start:end]))
            start = end


def _settle(job: _Job, outcome: tuple[FloatArray, list[int]] | BaseException) -> None:
    if job.future.done():
        return
    if isinstance(outcome, BaseException):
        job.future.set_exception(outcome)
    else:
        job.future.set_result(outcome)
