"""The client's view of one process: reorder, a bounded consumer queue, lag catch-up.

Two cursors: the reorder buffer's ``last_published_seq`` (what the network delivered
in order) and ``queued_seq`` (what went into the consumer's queue). The reader task
only ever appends to the queue when it has room; otherwise the process is *lagging*,
and the consumer itself catches up with ``process/read`` from ``queued_seq``.
"""

from __future__ import annotations

import signal
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Self

import trio

from .._core.events import Closed, Event, Exited, Failed, Output, SeqEvent
from .._core.recovery import GapLost, events_after
from .._core.reorder import ReorderBuffer, ReorderOverflow
from .._errors import ClientClosedError, ExecRuntimeError, ProcessFailed, ProtocolError
from .args import check_bytes, check_tty_size, signal_name

if TYPE_CHECKING:
    from .client import ExecClient

QUEUE_MAX_EVENTS: Final = 1024
QUEUE_MAX_BYTES: Final = 4 << 20


class StdinClosedError(ExecRuntimeError):
    """The process's stdin is closed (or was never a pipe)."""


class ProcessStream:
    """Everything the client tracks for one process id."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.reorder = ReorderBuffer()
        self.started = False
        self.exit_event: Exited | None = None
        self.legacy_exit: Exited | None = None
        """A pushed exit without ``sandboxDenied``, held back until a read completes it."""
        self.closed_event: Closed | None = None
        self.failure: Failed | None = None
        self.client_closed = False  # the failure is the client's closing
        self.owned_by_run = False  # run() consumes it and promises its end
        # The consumer fell behind what the daemon retains: only the events() stream
        # fails (the process runs on, and wait() has the exit code).
        self.consumer_failure: Failed | None = None
        self.done = trio.Event()  # set on Closed or Failed: the exit code is known or never
        self._queue: deque[Event] = deque()
        self._queue_bytes = 0
        self.queued_seq = 0
        self.unacked_bytes = 0  # arrived since the last process/ack
        self.unacked_events = 0
        self.lagging = False
        self._queue_changed = trio.Event()
        self.consumed = False
        self.consumer_active = False  # an events() iteration is in progress
        self.acked_seq = 0  # the last seq acknowledged to the daemon

    # --- called by the reader task (never blocks) --------------------------------------

    def push_many(self, events: list[SeqEvent]) -> list[SeqEvent]:
        """Insert pushed or recovered events; return what became contiguous.

        Raises ReorderOverflow when too much is pending past a gap.
        """
        if self.failure is not None:
            return []
        try:
            published = self.reorder.push_many(events)
        except ReorderOverflow as exc:
            self._publish(exc.published)
            raise
        self._publish(published)
        return published

    def _publish(self, events: list[SeqEvent]) -> None:
        for event in events:
            if isinstance(event, Exited):
                self.exit_event = event
            elif isinstance(event, Closed):
                self.closed_event = event
            self._enqueue(event)
        if self.closed_event is not None:
            self.done.set()  # the exit code is known; a lagging consumer catches up alone

    def _enqueue(self, event: SeqEvent) -> None:
        if event.seq <= self.queued_seq:
            return
        size = len(event.data) if isinstance(event, Output) else 0
        room = (
            len(self._queue) < QUEUE_MAX_EVENTS and self._queue_bytes + size <= QUEUE_MAX_BYTES
        )
        if self.lagging or event.seq != self.queued_seq + 1 or not room:
            self.lagging = True
        else:
            self._queue.append(event)
            self._queue_bytes += size
            self.queued_seq = event.seq
        self._wake()

    def fail(self, message: str, *, client_closed: bool = False) -> None:
        if self.failure is not None or self.closed_event is not None:
            return
        self.failure = Failed(message)
        self.client_closed = client_closed
        self.done.set()
        self._wake()

    def fail_consumer(self, message: str) -> None:
        if self.consumer_failure is None:
            self.consumer_failure = Failed(message)
            self.lagging = False
            self._wake()

    def _wake(self) -> None:
        changed, self._queue_changed = self._queue_changed, trio.Event()
        changed.set()

    def failure_error(self) -> ExecRuntimeError:
        """What ``wait()`` and ``run()`` raise for the failure."""
        assert self.failure is not None
        if self.client_closed:
            return ClientClosedError(self.failure.message)
        return ProcessFailed(self.failure.message)

    @property
    def ackable_seq(self) -> int:
        """What the daemon may forget: all that arrived, except what a consumer that
        fell behind its queue has not taken yet (it reads that back from the daemon,
        so the daemon must hold it, and pauses the process once its window is full)."""
        if self.lagging and self.consumer_active:
            return self.queued_seq
        return self.reorder.last_published_seq

    # --- called by the consumer ----------------------------------------------------

    def accept_caught_up(self, events: list[SeqEvent]) -> None:
        """Queue events a catch-up read rebuilt; leave lag once level with the network."""
        for event in events:
            if isinstance(event, Exited) and self.exit_event is None:
                self.exit_event = event  # rebuilt by the read: later catch-ups need its seq
            if event.seq == self.queued_seq + 1:
                self._queue.append(event)
                self._queue_bytes += len(event.data) if isinstance(event, Output) else 0
                self.queued_seq = event.seq
        if self.queued_seq >= self.reorder.last_published_seq:
            self.lagging = False

    async def next_event(self, catch_up: Callable[[], Awaitable[None]]) -> Event:
        while True:
            if self._queue:
                event = self._queue.popleft()
                if isinstance(event, Output):
                    self._queue_bytes -= len(event.data)
                return event
            if self.failure is not None:
                return self.failure
            if self.consumer_failure is not None:
                return self.consumer_failure
            if self.lagging:
                await catch_up()
                continue
            await self._queue_changed.wait()


class ProcessEvents:
    """The async iterator :meth:`ProcessHandle.events` returns.

    A class rather than an async generator: ``async for`` does not close an iterator it
    leaves (``break``, an exception in its body), and Trio finalizes an async generator
    abandoned that way only when it is garbage collected, with a ResourceWarning. This
    one holds nothing that needs closing. The consumer counts as gone (its backpressure
    on the process is released, see ``ProcessStream.ackable_seq``) once it reached the
    end, once ``__anext__`` raised (a cancel), on :meth:`aclose`, or when the iterator
    is garbage collected. A consumer that keeps the iterator after leaving the loop
    holds the process back until it calls :meth:`aclose` (``contextlib.aclosing``).

    The first ``__anext__`` makes it the process's one consumer (``RuntimeError`` if
    the process already has one); a second task calling ``__anext__`` while one waits
    in it gets ``trio.BusyResourceError``.
    """

    def __init__(self, handle: ProcessHandle) -> None:
        self._handle = handle
        self._stream = handle._stream
        self._active = False  # this iterator is the process's consumer
        self._done = False
        self._busy = False
        self._token: trio.lowlevel.TrioToken | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        if self._busy:
            raise trio.BusyResourceError("another task is already iterating these events")
        stream = self._stream
        if not self._active:
            if stream.consumed:
                self._done = True
                raise RuntimeError(
                    f"events() of process {stream.process_id} is already consumed"
                )
            stream.consumed = True
            stream.consumer_active = True
            self._active = True
            self._token = trio.lowlevel.current_trio_token()
        self._busy = True
        try:
            event = await stream.next_event(self._handle._catch_up)
        except BaseException:
            self._finish()
            raise
        finally:
            self._busy = False
        if isinstance(event, Closed | Failed):
            self._finish()
        return event

    async def aclose(self) -> None:
        """Stop consuming: later ``__anext__`` calls end the iteration at once."""
        self._finish()
        await trio.lowlevel.checkpoint()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self._active:
                _consumer_gone(self._handle._client, self._stream)

    def __del__(self) -> None:
        if self._active and not self._done and self._token is not None:
            # Garbage collected (maybe in another thread): release from the run loop.
            try:
                self._token.run_sync_soon(_consumer_gone, self._handle._client, self._stream)
            except trio.RunFinishedError:
                pass


def _consumer_gone(client: ExecClient, stream: ProcessStream) -> None:
    stream.consumer_active = False
    if stream.lagging:  # what it held back is nobody's to read now
        client._ack_consumed(stream)


class ProcessHandle:
    """A started process. Iterate :meth:`events` for its output; :meth:`wait` for the code.

    Events come in seq order, each once: ``Output`` …, ``Exited``, more ``Output`` if a
    grandchild held the pipe, then ``Closed``; or a terminal ``Failed``.
    """

    def __init__(
        self,
        client: ExecClient,
        stream: ProcessStream,
        sandbox_type: str = "none",
        *,
        stdin_open: bool = True,
    ) -> None:
        self._client = client
        self._stream = stream
        self._stdin_open = stdin_open  # started with pipe_stdin=True, or in a tty
        self.process_id = stream.process_id
        self.sandbox_type = sandbox_type
        """``"linuxSeccomp"`` when the daemon confined the process, else ``"none"``."""

    def __repr__(self) -> str:
        return f"<ProcessHandle {self.process_id!r}>"

    def events(self) -> ProcessEvents:
        """Yield every event once, in seq order; ends after ``Closed`` or ``Failed``.

        One consumer per process. If it falls behind the bounded buffer, the client
        fetches what it missed with ``process/read`` (no loss while retained). See
        :class:`ProcessEvents` for leaving it early.
        """
        return ProcessEvents(self)

    async def _catch_up(self) -> None:
        stream = self._stream
        message = f"process {self.process_id}: "
        try:
            result = await self._client._read(self.process_id, stream.queued_seq)
        except ProtocolError as exc:
            # The daemon no longer knows the process (its closed TTL passed, or the
            # session ended): what this consumer missed is gone, and if it had not
            # closed, nothing can follow it any more.
            if stream.closed_event is None:
                await self._client._fail_process(stream, message + exc.message)
            else:
                self._client._fail_consumer(stream, message + exc.message)
            return
        known_exit = stream.exit_event.seq if stream.exit_event is not None else None
        try:
            events = events_after(stream.queued_seq, result, known_exit)
        except GapLost as exc:
            # Evicted before this consumer took it (it came late, or lagged with
            # acknowledgements off): only the consumer fails. The process runs on,
            # its exit and close still arrive, and wait() has the exit code.
            self._client._fail_consumer(stream, message + str(exc))
            return
        stream.accept_caught_up(events)
        self._client._ack_consumed(stream)  # the daemon may be paused, waiting for it

    async def wait(self) -> int:
        """The exit code as the wire reports it (128+N for a death by signal N, as a
        shell's ``$?``), once the process is closed. ``run()`` reports such a death as
        subprocess does (``-N``)."""
        await self._stream.done.wait()
        if self._stream.failure is not None:
            raise self._stream.failure_error()
        assert self._stream.exit_event is not None
        return self._stream.exit_event.exit_code

    @property
    def returncode(self) -> int | None:
        event = self._stream.exit_event
        return None if event is None else event.exit_code

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write to the process's stdin (``TypeError`` for a ``str``: encode it).
        :class:`StdinClosedError` if stdin is closed, or was never a pipe (started
        without ``pipe_stdin=True`` nor ``tty=True``)."""
        await self._write(check_bytes(data, "data"), close=False)

    async def close_stdin(self) -> None:
        await self._write(b"", close=True)

    async def _write(self, data: bytes, close: bool) -> None:
        if not self._stdin_open:
            raise StdinClosedError(
                f"process {self.process_id} has no stdin to write to: it was started "
                "without pipe_stdin=True (or tty=True)"
            )
        status = await self._client._write(self.process_id, data, uuid.uuid4().hex, close)
        if status == "stdinClosed":
            raise StdinClosedError(f"stdin of process {self.process_id} is closed")
        if status != "accepted":
            raise ExecRuntimeError(f"write to process {self.process_id}: {status}")

    async def send_signal(self, sig: signal.Signals | int | str) -> None:
        """Send ``sig`` to the process group (a tty's foreground job too), as
        ``Popen.send_signal``: a ``signal.Signals``, an int, or a name (``"SIGTERM"``,
        ``"TERM"``, or the wire's ``"terminate"``). The protocol carries SIGINT,
        SIGTERM, SIGKILL and SIGHUP; any other is a ``ValueError`` listing them, raised
        before anything is sent. A no-op once the process exited."""
        await self._client._signal(self.process_id, signal_name(sig))

    async def signal(self, signal: signal.Signals | int | str) -> None:
        """The same as :meth:`send_signal` (kept for the wire's names: ``"interrupt"``,
        ``"terminate"``, ``"kill"``, ``"hangup"``)."""
        await self.send_signal(signal)

    async def terminate(self) -> None:
        """SIGTERM the process group, as ``Popen.terminate``: the process may catch it.
        Use :meth:`kill` to be sure it ends."""
        await self.send_signal(signal.SIGTERM)

    async def kill(self) -> bool:
        """SIGKILL the process group (a tty's whole session), as ``Popen.kill``; wire
        ``process/terminate``. Returns whether the process was still running."""
        return await self._client._terminate(self.process_id)

    async def resize(self, rows: int, cols: int) -> None:
        """Set a tty process's window size (each 1-65535; ``ProtocolError`` -32600 for
        a process without a tty)."""
        check_tty_size((rows, cols))
        await self._client._resize(self.process_id, rows, cols)


__all__ = ["ProcessEvents", "ProcessHandle", "ProcessStream", "StdinClosedError"]
