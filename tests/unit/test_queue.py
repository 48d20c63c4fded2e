"""The work queue: once in the queue, never twice at a time, new before re-checks, backoff."""

from __future__ import annotations

import asyncio
import itertools

from modeldeploy.runtime.queue import Priority, WorkQueue

Key = tuple[str, str]


def test_priorities_and_deduplication() -> None:
    order: list[Key] = []

    async def handler(key: Key) -> bool:
        order.append(key)
        return True

    async def scenario() -> None:
        queue = WorkQueue(handler, workers=1)
        queue.add(("ns", "resync"), Priority.RESYNC)
        queue.add(("ns", "event"), Priority.EVENT)
        queue.add(("ns", "event"), Priority.EVENT)
        queue.add(("ns", "new"), Priority.NEW)
        queue.add(("ns", "resync"), Priority.NEW)  # raised: it is new now
        assert len(queue) == 3
        runner = asyncio.create_task(queue.run())
        while queue.done < 3:
            await asyncio.sleep(0.01)
        runner.cancel()

    asyncio.run(scenario())
    assert order == [("ns", "new"), ("ns", "resync"), ("ns", "event")]


def test_a_key_added_while_running_runs_once_more_after() -> None:
    running: set[Key] = set()
    overlaps: list[Key] = []
    calls: list[Key] = []

    async def handler(key: Key) -> bool:
        if key in running:
            overlaps.append(key)
        running.add(key)
        calls.append(key)
        await asyncio.sleep(0.05)
        running.discard(key)
        return True

    async def scenario() -> None:
        queue = WorkQueue(handler, workers=4)
        runner = asyncio.create_task(queue.run())
        queue.add(("ns", "a"))
        await asyncio.sleep(0.01)
        for _ in range(5):
            queue.add(("ns", "a"))
        while queue.done < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        runner.cancel()

    asyncio.run(scenario())
    assert overlaps == []
    assert calls == [("ns", "a"), ("ns", "a")]


def test_failures_back_off_and_a_success_resets() -> None:
    times: list[float] = []
    outcomes = iter([False, False, True])

    async def handler(key: Key) -> bool:
        times.append(asyncio.get_running_loop().time())
        return next(outcomes)

    async def scenario() -> WorkQueue:
        queue = WorkQueue(handler, workers=1, base_backoff=0.05, max_backoff=1.0)
        runner = asyncio.create_task(queue.run())
        queue.add(("ns", "flaky"))
        while queue.done < 3:
            await asyncio.sleep(0.01)
        runner.cancel()
        return queue

    queue = asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # 1x, then 2x the base
    assert queue.backoff_of(("ns", "flaky")) == 0


def test_an_exception_in_the_handler_is_a_failure_not_a_dead_worker() -> None:
    calls: list[int] = []

    async def handler(key: Key) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return True

    async def scenario() -> None:
        queue = WorkQueue(handler, workers=1, base_backoff=0.01)
        runner = asyncio.create_task(queue.run())
        queue.add(("ns", "x"))
        while queue.done < 2:
            await asyncio.sleep(0.01)
        assert not runner.done()
        runner.cancel()

    asyncio.run(scenario())
    assert len(calls) == 2


def test_stalled_only_with_work_waiting() -> None:
    async def never(key: Key) -> bool:
        await asyncio.sleep(3600)
        return True

    async def scenario() -> None:
        queue = WorkQueue(never, workers=1)
        assert not queue.stalled(0)
        runner = asyncio.create_task(queue.run())
        queue.add(("ns", "stuck"))
        await asyncio.sleep(0.05)
        assert queue.stalled(0.01)
        assert not queue.stalled(60)
        runner.cancel()

    asyncio.run(scenario())
