"""Structured concurrency and cancellation of the client API, on both backends: what a
call in another task sees when the client closes (also during a recovery), and
``events()`` left early."""

from __future__ import annotations

import gc
import warnings
from contextlib import aclosing
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

import exec_runtime
from exec_runtime import (
    ClientClosedError,
    Closed,
    ExecClient,
    ExecRuntimeError,
    Failed,
    Output,
    ServerConfig,
)
from exec_runtime._client.client import RUN_KILL_WAIT, ClientState
from exec_runtime.testing import FaultPlan, open_faulty_local
from tests.support.children import writer_script
from tests.support.daemon_process import eventually, process_gone
from tests.support.daemon_state import track_daemon
from tests.support.wire_client import GatedStream, cancel_half_sent


def pid_argv(pid_file: Path, then: str) -> list[str]:
    """A shell that publishes its pid (atomically) and then runs ``then``."""
    return ["sh", "-c", f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; {then}"]


async def read_pid(pid_file: Path) -> int:
    await eventually(pid_file.exists)
    return int(await trio.Path(pid_file).read_text())


# --- leaving the client while other tasks use it ------------------------------------------


async def test_closing_the_client_ends_consumers_waiters_and_runs_in_other_tasks(
    client: ExecClient, tmp_path: Path
) -> None:
    """A task blocked in ``events()``, ``wait()`` or ``run()`` when the client closes
    must not hang: the consumer gets a terminal Failed, ``wait()`` and ``run()`` raise
    ClientClosedError, and the process ``run()`` owned is killed, as a cancelled run's
    is (it would otherwise outlive the client on the daemon until the session's TTL)."""
    outcomes: dict[str, object] = {}

    async def consume(proc: object) -> None:
        outcomes["events"] = [event async for event in proc.events()]  # type: ignore[attr-defined]

    async def wait(proc: object) -> None:
        try:
            await proc.wait()  # type: ignore[attr-defined]
        except ClientClosedError as exc:
            outcomes["wait"] = exc

    async def run(argv: list[str]) -> None:
        try:
            await client.run(argv)
        except ClientClosedError as exc:
            outcomes["run"] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            consumed = await client.start(["sh", "-c", "echo one; exec sleep 30"])
            waited = await client.start(["sleep", "30"])
            nursery.start_soon(consume, consumed)
            nursery.start_soon(wait, waited)
            nursery.start_soon(run, pid_argv(tmp_path / "run", "exec sleep 30"))
            pid = await read_pid(tmp_path / "run")
            await eventually(lambda: len(client._streams) == 3)
            await client.aclose()
        events = outcomes["events"]
        assert isinstance(events, list) and isinstance(events[-1], Failed)
        assert "closed" in events[-1].message
        assert isinstance(outcomes["wait"], ClientClosedError)
        assert isinstance(outcomes["run"], ClientClosedError)
        await eventually(lambda: process_gone(pid))
        with pytest.raises(ClientClosedError):
            await client.run(["true"])


@pytest.mark.parametrize("server_config", [ServerConfig(_start_delay=0.3)])
async def test_closing_the_client_with_a_start_in_flight(
    client: ExecClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start still waiting for its reply when the client closes fails with
    ClientClosedError (not TransportError: nothing dropped), and the process it asked
    for does not live on: nobody is left who knows its id."""
    daemon = track_daemon(monkeypatch)
    pid_file = tmp_path / "pid"
    outcome: list[ExecRuntimeError] = []

    async def start() -> None:
        try:
            await client.start(pid_argv(pid_file, "exec sleep 30"))
        except ExecRuntimeError as exc:
            outcome.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start)
            await eventually(lambda: client.statistics().calls.get("process/start") == 1)
            await eventually(lambda: client._link is not None and client._link.pending)
            await client.aclose()
        assert len(outcome) == 1 and isinstance(outcome[0], ClientClosedError), outcome
        await eventually(daemon.all_ended)  # the daemon is done with the start
        assert not await trio.Path(pid_file).exists()


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


# --- closing or failing during a recovery ---------------------------------------------------


def supervising(client: ExecClient) -> bool:
    return any("_supervise" in task.name for task in client._nursery.child_tasks)


def live_links(client: ExecClient) -> int:
    return sum("_run_link" in task.name for task in client._nursery.child_tasks)


async def test_closing_the_client_during_a_recovery_stops_it() -> None:
    """``aclose()`` while the client is reconnecting: the recovery stops, rather than
    resuming the session on a closed client and holding that connection (and the
    session attached) until the client's context ends."""
    with trio.fail_after(10):
        async with open_faulty_local() as (client, faults):
            await client.start(["sleep", "30"])
            faults.partition()
            await eventually(lambda: client.state is ClientState.RECOVERING)
            await client.aclose()
            faults.heal()
            await eventually(lambda: not supervising(client))
            assert live_links(client) == 0
            assert client.statistics().recoveries == 0
            assert client.state is ClientState.CLOSED


async def test_a_recovery_that_runs_out_of_time_in_its_catch_up_leaves_no_link() -> None:
    """The recovery deadline passing while the new connection catches processes up
    fails the client, and that connection must go with it (no link on a failed client)."""
    # The recovery's one read is never answered: its answer waits for a second one.
    plan = FaultPlan(gather_responses=("process/read", 2))
    with trio.fail_after(10):
        async with open_faulty_local(plan, recovery_deadline=0.5) as (client, faults):
            proc = await client.start(["sleep", "30"])
            faults.drop()
            await eventually(lambda: client.state is ClientState.FAILED)
            events = [event async for event in proc.events()]
            assert isinstance(events[-1], Failed)
            await eventually(lambda: live_links(client) == 0)
            assert faults.current is not None and faults.connections == 2


# --- a cancel in the middle of a big request ------------------------------------------------


async def test_cancelling_a_big_write_mid_frame_keeps_the_connection(
    nursery: trio.Nursery,
) -> None:
    """A cancel that lands while a big ``process/write`` frame is half on the wire must
    not cut the connection (the rest of the frame would be garbage to the daemon): that
    reconnect failed every other task's mutating call in flight with TransportError and
    closed the connection's fs handles. The cancelled call returns at once; its frame
    is finished behind it, so the daemon gets the write whole."""
    size = 8 * 1024 * 1024
    url = await nursery.start(exec_runtime.serve, ServerConfig())
    with trio.fail_after(20):
        async with exec_runtime.open_client(url) as client:
            proc = await client.start(["cat"], pipe_stdin=True)
            other = await client.start(["sleep", "30"])
            assert client._link is not None
            ws = client._link.transport.ws  # type: ignore[attr-defined]
            gate = GatedStream(ws._stream, threshold=size)
            ws._stream = gate
            signalled: list[object] = []
            echoed = bytearray()

            async def consume() -> None:
                async for event in proc.events():
                    if isinstance(event, Output):
                        echoed.extend(event.data)

            async def signal_meanwhile() -> None:
                await gate.half_sent.wait()
                try:
                    await other.signal("hangup")  # waits behind the big frame
                    signalled.append("ok")
                except ExecRuntimeError as exc:
                    signalled.append(exc)

            async with trio.open_nursery() as tasks:
                tasks.start_soon(consume)
                tasks.start_soon(signal_meanwhile)
                await cancel_half_sent(gate, partial(proc.write, b"x" * size))
                await trio.testing.wait_all_tasks_blocked()
                gate.release.set()
                await proc.close_stdin()
            assert signalled == ["ok"]
            assert await other.wait() == 128 + 1
            assert echoed == b"x" * size  # the cancelled write arrived whole
            assert client.statistics().reconnects == 0


async def test_a_cancelled_run_returns_soon_while_the_daemon_is_silent(tmp_path: Path) -> None:
    """The kill that follows a cancelled run() waits at most RUN_KILL_WAIT for its
    answer: with a stalled link the cancel still takes effect within about a second
    (it took 5 s), and the kill, which reached the daemon, still happens."""
    pid_file = tmp_path / "pid"
    async with open_faulty_local() as (client, faults):
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                script = f"echo $$ > {pid_file}.t; mv {pid_file}.t {pid_file}; exec sleep 30"

                async def run() -> None:
                    with scope:
                        await client.run(["sh", "-c", script])

                nursery.start_soon(run)
                await eventually(pid_file.exists)
                pid = int(pid_file.read_text())
                faults.stall()  # nothing reaches the client from here on
                cancelled_at = trio.current_time()
                scope.cancel()
            took = trio.current_time() - cancelled_at
            assert RUN_KILL_WAIT <= took < 2.5, took  # was 5 s
            await eventually(lambda: process_gone(pid))
            faults.resume()
            assert (await client.run(["true"])).returncode == 0
