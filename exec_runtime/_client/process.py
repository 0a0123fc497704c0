"""Process handles, and the I/O shell around the client's view of one process.

The cursors, the bounded queue, lag and its catch-up merge are pure logic in
``_core/client_stream.py`` (:class:`ClientStream`); :class:`ProcessStream` adds what
tasks wait on. A handle talks to its client only through :class:`~.link.ProcessLink`.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Self

import trio

from .._core.client_stream import QUEUE_MAX_BYTES as _CORE_QUEUE_MAX_BYTES
from .._core.client_stream import QUEUE_MAX_EVENTS as _CORE_QUEUE_MAX_EVENTS
from .._core.client_stream import ClientStream, Reader
from .._core.events import Closed, Event, Failed
from .._core.recovery import GapLost
from .._errors import ClientClosedError, ExecRuntimeError, ProcessFailed, ProtocolError
from .args import check_bytes, check_tty_size, signal_name

if TYPE_CHECKING:
    from .link import ProcessLink

QUEUE_MAX_EVENTS: Final = _CORE_QUEUE_MAX_EVENTS
"""Each stream's consumer queue bound (read when a stream is made: tests lower it)."""
QUEUE_MAX_BYTES: Final = _CORE_QUEUE_MAX_BYTES


class StdinClosedError(ExecRuntimeError):
    """The process's stdin is closed (or was never a pipe)."""


