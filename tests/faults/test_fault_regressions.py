"""Replayed fault programs: the races issue 4 names, pinned as regression tests.

A failing example of ``test_fault_suite.py`` notes ``replay(Program(...))``; paste it
here as a test. :func:`replay` runs the program with the whole oracle (contiguous seqs,
nothing after closed, exact bytes, exit codes, writes applied once) and returns the
runner, so a test can also assert that the race it is named after really happened
(a scenario that silently stopped happening would test nothing).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import exec_runtime
import exec_runtime._core.client_stream
from exec_runtime import Closed, Exited, Failed, Output, ServerConfig
from exec_runtime._core.events import SeqEvent
from exec_runtime._core.recovery import ReadSnapshot, events_after
from exec_runtime._daemon.session import SessionRegistry
from exec_runtime._local import LocalConnector
from exec_runtime.testing import FaultPlan, fault_proxy
from exec_runtime.testing._faults import FaultController, FaultyConnector
from tests.support.daemon_process import eventually
from tests.support.fault_programs import (
    CloseStdin,
    Drop,
    Heal,
    Partition,
    Program,
    ResumeConsumer,
    ResumeTransport,
    Runner,
    Signal,
    Sleep,
    StallConsumer,
    StallTransport,
    StartCat,
    StartScripted,
    Terminate,
    WaitFor,
    Write,
    replay,
)

PY = sys.executable


def delivered(runner: Runner, index: int) -> list[tuple[str, int | None]]:
    """(method, seq) of every notification of process ``index`` the client received."""
    handle = runner.procs[index].handle
    assert handle is not None
    return [
        (d.method, d.seq) for d in runner.faults.delivered if d.process_id == handle.process_id
    ]


def final_events(runner: Runner, index: int) -> list[object]:
    return runner.procs[index].events


# --- a close notification overtaking output ----------------------------------------------

# Seed 656 shuffles k held notifications (k = 2..7) so that the last one, closed, is
# delivered first: see test_close_overtakes_output_and_exit for the check.
OVERTAKE = Program(
    plan=FaultPlan(seed=656, reorder_window=8),
    steps=(
        StartScripted(chunks=3, chunk_size=50, pause=0.01, exit_code=5),
        StallTransport(),
        Sleep(0.4),  # the process runs to its close; every notification waits
        ResumeTransport(),
    ),
)


def test_close_overtakes_output_and_exit() -> None:
    runner = replay(OVERTAKE)
    got = delivered(runner, 0)
    assert got[0][0] == "process/closed", f"closed did not overtake: {got}"
    events = final_events(runner, 0)
    assert isinstance(events[-1], Closed) and events[-1].seq == len(events)
    assert [e.exit_code for e in events if isinstance(e, Exited)] == [5]


def test_close_overtakes_output_with_duplicates_no_read_needed_when_gap_fills() -> None:
    program = Program(
        plan=FaultPlan(seed=656, reorder_window=3, duplicate=0.5),
        steps=(StartScripted(chunks=12, chunk_size=30, pause=0.003, stderr_every=2),),
    )
    replay(program)


# --- a disconnect between exit and close ------------------------------------------------


def test_drop_after_exit_is_delivered_before_close() -> None:
    """A grandchild holds the pipe: exited is pushed, the link drops, the late output
    and the close come from the recovery read or the new link."""
    runner = replay(
        Program(
            steps=(
                StartScripted(chunks=4, chunk_size=200, exit_code=7, grandchild_delay=0.3),
                WaitFor(0, "process/exited"),
                Drop(),
            ),
        )
    )
    assert runner.faults.drops == 1
    got = [method for method, _ in delivered(runner, 0)]
    assert "process/exited" in got and got.index("process/exited") < len(got)
    events = final_events(runner, 0)
    exit_at = next(i for i, e in enumerate(events) if isinstance(e, Exited))
    late = events[exit_at + 1 : -1]
    assert [e.data for e in late if isinstance(e, Output)] == [b"<late>"]


def test_partition_between_exit_and_close() -> None:
    """Exit pushed; then detached while the grandchild writes and the process closes."""
    runner = replay(
        Program(
            steps=(
                StartScripted(chunks=2, chunk_size=64, exit_code=3, grandchild_delay=0.1),
                WaitFor(0, "process/exited"),
                Partition(),
                Sleep(0.3),
                Heal(),
            ),
        )
    )
    assert runner.faults.refused > 0
    assert runner.faults.counts["process/read"] >= 1


@pytest.mark.parametrize("method", ["process/exited", "process/closed"])
def test_exit_or_close_notification_lost_in_a_drop(method: str) -> None:
    """The link dies as exited (or closed) passes: the read rebuilds it from state."""
    runner = replay(
        Program(
            plan=FaultPlan(drop_at_method=method),
            steps=(StartScripted(chunks=3, chunk_size=100, exit_code=9, grandchild_delay=0.05),),
        )
    )
    assert runner.faults.drops == 1
    assert method not in [m for m, _ in delivered(runner, 0)][:1]


# --- a resume racing a (lagging consumer's) read ------------------------------------------


@pytest.mark.parametrize("method", ["process/read", "response:process/read"])
def test_lagging_consumer_read_races_a_drop(method: str) -> None:
    """The consumer falls behind a 2-event queue and catches up with process/read;
    the link dies with that read in flight (request or response lost). The read is
    re-sent after recovery, while recovery's own catch-up read moves the network
    cursor: both merge, every event once."""
    runner = replay(
        Program(
            plan=FaultPlan(drop_at_method=method),
            queue_max_events=2,
            steps=(
                StartScripted(chunks=30, chunk_size=100, pause=0.002, stderr_every=3),
                StallConsumer(0),
                Sleep(0.2),
                ResumeConsumer(0),
            ),
        )
    )
    assert runner.faults.drops == 1
    assert runner.faults.counts["process/read"] >= 2  # the lost one and its re-send


def test_lagging_consumer_with_drops_and_stalls_mixed() -> None:
    replay(
        Program(
            plan=FaultPlan(seed=3, drop_after_frames=40, max_drops=3, reorder_window=4),
            queue_max_events=4,
            steps=(
                StartScripted(chunks=40, chunk_size=300, pause=0.001, stderr_every=2),
                StartCat(),
                StallConsumer(0),
                Write(0, b"one"),
                Sleep(0.05),
                StallTransport(),
                Write(0, b"two"),
                Sleep(0.05),
                ResumeTransport(),
                ResumeConsumer(0),
                CloseStdin(0),
            ),
        )
    )


async def test_long_poll_read_on_the_old_connection_while_another_resumes(
    connect: object,
) -> None:
    """Daemon side: connection A has a long-poll read in flight when it goes away; B
    resumes the session at once and reads everything; the daemon keeps serving."""
    with trio.fail_after(15):
        await _long_poll_then_resume(connect)


async def _long_poll_then_resume(connect: Any) -> None:
    a = await connect()
    session = a.session_id
    await a.start("p", [PY, "-c", "import time; time.sleep(0.3); print('done')"])
    async with trio.open_nursery() as nursery:

        async def long_poll() -> None:
            try:
                await a.call("process/read", {"processId": "p", "afterSeq": 0, "waitMs": 10000})
            except Exception:
                pass

        nursery.start_soon(long_poll)
        await eventually(lambda: a._waiting)  # the read is being sent (no checkpoint before)
        # The daemon takes requests in wire order: once a later one is answered, the
        # read is in flight on the daemon (a long poll: the process prints at 0.3 s).
        assert await a.call("environment/status") == {"status": "ready"}
        await a.ws.aclose()
        b = await connect(handshake=False)
        with trio.fail_after(5):
            while True:
                try:
                    await b.handshake(resume=session)
                    break
                except Exception as exc:  # -32010 until the daemon has detached A
                    assert "already attached" in str(exc), exc
                    await trio.sleep(0.01)
        result = await b.read_all("p")
        assert result["closed"] and result["exitCode"] == 0
        nursery.cancel_scope.cancel()


# --- a write retried after an ambiguous disconnect ------------------------------------------


@pytest.mark.parametrize("method", ["process/write", "response:process/write"])
def test_write_resent_with_the_same_id_is_applied_once(method: str) -> None:
    """``process/write``: the request is lost; ``response:process/write``: the daemon
    applied it and the response is lost (ambiguous). Either way the write is re-sent
    with its writeId and cat echoes every byte exactly once."""
    runner = replay(
        Program(
            plan=FaultPlan(drop_at_method=method),
            steps=(
                StartCat(),
                Write(0, b"hello "),
                Write(0, b"world"),
                CloseStdin(0),
            ),
        )
    )
    assert runner.faults.drops == 1
    # 3 writes and closes, the final close the runner adds to every cat, and 1 re-send
    assert runner.faults.counts["process/write"] == 5
    assert bytes(runner.procs[0].out) == b"hello world"


async def test_write_resent_through_a_real_websocket_proxy(nursery: trio.Nursery) -> None:
    url = await nursery.start(exec_runtime.serve, ServerConfig())
    plan = FaultPlan(drop_at_method="response:process/write")
    async with fault_proxy(url, plan) as proxy, exec_runtime.open_client(proxy.url) as client:
        proc = await client.start(["cat"], pipe_stdin=True)
        await proc.write(b"exactly once")
        await proc.close_stdin()
        out = b"".join([e.data async for e in proc.events() if isinstance(e, Output)])
        assert out == b"exactly once"
        assert await proc.wait() == 0
        assert proxy.controller.drops == 1
        assert proxy.controller.counts["process/write"] == 3


# --- an exit that happened while detached ------------------------------------------------


def test_exit_while_partitioned() -> None:
    runner = replay(
        Program(
            steps=(
                StartScripted(chunks=5, chunk_size=100, pause=0.02, exit_code=4),
                Partition(),
                Sleep(0.4),  # the process writes, exits and closes while detached
                Heal(),
            ),
        )
    )
    assert runner.faults.refused > 0
    events = final_events(runner, 0)
    assert [e.exit_code for e in events if isinstance(e, Exited)] == [4]


def test_exit_while_stalled_then_dropped() -> None:
    """The client stops reading; the process exits; the link dies; recovery."""
    replay(
        Program(
            steps=(
                StartScripted(chunks=6, chunk_size=500, pause=0.01, exit_code=2),
                StallTransport(),
                Sleep(0.3),
                Drop(),
                ResumeTransport(),
            ),
        )
    )


def test_signal_and_terminate_while_detached() -> None:
    """Mutating calls made during recovery wait for it, then take effect. (Sent on a
    link already dead but not yet noticed, they fail with "transport disconnected"
    instead: the fault suite allows both; here the client has noticed.)"""
    runner = replay(
        Program(
            steps=(
                StartCat(),
                StartScripted(chunks=200, chunk_size=100, pause=0.01),
                Partition(),
                Sleep(0.05),
                Signal(0, "hangup"),
                Terminate(1),
                Sleep(0.2),
                Heal(),
            ),
        )
    )
    codes = [[e.exit_code for e in p.events if isinstance(e, Exited)] for p in runner.procs]
    assert codes == [[129], [137]]
    assert runner.procs[0].signals == [("hangup", "ok")]
    assert runner.procs[1].terminates == ["True"]


OVERRUN_WHILE_PARTITIONED = (
    StartScripted(chunks=30, chunk_size=1000, pause=0.002),  # 30 KB against 2 KiB retained
    StartCat(),
    WaitFor(0, "process/output"),
    Partition(),
    Write(0, b"still here"),
    Sleep(0.3),
    Heal(),
)


def test_retention_exceeded_while_detached_fails_only_that_process() -> None:
    runner = replay(
        Program(
            retain_bytes=2048,
            ack_output=False,  # with acknowledgements nothing is evicted: see below
            steps=OVERRUN_WHILE_PARTITIONED,
        )
    )
    first, cat = runner.procs
    assert isinstance(first.events[-1], Failed), first.events[-3:]
    assert bytes(cat.out) == b"still here"


def test_with_acknowledgements_the_same_partition_loses_nothing() -> None:
    runner = replay(
        Program(
            retain_bytes=2048,
            steps=OVERRUN_WHILE_PARTITIONED,
        )
    )
    first, cat = runner.procs
    assert not any(isinstance(event, Failed) for event in first.events), first.events[-3:]
    assert isinstance(first.events[-1], Closed)
    assert bytes(cat.out) == b"still here"


# --- found by the suite (fixed): a recovery read counted held outputs as missing ----------


def _flood(gates: Path) -> str:
    """The leader forks a grandchild and exits (6) once ``leader`` exists; the grandchild
    writes 200 KB once ``grandchild`` exists. The test opens each gate when the moment
    it needs has come (detached; reattached but not delivering)."""
    return (
        "import os, time\n"
        f"gates = {str(gates)!r}\n"
        "def wait(name):\n"
        "    while not os.path.exists(os.path.join(gates, name)):\n"
        "        time.sleep(0.002)\n"
        "if os.fork() == 0:\n"
        "    wait('grandchild')\n"
        "    for i in range(200):\n"
        "        os.write(1, b'%05d' % i + b'.' * 995)\n"
        "    os._exit(0)\n"
        "wait('leader')\n"
        "os._exit(6)\n"
    )


@asynccontextmanager
async def _stack_with_registry(
    config: ServerConfig, ack_output: bool
) -> AsyncIterator[tuple[exec_runtime.ExecClient, FaultController, SessionRegistry]]:
    """``open_faulty_local``, with the daemon's registry, so the test can wait on what
    the daemon has recorded instead of sleeping."""
    controller = FaultController(FaultPlan())
    async with trio.open_nursery() as nursery:
        registry = SessionRegistry(nursery, config)
        connector = FaultyConnector(LocalConnector(registry), controller)
        async with trio.open_nursery() as client_nursery:
            client = exec_runtime.ExecClient._create(
                connector, client_nursery, ack_output=ack_output
            )
            await client_nursery.start(client._supervise)
            try:
                yield client, controller, registry
            finally:
                controller.resume()
                await client.aclose()
                client_nursery.cancel_scope.cancel()
        registry.close_all()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("ack_output", [False, True], ids=["no-acks", "acks"])
async def test_exit_missed_while_detached_then_held_output_evicted(
    ack_output: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit (seq 1) happens while detached. The client reconnects but cannot read
    yet (stalled); the grandchild's output is pushed on the new link (held: seq 1 is
    missing) and, without acknowledgements, evicted on the daemon (retain 4 KiB). The
    recovery read explains seq 1 (the exit) but not those outputs, which the client
    holds: before the fix (events_after(..., held=reorder.held())) it failed a process
    it could complete. With acknowledgements the daemon keeps the unacknowledged
    output, so the read returns it all: the same steps must lose nothing either."""
    recoveries: list[tuple[int, ReadSnapshot, dict[int, object]]] = []

    def recording(
        cursor: int, snapshot: ReadSnapshot, known_exit: int | None, held: Any = None
    ) -> list[SeqEvent]:
        if held is not None:  # the network's merge (a consumer's passes none)
            recoveries.append((cursor, snapshot, dict(held)))
        return events_after(cursor, snapshot, known_exit, held)

    monkeypatch.setattr(exec_runtime._core.client_stream, "events_after", recording)
    with trio.fail_after(30):
        async with _stack_with_registry(ServerConfig(retain_bytes=4096), ack_output) as (
            client,
            faults,
            registry,
        ):
            proc = await client.start([PY, "-c", _flood(tmp_path)])
            (session,) = registry.sessions.values()
            managed = session.processes[proc.process_id]
            faults.partition()
            await eventually(lambda: session.attached is None)
            (tmp_path / "leader").touch()
            sequencer = managed.sequencer
            assert sequencer is not None
            await eventually(lambda: sequencer.sequence.exited)  # recorded while detached
            faults.stall()
            faults.heal()  # reconnect: initialize reaches the daemon, its reply waits
            await eventually(lambda: session.attached is not None)
            (tmp_path / "grandchild").touch()  # pushed on the new link, not delivered
            await eventually(lambda: sequencer.sequence.closed)
            if not ack_output:
                assert sequencer.sequence.earliest_retained_seq > 2  # output was evicted
            faults.resume()
            events = [e async for e in proc.events()]
            assert not isinstance(events[-1], Failed), events[-1]
            assert [e.exit_code for e in events if isinstance(e, Exited)] == [6]
            out = b"".join(e.data for e in events if isinstance(e, Output))
            assert out == b"".join(b"%05d" % i + b"." * 995 for i in range(200))
            stats = client.statistics()
            assert stats.recoveries == 1 and faults.refused > 0 and faults.counts["process/read"]
            # The race happened: the exit never came live, and the read from before it
            # found outputs the client held; without acks some were no longer retained.
            methods = {d.method for d in faults.delivered if d.process_id == proc.process_id}
            assert "process/exited" not in methods
            _cursor, snapshot, held = next(r for r in recoveries if r[0] == 0)
            held_outputs = {seq for seq, event in held.items() if isinstance(event, Output)}
            assert snapshot.exited and held_outputs
            returned = {chunk.seq for chunk in snapshot.chunks}
            if ack_output:
                assert held_outputs <= returned
            else:
                assert held_outputs - returned
