"""The generation engine: one worker thread owns the model; requests wait in a bounded queue.

The event loop never calls the model. Handlers submit sequences (one per choice) to the
``Engine``; its worker thread takes the oldest waiting sequence plus the waiting ones that share its
sampling settings (up to ``max_batch_size``), runs them as one left-padded ``generate`` batch, and
hands every new token back to the event loop through ``loop.call_soon_threadsafe``. Each sequence
stops on its own (end-of-sequence token, its own ``max_tokens``, a stop string found by the
handler, or a client that went away) through a per-row stopping criterion, so rows of one batch
finish independently. A failing batch fails only its own requests; the worker goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import APIError
from .protocol import Sampling

log = logging.getLogger("modeldeploy_serve")

# events a sequence's stream carries
TOKEN = "token"
END = "end"
ERROR = "error"


class TokenStream:
    """Worker thread -> event loop channel of one sequence."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        # set from the event loop (stop string found, client gone); read by the worker
        self.cancelled = False
        self.finished = False

    def cancel(self) -> None:
        self.cancelled = True

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        while True:
            kind, value = await self.queue.get()
            yield kind, value
            if kind in (END, ERROR):
                return


@dataclass(eq=False)
class Sequence:
    """One choice of one request, as the worker sees it."""

    payload: Any  # backend-specific prepared input (token ids, or a VL2 processor output)
    prompt_len: int
    max_new_tokens: int
    sampling: Sampling
    stream: TokenStream
    submitted: float = field(default_factory=time.monotonic)


class BatchControl:
    """Per-row bookkeeping of a running batch; ``on_step`` is called once per decoding step."""

    def __init__(self, seqs: list[Sequence], eos_token_ids: Iterable[int],
                 deliver: Callable[[list[tuple[Sequence, str, Any]]], None]) -> None:
        self.seqs = seqs
        self.eos = frozenset(eos_token_ids)
        self.deliver = deliver
        self.done = [False] * len(seqs)
        self.generated = [0] * len(seqs)
        self.steps = 0

    def on_step(self, last_tokens: list[int]) -> list[bool]:
        self.steps += 1
        events: list[tuple[Sequence, str, Any]] = []
        for row, token in enumerate(last_tokens):
            if self.done[row]:
                continue
            seq = self.seqs[row]
            if seq.stream.cancelled or (token in self.eos and not seq.sampling.ignore_eos):
                self.done[row] = True
                events.append((seq, END, "stop"))
            else:
                self.generated[row] += 1
                events.append((seq, TOKEN, token))
                if self.generated[row] >= seq.max_new_tokens:
                    self.done[row] = True
                    events.append((seq, END, "length"))
        if events:
            self.deliver(events)
        return list(self.done)

    def catch_up(self, new_tokens: list[list[int]]) -> None:
        """Replay the steps ``on_step`` did not see, from ``generate``'s output (row-wise new
        tokens). Older transformers skip the last step's criteria once the length limit hits."""
        for step in range(self.steps, min((len(r) for r in new_tokens), default=0)):
            if self.all_done():
                break
            self.on_step([row[step] for row in new_tokens])

    def all_done(self) -> bool:
        return all(self.done)

    def finish_rest(self, reason: str = "length") -> None:
        events = [(s, END, reason) for s, d in zip(self.seqs, self.done, strict=True) if not d]
        self.done = [True] * len(self.seqs)
        if events:
            self.deliver(events)

    def fail_rest(self, exc: BaseException) -> None:
        events = [(s, ERROR, exc) for s, d in zip(self.seqs, self.done, strict=True) if not d]
        self.done = [True] * len(self.seqs)
        if events:
            self.deliver(events)


class Backend(Protocol):
    """What the engine needs from a loaded model."""

    max_batch_size: int
    eos_token_ids: frozenset[int]

    def generate(self, batch: list[Sequence], control: BatchControl) -> None:
        """Run ``batch``; call ``control.on_step`` with each row's newest token every step."""
        ...