class ProcessStream(ClientStream):
    """Everything the client tracks for one process id: the pure :class:`ClientStream`
    plus the Trio events its tasks wait on, and the client's bookkeeping."""

    def __init__(self, process_id: str, *, hold_output: bool = False) -> None:
        super().__init__(
            process_id,
            max_queue_events=QUEUE_MAX_EVENTS,
            max_queue_bytes=QUEUE_MAX_BYTES,
            hold_output=hold_output,
        )
        self.started = False
        self.client_closed = False  # the failure is the client's closing
        self.owned_by_run = False  # run() consumes it and promises its end
        self.done = trio.Event()  # set on Closed or Failed: the exit code is known or never
        self._queue_changed = trio.Event()

    def _changed(self) -> None:
        if self.finished:
            self.done.set()  # a lagging consumer catches up alone
        changed, self._queue_changed = self._queue_changed, trio.Event()
        changed.set()

    def fail(self, message: str, *, client_closed: bool = False) -> bool:
        if self.finished:
            return False
        self.client_closed = client_closed
        return super().fail(message)

    def failure_error(self) -> ExecRuntimeError:
        """What ``wait()`` and ``run()`` raise for the failure."""
        assert self.failure is not None
        if self.client_closed:
            return ClientClosedError(self.failure.message)
        return ProcessFailed(self.failure.message)

    # --- called by the consumer ----------------------------------------------------

    async def next_event(self, catch_up: Callable[[], Awaitable[None]]) -> Event:
        while True:
            event = self.take()
            if event is not None:
                return event
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
    on the process is released, see ``ClientStream.ackable_seq``) once it reached the
    end, once ``__anext__`` raised (a cancel), on :meth:`aclose`, or when the iterator
    is garbage collected. A consumer that keeps the iterator after leaving the loop
    holds the process back until it calls :meth:`aclose` (``contextlib.aclosing``).

    The first ``__anext__`` makes it the process's one consumer (``RuntimeError`` if
    the process already has one); a second task calling ``__anext__`` while one waits
    in it gets ``trio.BusyResourceError``.
    """

    def __init__(self, link: ProcessLink, stream: ProcessStream) -> None:
        self._link = link
        self._stream = stream
        self._active = False  # this iterator is the process's consumer
        self._done = False
        self._busy = False
        self._token: trio.lowlevel.TrioToken | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        """The next event; waits for it (catching up with ``process/read`` after a
        lag). ``StopAsyncIteration`` after ``Closed`` or ``Failed``."""
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
            event = await stream.next_event(self._catch_up)
        except BaseException:
            self._finish()
            raise
        finally:
            self._busy = False
        if isinstance(event, Closed | Failed):
            self._finish()
        elif stream.hold_output:
            self._link.consumed(stream, now=False)  # taken: the daemon may let it go
        return event

    async def _catch_up(self) -> None:
        await _catch_up(self._link, self._stream)

    async def aclose(self) -> None:
        """Stop consuming: later ``__anext__`` calls end the iteration at once."""
        self._finish()
        await trio.lowlevel.checkpoint()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self._active:
                _consumer_gone(self._link, self._stream)

    def __del__(self) -> None:
        if self._active and not self._done and self._token is not None:
            # Garbage collected (maybe in another thread): release from the run loop.
            try:
                self._token.run_sync_soon(_consumer_gone, self._link, self._stream)
            except trio.RunFinishedError:
                pass


def _consumer_gone(link: ProcessLink, stream: ProcessStream) -> None:
    stream.consumer_active = False
    if stream.lagging or stream.hold_output:  # what it held back is nobody's to read now
        link.consumed(stream)


async def _catch_up(link: ProcessLink, stream: ProcessStream) -> None:
    """A lagging consumer emptied its queue: read what it missed from its own cursor
    and merge it (``ClientStream.catch_up``, the same merge as recovery's)."""
    message = f"process {stream.process_id}: "
    try:
        snapshot = await link.read(stream.process_id, stream.read_after(Reader.CONSUMER))
    except ProtocolError as exc:
        # The daemon no longer knows the process (its closed TTL passed, or the
        # session ended): what this consumer missed is gone, and if it had not
        # closed, nothing can follow it any more.
        if stream.closed_event is None:
            await link.fail_process(stream, message + exc.message)
        else:
            link.fail_consumer(stream, message + exc.message)
        return
    try:
        events = stream.catch_up(Reader.CONSUMER, snapshot)
    except GapLost as exc:
        # Evicted before this consumer took it (it came late, or lagged with
        # acknowledgements off): only the consumer fails. The process runs on,
        # its exit and close still arrive, and wait() has the exit code.
        link.fail_consumer(stream, message + str(exc))
        # Failing ended its lag: what it held back (the daemon may have paused the
        # process for it) is nobody's to read now.
        link.consumed(stream)
        return
    stream.accept_caught_up(events)
    link.consumed(stream)  # the daemon may be paused, waiting for it


class ProcessHandle:
    """A started process. Iterate :meth:`events` for its output; :meth:`wait` for the code.

    Events come in seq order, each once: ``Output`` …, ``Exited``, more ``Output`` if a
    grandchild held the pipe, then ``Closed``; or a terminal ``Failed``.

    Made by :meth:`ExecClient.start` (or ``run``); not constructed by hand.
    """

    def __init__(
        self,
        link: ProcessLink,
        stream: ProcessStream,
        sandbox_type: str = "none",
        *,
        stdin_open: bool = True,
    ) -> None:
        self._link = link
        self._stream = stream
        self._stdin_open = stdin_open  # started with pipe_stdin=True, or in a tty
        self.process_id = stream.process_id
        """The process id on the daemon (``start(process_id=...)`` or a random one)."""
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
        return ProcessEvents(self._link, self._stream)

    async def wait(self) -> int:
        """The exit code as the wire reports it (128+N for a death by signal N, as a
        shell's ``$?``), once the process is closed. ``run()`` reports such a death as
        subprocess does (``-N``). A process started with ``hold_output=True`` may be
        paused until a consumer of :meth:`events` takes its output: waiting alone does
        not release it. Raises :class:`ProcessFailed` (or ``ClientClosedError``) if the
        process can no longer be followed."""
        await self._stream.done.wait()
        if self._stream.failure is not None:
            raise self._stream.failure_error()
        assert self._stream.exit_event is not None
        return self._stream.exit_event.exit_code

    @property
    def returncode(self) -> int | None:
        """The exit code once the exit is known (as :meth:`wait` reports it), else
        None; as ``Popen.returncode``, it never waits."""
        event = self._stream.exit_event
        return None if event is None else event.exit_code

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write to the process's stdin (``TypeError`` for a ``str``: encode it).
        :class:`StdinClosedError` if stdin is closed, or was never a pipe (started
        without ``pipe_stdin=True`` nor ``tty=True``)."""
        await self._write(check_bytes(data, "data"), close=False)

    async def close_stdin(self) -> None:
        """Close the process's stdin: it reads EOF. A daemon that does not announce the
        ``closeStdin`` capability (Codex 0.147 ignores the member: stdin would stay open
        and the child wait for ever) gets nothing sent: :class:`ExecRuntimeError`."""
        if not self._link.closes_stdin:
            raise ExecRuntimeError(
                f"process {self.process_id}: the daemon cannot close stdin (it does not "
                "announce the closeStdin capability; Codex 0.147 ignores closeStdin)"
            )
        await self._write(b"", close=True)

    async def _write(self, data: bytes, close: bool) -> None:
        if not self._stdin_open:
            raise StdinClosedError(
                f"process {self.process_id} has no stdin to write to: it was started "
                "without pipe_stdin=True (or tty=True)"
            )
        status = await self._link.write(self.process_id, data, uuid.uuid4().hex, close)
        if status == "stdinClosed":
            raise StdinClosedError(f"stdin of process {self.process_id} is closed")
        if status == "unknownProcess":  # it ended, and the daemon forgot it (closed TTL)
            raise StdinClosedError(
                f"stdin of process {self.process_id} is closed: the process ended and the "
                "daemon no longer knows it"
            )
        if status != "accepted":
            raise ExecRuntimeError(f"write to process {self.process_id}: {status}")

    async def send_signal(self, sig: signal.Signals | int | str) -> None:
        """Send ``sig`` to the process group (a tty's foreground job too), as
        ``Popen.send_signal``: a ``signal.Signals``, an int, or a name (``"SIGTERM"``,
        ``"TERM"``, or the wire's ``"terminate"``). The protocol carries SIGINT,
        SIGTERM, SIGKILL and SIGHUP; any other is a ``ValueError`` listing them, raised
        before anything is sent. A no-op once the process exited."""
        await self._link.signal(self.process_id, signal_name(sig))

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
        return await self._link.terminate(self.process_id)

    async def resize(self, rows: int, cols: int) -> None:
        """Set a tty process's window size (each 1-65535; ``ProtocolError`` -32600 for
        a process without a tty)."""
        check_tty_size((rows, cols))
        await self._link.resize(self.process_id, rows, cols)


__all__ = ["ProcessEvents", "ProcessHandle", "ProcessStream", "StdinClosedError"]
