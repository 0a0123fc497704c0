"""Structured concurrency and cancellation of the client API, on both backends:
``events()`` left early."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
import trio
import trio.testing
from daemon_process import eventually
from test_client import BACKENDS, open_backend, writer_script

from exec_runtime import (
    Closed,
    ExecClient,
    Output,
    ServerConfig,
)


@pytest.fixture(params=BACKENDS)
async def client(
    request: pytest.FixtureRequest, nursery: trio.Nursery, server_config: ServerConfig
) -> AsyncIterator[ExecClient]:
    async with open_backend(request.param, nursery, server_config) as c:
        yield c


# --- events() left early ------------------------------------------------------------------


def async_generator_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "garbage collected" in str(w.message)]


async def test_leaving_events_early_warns_nothing_and_releases_backpressure(
    client: ExecClient,
) -> None:
    """``break`` out of ``async for event in proc.events()``, or an exception in the
    loop's body, is normal use: it must not leave an abandoned async generator for
    Trio to finalize (a ResourceWarning), and a consumer that lagged releases what it
    held back, so the process runs to its end."""
    with trio.fail_after(30), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        size = 20 * 1024 * 1024
        proc = await client.start(writer_script(size))
        async for _ in proc.events():
            await eventually(lambda: proc._stream.lagging)
            break
        assert await proc.wait() == 0
        proc = await client.start(["sh", "-c", "echo a; echo b"])
        with pytest.raises(KeyError):
            async for _ in proc.events():
                raise KeyError("in the body")
        assert await proc.wait() == 0
        gc.collect()
        await trio.testing.wait_all_tasks_blocked()
    assert async_generator_warnings(caught) == []


async def test_events_can_be_closed_explicitly(client: ExecClient) -> None:
    """A consumer that keeps the iterator after leaving the loop releases backpressure
    with ``aclose()`` (or ``contextlib.aclosing``), and iterating it after that ends."""
    with trio.fail_after(30):
        size = 20 * 1024 * 1024
        proc = await client.start(writer_script(size))
        events = proc.events()
        async with aclosing(events):
            async for event in events:
                assert isinstance(event, Output)
                await eventually(lambda: proc._stream.lagging)
                break
        assert [event async for event in events] == []
        assert await proc.wait() == 0
        with pytest.raises(RuntimeError, match="already consumed"):
            await proc.events().__anext__()


async def test_a_second_concurrent_iteration_of_one_events_iterator_is_refused(
    client: ExecClient,
) -> None:
    with trio.fail_after(10):
        proc = await client.start(["sh", "-c", "sleep 0.2; echo a"])
        events = proc.events()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.__anext__)
            await eventually(lambda: proc._stream.consumer_active)
            with pytest.raises(trio.BusyResourceError):
                await events.__anext__()
        rest = [event async for event in events]
        assert isinstance(rest[-1], Closed)
        assert await proc.wait() == 0
