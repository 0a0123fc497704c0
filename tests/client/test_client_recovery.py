"""Reconnect and recovery (PROTOCOL §9) through a proxy that breaks the connection."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import exec_runtime
from exec_runtime import (
    ClientClosedError,
    ClientState,
    Closed,
    Event,
    ExecClient,
    Exited,
    Failed,
    Output,
    ProcessFailed,
    ProcessHandle,
    ServerConfig,
    TransportError,
)
from exec_runtime._client.client import DETACHED_SEND_BYTES, RECOVERY_READS
from exec_runtime.testing import FaultPlan, check_pattern, open_faulty_local, scripted_argv
from tests.support.daemon_process import process_gone
from tests.support.daemon_state import track_daemon
from tests.support.recovery import proxied_client, until
from tests.support.wire_client import GatedStream, cancel_half_sent

PY = sys.executable
DISCONNECTED = "exec-server transport disconnected"




class Collector:
    """Consumes a process's events in the background; tests wait on its progress."""

    def __init__(self, proc: ProcessHandle) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self.done = trio.Event()
        self._changed = trio.Event()

    async def run(self) -> None:
        async for event in self.proc.events():
            self.events.append(event)
            self._changed.set()
            self._changed = trio.Event()
        self.done.set()
        self._changed.set()

    def output(self, stream: str = "stdout") -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, Output) and e.stream == stream)

    async def wait_for(self, predicate: Callable[[Collector], bool]) -> None:
        while not predicate(self):
            if self.done.is_set():
                raise AssertionError(f"finished without reaching the condition: {self.events}")
            await self._changed.wait()

    async def wait_output(self, data: bytes) -> None:
        await self.wait_for(lambda c: data in c.output())


def collect_in(nursery: trio.Nursery, proc: ProcessHandle) -> Collector:
    collector = Collector(proc)
    nursery.start_soon(collector.run)
    return collector


def assert_complete(events: list[Event]) -> Exited:
    assert not any(isinstance(e, Failed) for e in events), events[-1]
    assert [e.seq for e in events if not isinstance(e, Failed)] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], Closed)
    exits = [e for e in events if isinstance(e, Exited)]
    assert len(exits) == 1
    return exits[0]




