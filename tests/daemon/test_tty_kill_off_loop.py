"""Killing tty processes never stalls the event loop: finding a tty session's
processes scans /proc (one read per process on the host), and that scan runs in a
worker thread, for all the sessions killed meanwhile at once."""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import exec_runtime._daemon.reaper as reaper
from tests.support.daemon_process import eventually, process_gone
from tests.support.wire_client import RawClient, output_of

TTYS = int(
    os.environ.get(
        "EXEC_RUNTIME_TTY_LOAD", "2000" if os.environ.get("EXEC_RUNTIME_LOAD_FULL") else "20"
    )
)
"""How many tty processes are killed at once: 20 in CI, 2,000 in ``nox -s load``."""


@pytest.fixture(autouse=True)
def enough_descriptors() -> None:
    """Each tty process holds a few descriptors here (the daemon is in this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, TTYS * 8 + 1024))
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class ScanSpy:
    """Wraps ``read_stat`` (what a /proc scan calls for every process): records the
    thread of each call and holds the worker-thread calls until ``release``, so the
    test can do a round trip on another connection while a sweep is under way."""

    def __init__(self) -> None:
        self.on_loop = 0
        self.in_workers = 0
        self.gate = threading.Event()
        self._original = reaper.read_stat

    def __call__(self, pid: int) -> tuple[bytes, int, int] | None:
        if threading.current_thread() is threading.main_thread():
            self.on_loop += 1  # never held: that would freeze the test itself
        else:
            self.in_workers += 1
            self.gate.wait(30)
        return self._original(pid)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScanSpy]:
    spy = ScanSpy()
    monkeypatch.setattr(reaper, "read_stat", spy)
    yield spy
    spy.gate.set()


async def test_terminating_tty_processes_scans_off_the_event_loop(
    connect: Any, spy: ScanSpy
) -> None:
    with trio.fail_after(60):
        client: RawClient = await connect()
        other: RawClient = await connect()
        # Each leaves a background job in its own group, which only the session
        # sweep reaches (it holds the PTY: the process cannot close before it dies).
        script = "sleep 1000 & echo $!; exec sleep 1000"
        jobs = []
        for n in range(TTYS):
            await client.start(f"t{n}", ["sh", "-c", script], tty=True)
        for n in range(TTYS):
            await eventually(lambda n=n: b"\n" in output_of(client.notifications[f"t{n}"], "pty"))
            jobs.append(int(output_of(client.notifications[f"t{n}"], "pty").split()[0]))
        spy.on_loop = spy.in_workers = 0

        for n in range(TTYS):
            assert await client.call("process/terminate", {"processId": f"t{n}"}) == {
                "running": True
            }
        await eventually(lambda: spy.in_workers > 0 or spy.on_loop > 0)
        assert spy.on_loop == 0, "the /proc scan ran on the event loop"
        # A sweep is held in its worker thread now.
        # The event loop is free meanwhile: another connection is served at once.
        assert await other.call("environment/status") == {"status": "ready"}
        assert not any(
            m["method"] == "process/closed"
            for n in range(TTYS)
            for m in client.notifications[f"t{n}"]
        )  # nobody closed before their session was swept
        spy.gate.set()
        for n in range(TTYS):
            events = await client.wait_closed(f"t{n}")
            assert events[-2]["params"]["exitCode"] == 137
        assert all(process_gone(pid) for pid in jobs)
        assert spy.on_loop == 0, spy.on_loop


def pipeline_group() -> int | None:
    """The process group of the test's ``sleep 1000`` (the terminal's foreground job)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/cmdline").read_bytes() == b"sleep\x001000\x00":
                return os.getpgid(int(entry))
        except OSError:
            continue
    return None


async def test_a_signal_to_a_foreground_job_scans_off_the_event_loop(
    connect: Any, spy: ScanSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``process/signal`` to a tty whose foreground job's leader has exited (``true |
    sleep``): whether that group is the session's takes a /proc scan, which runs in a
    worker thread while the loop serves another connection; the job gets the signal.
    The leader's exit is made certain by failing ``getsid`` for it (a zombie leader
    would still answer it), so the scan is always needed."""
    with trio.fail_after(60):
        client: RawClient = await connect()
        other: RawClient = await connect()
        script = "set -m; echo ready; sleep 1000 | (trap 'echo got-int; exit 3' INT; read x)"
        await client.start("t", ["sh", "-c", script], tty=True)
        await eventually(lambda: b"ready" in output_of(client.notifications["t"], "pty"))
        await eventually(lambda: pipeline_group() is not None)
        leader = pipeline_group()
        real_getsid = os.getsid

        def getsid(pid: int) -> int:
            if pid == leader:
                raise ProcessLookupError(pid)
            return real_getsid(pid)

        monkeypatch.setattr(os, "getsid", getsid)
        spy.on_loop = spy.in_workers = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                client.call, "process/signal", {"processId": "t", "signal": "interrupt"}
            )
            await eventually(lambda: spy.in_workers > 0 or spy.on_loop > 0)
            assert spy.on_loop == 0, "the /proc scan ran on the event loop"
            # The scan is held in its thread; the loop serves another connection.
            assert await other.call("environment/status") == {"status": "ready"}
            spy.gate.set()
        events = await client.wait_closed("t")
    assert b"got-int" in output_of(events, "pty")
