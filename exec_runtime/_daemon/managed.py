"""One process as a session sees it: starting → running → closed, then forgotten."""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import Awaitable, Callable

import trio

from .._core.events import SeqEvent
from .._core.sandbox_denial import DenialScanner
from .._core.sequence import ProcessSequence, RetentionLimits
from .budget import Account, ByteBudget
from .child import Child, ChildMessage, SpawnSpec, spawn
from .fds import FD_BUDGET, START_FDS, start_slot
from .metrics import NO_METRICS, NO_PROCESS
from .rpc_error import RpcError
from .sequencer import Sequencer
from .stdin import StdinWriter

FAILURE_PUBLISH_TIMEOUT = 5.0
"""How long a failed process's last events may wait for the client's outbox."""
CHANNEL_CAPACITY = 1
"""Batches (one read round each, at most ``ROUND_BYTES``) between the child task and
the sequencer: small, so backpressure is prompt and little output is held here."""

SIGNALS = {
    "interrupt": signal.SIGINT,
    "terminate": signal.SIGTERM,
    "kill": signal.SIGKILL,
    "hangup": signal.SIGHUP,
}


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"


class ManagedProcess:
    def __init__(
        self,
        process_id: str,
        limits: RetentionLimits,
        publish: Callable[[str, list[SeqEvent]], Awaitable[None]],
        flow_controlled: Callable[[], bool] = lambda: False,
        ack_window: RetentionLimits | None = None,
        output_budget: ByteBudget | None = None,
    ) -> None:
        self.process_id = process_id
        self._output_budget = output_budget
        self.state = State.STARTING
        self._limits = limits
        self._publish = publish
        self._flow_controlled = flow_controlled
        self._ack_window = ack_window
        self._start_scope = trio.CancelScope()
        self._start_cancelled = False
        self._closed_ttl_scope = trio.CancelScope()
        self.child: Child | None = None
        self.sequencer: Sequencer | None = None
        self.stdin: StdinWriter | None = None
        self.stdin_budget: ByteBudget | None = None
        """The daemon's buffer budget, charged for stdin bytes queued and not written."""
        self.metrics = NO_METRICS
        self._record = NO_PROCESS  # its end, recorded once (``_daemon/metrics.py``)

    @property
    def exited(self) -> bool:
        return self.sequencer is not None and self.sequencer.sequence.exited

    @property
    def closed(self) -> bool:
        """Exited, reaped, and every output at EOF."""
        return self.sequencer is not None and self.sequencer.sequence.closed

    def forget(self) -> None:
        """End the closed TTL now (the session forgets a closed process early)."""
        self._closed_ttl_scope.cancel()

    def cancel_start(self) -> None:
        self._start_cancelled = True
        self._start_scope.cancel()

    async def run(
        self,
        spec: SpawnSpec,
        closed_ttl: float,
        start_delay: float = 0.0,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Spawn, report started, then supervise until closed and ``closed_ttl`` passed."""
        child: Child | None = None
        with self._start_scope:
            if start_delay:
                await trio.sleep(start_delay)  # a test hook that widens the starting window
            try:
                # Refused before anything is taken if it would eat into the daemon's
                # reserve of descriptors; any OS error while taking them (EMFILE) is
                # answered -32603 with everything released (``spawn``).
                async with start_slot(), FD_BUDGET.claim(START_FDS, "process/start"):
                    child = await spawn(spec)
            except OSError as exc:
                # data carries the errno: the client raises FileNotFoundError & co.
                raise RpcError.internal(str(exc)).with_os_error(exc) from None
        if child is None or self._start_cancelled:
            if child is not None:
                await child.aclose()
            raise RpcError.invalid_request(f"process {self.process_id} start was cancelled")
        try:
            try:
                await self._supervise(child, task_status, sandboxed=spec.sandboxed)
            finally:
                with trio.CancelScope(shield=True):
                    await child.aclose()
                self._record.ended()  # reaped: killed by the daemon unless it exited
            with self._closed_ttl_scope:
                await trio.sleep(closed_ttl)
        finally:
            # Forgotten (or ended): what it held leaves the daemon's output budget.
            child.in_flight.close()
            if self.sequencer is not None:
                self.sequencer.release_all()

    async def _supervise(
        self, child: Child, task_status: trio.TaskStatus[None], *, sandboxed: bool
    ) -> None:
        self.child = child
        child.in_flight = Account(self._output_budget)
        self.sequencer = Sequencer(
            ProcessSequence(child.streams, self._limits),
            lambda events: self._publish(self.process_id, events),
            self._flow_controlled,
            self._ack_window,
            DenialScanner() if sandboxed else None,
            child.in_flight,
            self._output_budget,
        )
        self.stdin = StdinWriter(
            child.stdin,
            eof_bytes=b"\x04" if child.pty_master else None,
            account=Account(self.stdin_budget),
        )
        send, receive = trio.open_memory_channel[list[ChildMessage]](CHANNEL_CAPACITY)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.run, send)
            if child.stdin is not None:
                nursery.start_soon(self.stdin.run)
            self.state = State.RUNNING
            self._record = self.metrics.process_started()
            self.sequencer.on_exit = self._record.exited
            task_status.started()
            await self.sequencer.run(receive)
            # Closed: stdin has nothing left to serve.
            nursery.cancel_scope.cancel()

    async def finish_after_failure(self) -> None:
        """The process task failed (a bug, an unhandled OS error) after the start was
        answered, and its group was killed on the way out: record an exit by SIGKILL
        (unless one was recorded) and the streams' ends, and publish them, so the
        client sees the process end instead of waiting for ever."""
        sequencer = self.sequencer
        if sequencer is None or sequencer.sequence.closed:
            return
        events = sequencer.sequence.finish(128 + signal.SIGKILL)
        sequencer.wake_readers()
        with trio.move_on_after(FAILURE_PUBLISH_TIMEOUT):
            await self._publish(self.process_id, events)

    async def send_signal(self, name: str) -> None:
        """Signal the group, and a tty's foreground job (``Child.send_signal``); a no-op
        for a starting or exited process (PROTOCOL §4)."""
        if self.child is None or self.exited:
            return
        await self.child.send_signal(SIGNALS[name])

    def terminate(self) -> bool:
        """SIGKILL the group (a tty's whole session, ``Child.kill``). Returns whether
        the process was running (or starting)."""
        if self.state is State.STARTING:
            self.cancel_start()
            return True
        assert self.child is not None
        if self.closed:
            # The leader is reaped and nothing holds its pipes, so its group may be
            # gone, and the kernel recycles pids: the id could name a new group by now.
            return False
        was_running = not self.exited
        # Kill the group even after the leader exited: a grandchild may hold the pipes
        # (and, being in the group, keeps its id from being reused), or for a tty a
        # background job of the session may hold the terminal. Not signalled (the
        # child's group is released, see Child.group_released, or gone): the leader
        # exited already, even if the sequencer has not recorded it yet.
        self._record.terminating = True
        signalled = self.child.kill()
        return was_running and signalled

    def resize(self, rows: int, cols: int) -> None:
        if self.child is None or self.child.pty_master is None:
            raise RpcError.invalid_request(f"process {self.process_id} is not a tty process")
        if rows <= 0 or cols <= 0 or rows > 0xFFFF or cols > 0xFFFF:
            raise RpcError.invalid_params("rows and cols must be between 1 and 65535")
        try:
            self.child.resize(rows, cols)
        except OSError as exc:
            raise RpcError.internal(f"resize failed: {os.strerror(exc.errno or 0)}") from None