async def pid_gone(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await trio.sleep(0.01)


LINES = 400
LINE_WRITER = [
    PY,
    "-c",
    "import sys, time\n"
    f"for i in range({LINES}):\n"
    "    sys.stdout.write(f'line {i:05d} ' + 'x' * (i % 50) + '\\n')\n"
    "    sys.stdout.flush()\n"
    "    time.sleep(0.002)\n",
]
EXPECTED_LINES = b"".join(f"line {i:05d} {'x' * (i % 50)}\n".encode() for i in range(LINES))


@pytest.mark.parametrize("cut", ["between frames", "inside a frame"])
async def test_drop_mid_stream_recovers_byte_exact(nursery: trio.Nursery, cut: str) -> None:
    with trio.fail_after(10):
        async with proxied_client(nursery, ServerConfig()) as (client, proxy):
            session_id = client.session_id
            async with trio.open_nursery() as tasks:
                proc = await client.start(LINE_WRITER)
                collector = collect_in(tasks, proc)
                await collector.wait_output(b"line 00100 ")
                if cut == "between frames":
                    assert await proxy.drop() == 1
                else:
                    assert await proxy.drop(after_bytes=7) == 1  # mid-header or mid-payload
            assert client.session_id == session_id
            assert collector.output() == EXPECTED_LINES
            assert assert_complete(collector.events).exit_code == 0
            stats = client.statistics()
            assert (stats.reconnects, stats.recoveries, stats.failed_processes) == (1, 1, 0)
            assert stats.state == "connected"
            assert stats.calls["process/start"] == 1
            assert proxy.connections == 2
            assert (await client.run(["echo", "after"])).stdout == b"after\n"


async def test_write_after_recovery_is_accepted_once(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        async with proxied_client(nursery, ServerConfig()) as (client, proxy):
            async with trio.open_nursery() as tasks:
                proc = await client.start(["cat"], pipe_stdin=True)
                collector = collect_in(tasks, proc)
                await proc.write(b"before\n")
                await collector.wait_output(b"before\n")
                await proxy.drop()
                await until(lambda: client.statistics().recoveries == 1)
                assert client.state is ClientState.CONNECTED
                await proc.write(b"after\n")
                await collector.wait_output(b"after\n")
                await proc.close_stdin()
            assert collector.output() == b"before\nafter\n"
            assert assert_complete(collector.events).exit_code == 0


async def test_a_write_cancelled_mid_frame_costs_a_reconnect_not_the_session(
    nursery: trio.Nursery,
) -> None:
    """Cancelling a (small) ``write`` while its frame is half on the wire cuts the
    frame short; the client drops that connection (it cannot be used past half a
    frame) and resumes, and the process goes on. (A big one is finished behind the
    cancel instead: test_client_cancellation.py.)"""
    size = DETACHED_SEND_BYTES // 2
    with trio.fail_after(20):
        daemon_url = await nursery.start(exec_runtime.serve, ServerConfig())
        async with exec_runtime.open_client(daemon_url) as client:
            proc = await client.start(["sh", "-c", "sleep 30"], pipe_stdin=True)
            assert client._link is not None
            ws = client._link.transport.ws  # type: ignore[attr-defined]
            gate = GatedStream(ws._stream, threshold=size)
            ws._stream = gate
            await cancel_half_sent(gate, partial(proc.write, b"x" * size))
            gate.release.set()
            info = await client.environment_info()  # waits for the recovery
            assert info.platform_os
            assert client.statistics().recoveries == 1
            assert client.state is ClientState.CONNECTED
            assert await proc.kill() is True
            events = [event async for event in proc.events()]
            assert assert_complete(events).exit_code == 137


async def test_write_in_flight_during_a_drop_is_resent_and_applied_once(
    nursery: trio.Nursery,
) -> None:
    """The write reaches the daemon, the reply is lost; the client re-sends it with the
    same writeId after recovery and cat echoes it exactly once."""
    with trio.fail_after(10):
        async with proxied_client(nursery, ServerConfig(), msgpack=False) as (client, proxy):
            async with trio.open_nursery() as tasks:
                proc = await client.start(["cat"], pipe_stdin=True)
                collector = collect_in(tasks, proc)
                proxy.arm_drop(after_next_read=True, direction="up")
                await proc.write(b"once\n")
                assert client.statistics().recoveries == 1
                await proc.close_stdin()
            assert collector.output() == b"once\n"
            assert assert_complete(collector.events).exit_code == 0
            # The first connection never carried a write reply; the second carried the
            # reply to the re-sent write and the one to close_stdin.
            assert b'"accepted"' not in proxy.transcripts[0]
            assert proxy.transcripts[1].count(b'"status":"accepted"') == 2


async def test_mutating_call_in_flight_fails_with_transport_error(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        async with proxied_client(nursery, ServerConfig(_start_delay=1.0)) as (client, proxy):
            outcome: list[BaseException] = []

            async def starter() -> None:
                try:
                    await client.start(["true"], process_id="in-flight")
                except TransportError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as tasks:
                tasks.start_soon(starter)
                # In flight: sent, unanswered (the daemon holds process/start for 1 s).
                await until(lambda: client._link is not None and bool(client._link.pending))
                await proxy.drop()
            assert len(outcome) == 1
            assert isinstance(outcome[0], TransportError)
            assert str(outcome[0]) == DISCONNECTED
            await until(lambda: client.state is ClientState.CONNECTED)
            # Not replayed: the client did not send process/start again (its outcome is
            # unknown). After recovery it terminates the id, so nothing the start may
            # have spawned runs unowned, and the id is free on the client side.
            await until(lambda: "process/terminate" in client.statistics().calls)
            assert client.statistics().calls == {"process/start": 1, "process/terminate": 1}
            assert (await client.run(["echo", "ok"], cwd="/")).stdout == b"ok\n"
            proc = await client.start(["true"], process_id="in-flight")
            assert await proc.wait() == 0


async def test_calls_during_recovery_wait_then_succeed(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        async with proxied_client(nursery, ServerConfig()) as (client, proxy):
            results: list[bytes] = []

            async def runner() -> None:
                results.append((await client.run(["echo", "waited"])).stdout)

            proxy.refusing = True
            await proxy.drop()
            await until(lambda: client.state is ClientState.RECOVERING)
            async with trio.open_nursery() as tasks:
                tasks.start_soon(runner)
                await until(lambda: proxy.refused >= 3)  # retried every ~100 ms
                assert results == []
                assert client.state is ClientState.RECOVERING
                proxy.refusing = False
            assert results == [b"waited\n"]
            stats = client.statistics()
            assert (stats.reconnects, stats.recoveries, stats.state) == (1, 1, "connected")
            assert stats.calls == {"process/start": 1}


def wait_file(path: Path) -> str:
    return f"while not os.path.exists({str(path)!r}): time.sleep(0.01)"


async def test_expired_retention_fails_only_that_process(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    go, a_done, b_done, b_finish = (tmp_path / n for n in ("go", "a", "b", "finish"))
    writer_a = "\n".join(
        [
            "import os, sys, time",
            "print(os.getpid(), flush=True)",
            wait_file(go),
            "for i in range(64):",
            "    sys.stdout.write(f'{i:04d}' * 256)",  # 1 KiB each, 64 KiB in all
            "    sys.stdout.flush()",
            f"open({str(a_done)!r}, 'w').close()",
            "time.sleep(30)",
        ]
    )
    writer_b = "\n".join(
        [
            "import os, sys, time",
            "print('b-start', flush=True)",
            wait_file(go),
            "print('b-mid', flush=True)",
            f"open({str(b_done)!r}, 'w').close()",
            wait_file(b_finish),
            "print('b-end', flush=True)",
        ]
    )
    with trio.fail_after(10):
        config = ServerConfig(retain_bytes=4096)
        # Without acknowledgements (as a Codex-protocol client): the daemon keeps A
        # running and evicts; with them, see the test below.
        async with proxied_client(nursery, config, ack_output=False) as (client, proxy):
            async with trio.open_nursery() as tasks:
                proc_a = await client.start([PY, "-c", writer_a])
                proc_b = await client.start([PY, "-c", writer_b])
                a = collect_in(tasks, proc_a)
                b = collect_in(tasks, proc_b)
                await a.wait_output(b"\n")
                await b.wait_output(b"b-start\n")
                pid_a = int(a.output())

                proxy.refusing = True  # hold the client off while A overruns retention
                await proxy.drop()
                go.touch()
                await until(lambda: a_done.exists() and b_done.exists())
                proxy.refusing = False

                await a.done.wait()
                assert isinstance(a.events[-1], Failed)
                assert "no longer retained" in a.events[-1].message
                with pytest.raises(ProcessFailed):
                    await proc_a.wait()
                await pid_gone(pid_a)  # failing A terminated it

                b_finish.touch()
            assert b.output() == b"b-start\nb-mid\nb-end\n"
            assert assert_complete(b.events).exit_code == 0
            stats = client.statistics()
            assert (stats.recoveries, stats.failed_processes, stats.state) == (
                1,
                1,
                "connected",
            )


async def test_recovery_deadline_fails_the_client(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        options = {"recovery_deadline": 1.0}
        async with proxied_client(nursery, ServerConfig(), **options) as (client, proxy):
            waiting: list[BaseException] = []

            async def starter() -> None:
                try:
                    await client.start(["true"])
                except ClientClosedError as exc:
                    waiting.append(exc)

            async with trio.open_nursery() as tasks:
                sleeper = await client.start(["sleep", "30"])
                collector = collect_in(tasks, sleeper)
                finished = await client.start(["echo", "done"])
                assert await finished.wait() == 0
                proxy.refusing = True
                lost_at = trio.current_time()  # recovery starts after this
                await proxy.drop()
                tasks.start_soon(starter)  # waits for the recovery, then fails with it
                await until(lambda: client.state is ClientState.FAILED)
                elapsed = trio.current_time() - lost_at
                assert 1.0 <= elapsed < 2.0
            assert proxy.refused >= 5
            assert len(waiting) == 1
            assert isinstance(collector.events[-1], Failed)
            assert "could not resume session" in collector.events[-1].message
            with pytest.raises(ProcessFailed):
                await sleeper.wait()
            assert await finished.wait() == 0  # completed before the outage: unaffected
            with pytest.raises(ClientClosedError):
                await client.start(["true"])
            with pytest.raises(ClientClosedError):
                await client.run(["true"])
            stats = client.statistics()
            assert (stats.state, stats.recoveries, stats.failed_processes) == ("failed", 0, 1)


async def test_resume_retries_while_the_old_connection_is_attached(
    nursery: trio.Nursery,
) -> None:
    """The daemon still holds the old connection (-32010): the client re-sends
    initialize on its new connection until the old one is gone, then resumes."""
    with trio.fail_after(10):
        async with proxied_client(nursery, ServerConfig(), msgpack=False) as (client, proxy):
            session_id = client.session_id
            async with trio.open_nursery() as tasks:
                proc = await client.start(LINE_WRITER)
                collector = collect_in(tasks, proc)
                await collector.wait_output(b"line 00050 ")
                await proxy.drop(hold_upstream=True)
                await proxy.wait_connections(2)
                await until(lambda: proxy.transcripts[1].count(b"-32010") >= 3)
                assert client.state is ClientState.RECOVERING
                await proxy.release_held()
            assert client.session_id == session_id
            assert collector.output() == EXPECTED_LINES
            assert_complete(collector.events)
            stats = client.statistics()
            assert (stats.recoveries, stats.state) == (1, "connected")
            assert proxy.connections == 2  # retried on the same connection


@pytest.mark.parametrize("held_output", [True, False])
async def test_a_half_open_old_connection_is_probed_and_closed(
    nursery: trio.Nursery, held_output: bool
) -> None:
    """Half-open: the client's side is gone, the daemon's stays open and nobody reads
    it, so the daemon is blocked writing output to it (or, without output, only its
    30 s keepalive would notice). The client's resumes get -32010; each makes the
    daemon ping that connection, and one that stays silent for resume_probe_timeout is
    closed, so a retry succeeds long before the client's recovery deadline."""
    config = ServerConfig(resume_probe_timeout=0.3)
    argv = ["sh", "-c", "while :; do head -c 65536 /dev/zero; sleep 0.01; done"]
    with trio.fail_after(8):
        async with proxied_client(nursery, config, recovery_deadline=6) as (client, proxy):
            async with trio.open_nursery() as tasks:
                proc = await client.start(argv if held_output else ["sleep", "30"])
                collector = collect_in(tasks, proc)
                if held_output:
                    await collector.wait_for(lambda c: len(c.output()) > 1 << 20)
                await proxy.drop(hold_upstream=True)
                await until(lambda: client.statistics().recoveries == 1)
                assert client.state is ClientState.CONNECTED
                assert await proc.kill() is True
            assert_complete(collector.events)
            assert client.statistics().failed_processes == 0


async def test_with_acknowledgements_a_drop_loses_nothing_even_past_the_window(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same overrun as above, with the default acknowledging client: the daemon
    holds what was not acknowledged (pausing the writer once a window is unacked), so
    after the resume every byte arrives and no process fails."""
    total = 2_000_000
    writer = [PY, "-c", f"import sys; sys.stdout.buffer.write(bytes(range(256)) * {total // 256})"]
    daemon = track_daemon(monkeypatch)
    with trio.fail_after(20):
        config = ServerConfig(retain_bytes=16384, ack_window_bytes=16384)
        async with proxied_client(nursery, config) as (client, proxy):
            async with trio.open_nursery() as tasks:
                proc = await client.start(writer)
                collector = collect_in(tasks, proc)
                await collector.wait_for(lambda c: len(c.output()) > 0)
                proxy.refusing = True  # the writer overruns the window many times over
                await proxy.drop()
                # Detached, it runs into the window: the daemon pauses the writer.
                await until(lambda: daemon.paused(proc.process_id))
                proxy.refusing = False
            assert collector.output() == bytes(range(256)) * (total // 256)
            assert assert_complete(collector.events).exit_code == 0
            stats = client.statistics()
            assert (stats.recoveries, stats.failed_processes) == (1, 0)
            assert stats.calls.get("process/read", 0) >= 1


async def test_the_client_acks_a_closed_process_so_the_daemon_trims_it(
    nursery: trio.Nursery,
) -> None:
    """After ``closed`` the client still sends its last ack: the daemon would otherwise
    hold the process's unacknowledged tail, past retain_bytes, for the closed TTL."""
    writer = ["head", "-c", "60000", "/dev/zero"]  # exits right after its one write
    with trio.fail_after(20):
        config = ServerConfig(retain_bytes=4096, ack_window_bytes=1 << 20)
        async with proxied_client(nursery, config) as (client, _):
            proc = await client.start(writer)
            assert await proc.wait() == 0
            # Output, exit and close arrive together: the last ack is the only one.
            read = wire_read(client, proc.process_id)
            while sum(len(c.chunk) for c in (await read()).chunks) > 4096:  # noqa: ASYNC110
                await trio.sleep(0.01)
            await until(lambda: client._ack_due == {})


async def test_a_client_that_does_not_ack_keeps_no_ack_state(nursery: trio.Nursery) -> None:
    with trio.fail_after(20):
        async with proxied_client(nursery, ServerConfig(), ack_output=False) as (client, _):
            for _ in range(3):
                await client.run([PY, "-c", "print('x' * 1000)"])
            assert client._ack_due == {}


def wire_read(client: ExecClient, process_id: str) -> Callable[[], Any]:
    import protocol_schema as wire

    async def read() -> Any:
        params = wire.ProcessReadParams(process_id=process_id, after_seq=0, wait_ms=0)
        return await client._call("process/read", params, wire.ProcessReadResult)

    return read


CHATTY = {"chunks": 800, "chunk_size": 10, "pause": 0.001}


async def test_a_wide_shuffle_of_a_chatty_process_completes_byte_exact() -> None:
    """600 notifications held and released shuffled: often more than the 256 a process
    may hold past a gap arrive before the gap fills (the policy test below pins what
    happens then); the process completes byte-exact either way."""
    plan = FaultPlan(seed=1, reorder_window=600)
    with trio.fail_after(30):
        async with open_faulty_local(plan) as (client, _):
            proc = await client.start(scripted_argv(**CHATTY))
            events = [event async for event in proc.events()]
            assert_complete(events)
            stdout = b"".join(e.data for e in events if isinstance(e, Output))
            check_pattern(stdout, b"", **CHATTY)
            assert client.statistics().failed_processes == 0


@pytest.mark.parametrize("ack_output", [True, False])
async def test_a_reorder_buffer_overflow(ack_output: bool) -> None:
    """More than 256 events held past a gap. With acknowledgements the daemon holds
    everything past the gap (nothing there was acknowledged), so the client lets go of
    what it held and reads it back: the process goes on. Without them the output may
    be evicted already, so that process fails, and only that one (PROTOCOL §9).
    (Injected into the client's delivery: a real gap this wide is timing-dependent.)"""
    with trio.fail_after(10):
        async with open_faulty_local(ack_output=ack_output) as (client, faults):
            proc = await client.start(["sleep", "30"])
            held = [Output(seq, "stdout", b"x") for seq in range(2, 300)]  # seq 1 missing
            client._deliver(proc._stream, held)
            if ack_output:
                assert proc._stream.failure is None
                assert proc._stream.reorder.pending_count == 0
                await until(lambda: faults.reads >= 1)  # it reads back from the gap
                assert await proc.kill() is True
                events = [event async for event in proc.events()]
                assert isinstance(events[-1], Closed)
            else:
                events = [event async for event in proc.events()]
                assert len(events) == 1 and isinstance(events[0], Failed)
                assert "reorder buffer overflow" in events[0].message
                assert (await client.run(["echo", "others go on"])).stdout == b"others go on\n"


MUTATIONS: dict[str, Callable[[ExecClient, ProcessHandle, Path], Any]] = {
    "process/terminate": lambda client, proc, tmp: proc.kill(),
    "process/signal": lambda client, proc, tmp: proc.signal("hangup"),
    "process/resize": lambda client, proc, tmp: proc.resize(30, 100),
    "fs/writeFile": lambda client, proc, tmp: client.fs.write_file(tmp / "f", b"data"),
    "fs/createDirectory": lambda client, proc, tmp: client.fs.create_directory(tmp / "d"),
}


@pytest.mark.parametrize("method", sorted(MUTATIONS))
async def test_a_mutating_call_cut_in_flight_is_not_replayed(method: str, tmp_path: Path) -> None:
    """PROTOCOL §9: the connection drops as the request leaves, so its outcome is
    unknown: it fails with ``exec-server transport disconnected`` and is not sent
    again after the client has resumed."""
    plan = FaultPlan(drop_at_method=method)
    with trio.fail_after(10):
        async with open_faulty_local(plan) as (client, faults):
            proc = await client.start(["sleep", "30"], tty=True)
            with pytest.raises(TransportError, match=f"^{DISCONNECTED}$"):
                await MUTATIONS[method](client, proc, tmp_path)
            await until(lambda: client.statistics().recoveries == 1)
            assert faults.counts[method] == 1  # the one that was cut, never re-sent
            assert await proc.kill() is True  # the process and the session live on
            assert isinstance([e async for e in proc.events()][-1], Closed)


async def test_a_session_that_expired_during_the_outage_fails_the_client(
    tmp_path: Path,
) -> None:
    """PROTOCOL §9: the resume answers ``unknown session`` (its detached TTL passed):
    the client fails for good, every process gets a terminal Failed, and new starts
    fail at once."""
    with trio.fail_after(10):
        config = ServerConfig(detached_ttl=0.2)
        async with open_faulty_local(config=config) as (client, faults):
            pid_files = [tmp_path / f"pid{n}" for n in range(2)]
            argvs = [["sh", "-c", f"echo $$ > {f}; exec sleep 30"] for f in pid_files]
            procs = [await client.start(argv) for argv in argvs]
            await until(lambda: all(f.exists() and f.read_text().endswith("\n") for f in pid_files))
            pids = [int(f.read_text()) for f in pid_files]
            faults.partition()
            # An expired session ends before its processes are killed: once they are
            # gone, the session is (past the detached TTL).
            await until(lambda: all(process_gone(pid) for pid in pids))
            faults.heal()
            await until(lambda: client.state is ClientState.FAILED)
            for proc in procs:
                events = [event async for event in proc.events()]
                assert len(events) == 1 and isinstance(events[0], Failed)
                assert "unknown session id" in events[0].message
            with pytest.raises(ClientClosedError, match="unknown session id"):
                await client.start(["true"])


async def test_a_consumer_lagging_through_a_reconnect_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The recovery read after a reconnect must not acknowledge (its ``afterSeq`` does)
    what a lagging consumer has yet to take, or the daemon evicts it."""
    size = 20 * 1024 * 1024
    argv = ["head", "-c", str(size), "/dev/zero"]
    daemon = track_daemon(monkeypatch)
    with trio.fail_after(30):
        async with open_faulty_local() as (client, faults):
            proc = await client.start(argv)
            received = 0
            first = True
            async for event in proc.events():
                if first:
                    first = False
                    while not proc._stream.lagging:  # noqa: ASYNC110 - plain client state
                        await trio.sleep(0.01)
                    await until(lambda: daemon.paused(proc.process_id))  # its ack window
                    faults.drop()
                    await until(lambda: client.statistics().recoveries == 1)
                if isinstance(event, Failed):
                    raise AssertionError(event.message)
                if isinstance(event, Output):
                    received += len(event.data)
            assert received == size


async def started_and_up(nursery: trio.Nursery, client: ExecClient, count: int) -> list[Collector]:
    """``count`` processes that print ``up`` and wait; returns once every line arrived."""
    argv = ["sh", "-c", "echo up; exec sleep 60"]
    collectors = [collect_in(nursery, await client.start(argv)) for _ in range(count)]
    for collector in collectors:
        await collector.wait_output(b"up\n")
    return collectors


async def killed_complete_with_their_line(collectors: list[Collector]) -> None:
    """Kill each; each ends complete (every seq, one exit, closed) with its one line."""
    for collector in collectors:
        await collector.proc.kill()
    for collector in collectors:
        await collector.done.wait()
        assert_complete(collector.events)
        assert collector.output() == b"up\n"


async def test_a_resumed_session_sends_every_catch_up_read_before_any_answer(
    nursery: trio.Nursery,
) -> None:
    """After a drop, the catch-up reads of a session's running processes go out
    together: the transport holds every ``process/read`` answer until six are waiting,
    which a client that reads one process after another never gets to (it waits for
    each answer before it asks again), so there a session of N processes recovered in
    N round trips."""
    count = 6
    plan = FaultPlan(gather_responses=("process/read", count))
    with trio.fail_after(30):
        async with open_faulty_local(plan) as (client, faults):
            collectors = await started_and_up(nursery, client, count)
            assert faults.reads == 0  # pushed, none read
            faults.drop()
            await until(lambda: client.statistics().recoveries == 1)
            assert faults.reads == count  # one catch-up read per process, all answered
            assert client.statistics().failed_processes == 0
            await killed_complete_with_their_line(collectors)


async def test_a_session_of_more_processes_than_reads_in_flight_recovers_every_one(
    nursery: trio.Nursery,
) -> None:
    """Three times ``RECOVERY_READS`` processes: the catch-up reads go out in turns, and
    every process is resumed, each with one read."""
    count = 3 * RECOVERY_READS
    with trio.fail_after(30):
        async with open_faulty_local(FaultPlan()) as (client, faults):
            collectors = await started_and_up(nursery, client, count)
            faults.drop()
            await until(lambda: client.statistics().recoveries == 1)
            assert faults.reads == count
            await killed_complete_with_their_line(collectors)
            assert client.statistics().failed_processes == 0


async def test_a_drop_while_the_catch_up_reads_are_out_starts_the_recovery_again(
    nursery: trio.Nursery,
) -> None:
    """The first resumed link drops as a catch-up read goes out, with the other reads
    in flight: they are abandoned together and the next link catches every process up,
    losing nothing."""
    count = 4
    plan = FaultPlan(drop_at_method="process/read", max_drops=2)
    with trio.fail_after(30):
        async with open_faulty_local(plan) as (client, faults):
            collectors = await started_and_up(nursery, client, count)
            faults.drop()  # the first drop; the second comes at the first catch-up read
            await until(lambda: client.statistics().recoveries == 1)
            assert faults.drops == 2 and faults.connections == 3
            assert client.statistics().failed_processes == 0
            await killed_complete_with_their_line(collectors)