class EngineMetrics(Protocol):
    def set_queue_depth(self, n: int) -> None: ...
    def set_running(self, n: int) -> None: ...
    def observe_batch(self, size: int) -> None: ...


class Engine:
    def __init__(self, backend: Backend, *, max_batch_size: int, max_queue_size: int,
                 batch_wait_s: float, metrics: EngineMetrics | None = None) -> None:
        self.backend = backend
        self.max_batch_size = max(1, min(max_batch_size, backend.max_batch_size))
        self.max_queue_size = max_queue_size
        self.batch_wait_s = batch_wait_s
        self.metrics = metrics
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.fatal_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="generation-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            for seq in self._waiting:
                seq.stream.cancel()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.fatal_error is None

    # -- event loop side ---------------------------------------------------------------------
    def submit(self, seqs: list[Sequence]) -> None:
        """Queue the sequences of one request (all or none); 503 when the queue is full."""
        with self._cond:
            if self._closed or not self.alive:
                raise APIError(503, "The generation engine is not running.", code="engine_down")
            if len(self._waiting) + len(seqs) > self.max_queue_size:
                raise APIError(503, "The server is overloaded (request queue full); retry later.",
                               code="queue_full")
            self._waiting.extend(seqs)
            depth = len(self._waiting)
            self._cond.notify_all()
        if self.metrics is not None:
            self.metrics.set_queue_depth(depth)

    def queue_depth(self) -> int:
        with self._cond:
            return len(self._waiting)

    # -- worker side -------------------------------------------------------------------------
    @staticmethod
    def _deliver(events: list[tuple[Sequence, str, Any]]) -> None:
        """Runs on the event loop: hand each event to its sequence's queue."""
        for seq, kind, value in events:
            if seq.stream.finished:
                continue
            if kind in (END, ERROR):
                seq.stream.finished = True
            seq.stream.queue.put_nowait((kind, value))

    def _send(self, events: list[tuple[Sequence, str, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Sequence, str, Any]]] = {}
        for ev in events:
            by_loop.setdefault(ev[0].stream.loop, []).append(ev)
        for loop, evs in by_loop.items():
            # a closed loop means the server is shutting down
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._deliver, evs)

    def _compatible(self, a: Sequence, b: Sequence) -> bool:
        return a.sampling == b.sampling

    def _next_batch(self) -> list[Sequence] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            head = self._waiting[0]
            if self.batch_wait_s > 0 and self.max_batch_size > 1:
                deadline = time.monotonic() + self.batch_wait_s
                while not self._closed:
                    n = sum(1 for s in self._waiting if self._compatible(head, s))
                    remaining = deadline - time.monotonic()
                    if n >= self.max_batch_size or remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch: list[Sequence] = []
            dropped: list[Sequence] = []
            keep: collections.deque[Sequence] = collections.deque()
            for seq in self._waiting:
                if seq.stream.cancelled:
                    dropped.append(seq)
                elif len(batch) < self.max_batch_size and self._compatible(head, seq):
                    batch.append(seq)
                else:
                    keep.append(seq)
            self._waiting = keep
            depth = len(keep)
        if dropped:
            self._send([(s, END, "stop") for s in dropped])
        if self.metrics is not None:
            self.metrics.set_queue_depth(depth)
        return batch

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if not batch:
                    continue
                control = BatchControl(batch, self.backend.eos_token_ids, self._send)
                if self.metrics is not None:
                    self.metrics.set_running(len(batch))
                    self.metrics.observe_batch(len(batch))
                try:
                    self.backend.generate(batch, control)
                except Exception as exc:
                    log.exception("generation failed for a batch of %d", len(batch))
                    control.fail_rest(exc)
                    _release_accelerator_memory()
                else:
                    control.finish_rest("length")
                finally:
                    if self.metrics is not None:
                        self.metrics.set_running(0)
        except BaseException as exc:  # pragma: no cover - a bug in the worker itself
            self.fatal_error = exc
            log.exception("the generation worker stopped")
            raise


def _release_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        pass
