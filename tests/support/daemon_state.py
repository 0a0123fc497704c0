"""Positive signals from an in-process daemon (the ``daemon``/``connect`` fixtures serve
in the test's own Trio run), for tests that must know a moment has passed: the
process closed, the session saw its connection go, the child is held back. A test
waits on these (``eventually``), never on a fixed sleep."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from exec_runtime._daemon.child import ChunkRead
from exec_runtime._daemon.connection import Connection
from exec_runtime._daemon.managed import ManagedProcess
from exec_runtime._daemon.sequencer import Sequencer
from exec_runtime._daemon.session import Session


class DaemonState:
    """Every ``ManagedProcess`` (by process id, latest last) and ``Session`` made
    while the tracker is installed."""

    def __init__(self) -> None:
        self.processes: defaultdict[str, list[ManagedProcess]] = defaultdict(list)
        self.sessions: dict[str, Session] = {}
        self.connections: list[Connection] = []
        self.ended: set[ManagedProcess] = set()  # its run() returned or raised
        self.at_window: set[Sequencer] = set()
        self.long_polls: list[Sequencer] = []  # one entry per read waiting (wait_readable)

    def all_ended(self) -> bool:
        """Some process was asked for, and every one's task is over: its start was
        refused or cancelled, or it ran, closed and was forgotten."""
        managed = [m for ms in self.processes.values() for m in ms]
        return bool(managed) and all(m in self.ended for m in managed)

    def long_polling(self, process_id: str) -> bool:
        """A ``process/read`` with ``waitMs`` waits for the process's output."""
        managed = self.processes[process_id][-1] if self.processes[process_id] else None
        return managed is not None and managed.sequencer in self.long_polls

    def paused(self, process_id: str) -> bool:
        """The daemon holds the process back at its ack window (it waits for acks)."""
        managed = self.processes[process_id][-1] if self.processes[process_id] else None
        return managed is not None and managed.sequencer in self.at_window

    def recorded_seq(self, process_id: str) -> int:
        """The last seq the daemon gave one of the process's events (0: none yet)."""
        managed = self.processes[process_id][-1] if self.processes[process_id] else None
        if managed is None or managed.sequencer is None:
            return 0
        return managed.sequencer.sequence.next_seq - 1

    def requests_waiting(self) -> int:
        """Requests read and waiting for a slot (``max_concurrent_requests``)."""
        return sum(c._request_slots.statistics().tasks_waiting for c in self.connections)

    def publishing(self, session_id: str) -> bool:
        """The session waits on its connection to take events (it is not read)."""
        session = self.sessions.get(session_id)
        return session is not None and session._publishing > 0

    def process(self, process_id: str) -> ManagedProcess:
        return self.processes[process_id][-1]

    def closed(self, process_id: str) -> bool:
        """The daemon recorded the process's close (exited, reaped, outputs at EOF)."""
        return bool(self.processes[process_id]) and self.process(process_id).closed

    def exited(self, process_id: str) -> bool:
        return bool(self.processes[process_id]) and self.process(process_id).exited

    def detached(self, session_id: str) -> bool:
        """The daemon saw the session's connection go (its detached TTL runs)."""
        session = self.sessions.get(session_id)
        return session is not None and session.attached is None

    def child_pid(self, process_id: str) -> int | None:
        managed = self.processes[process_id][-1] if self.processes[process_id] else None
        return None if managed is None or managed.child is None else managed.child.pid


def track_daemon(monkeypatch: pytest.MonkeyPatch) -> DaemonState:
    state = DaemonState()
    process_init = ManagedProcess.__init__
    session_init = Session.__init__

    def tracked_process(self: ManagedProcess, process_id: str, *args: Any, **kw: Any) -> None:
        process_init(self, process_id, *args, **kw)
        state.processes[process_id].append(self)

    def tracked_session(self: Session, session_id: str, *args: Any, **kw: Any) -> None:
        session_init(self, session_id, *args, **kw)
        state.sessions[session_id] = self

    wait_window = Sequencer._wait_window

    async def tracked_wait(self: Sequencer, chunk: ChunkRead) -> None:
        state.at_window.add(self)
        try:
            await wait_window(self, chunk)
        finally:
            state.at_window.discard(self)

    wait_readable = Sequencer.wait_readable

    async def tracked_readable(self: Sequencer, *args: Any) -> None:
        state.long_polls.append(self)
        try:
            await wait_readable(self, *args)
        finally:
            state.long_polls.remove(self)

    monkeypatch.setattr(Sequencer, "_wait_window", tracked_wait)
    monkeypatch.setattr(Sequencer, "wait_readable", tracked_readable)
    connection_init = Connection.__init__

    def tracked_connection(self: Connection, *args: Any, **kw: Any) -> None:
        connection_init(self, *args, **kw)
        state.connections.append(self)

    run = ManagedProcess.run

    async def tracked_run(self: ManagedProcess, *args: Any, **kw: Any) -> None:
        try:
            await run(self, *args, **kw)
        finally:
            state.ended.add(self)

    monkeypatch.setattr(ManagedProcess, "run", tracked_run)
    monkeypatch.setattr(Connection, "__init__", tracked_connection)
    monkeypatch.setattr(ManagedProcess, "__init__", tracked_process)
    monkeypatch.setattr(Session, "__init__", tracked_session)
    return state


def blocked_writing(pid: int) -> bool:
    """The process sleeps in a pipe write: its reader (the daemon) stopped taking."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text().endswith("pipe_write")
    except (FileNotFoundError, ProcessLookupError):
        return False
