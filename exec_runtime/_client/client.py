"""ExecClient: calls, pushed events, zero-read completion, reconnect and replay (PROTOCOL §9).

Ownership: the client's nursery runs the supervisor task, which runs one *link* task
per connection (its own nursery holds the transport internals and the reader). The
reader never blocks: responses go to waiting calls, notifications to per-process
streams (``ProcessStream``, on the pure ``_core/client_stream.py``). When a link is lost
the supervisor recovers the same session, then catches every unfinished process up with
a ``process/read`` merged by ``ClientStream.catch_up`` (the merge a lagging consumer
uses too). Process handles and ``client.fs`` reach the client only through its
:class:`Port` (the interface in ``link.py``).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import math
import os
import signal
import subprocess
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import attrs
import msgspec
import trio
from opentelemetry.metrics import MeterProvider

import protocol_schema as wire

from .._core.client_stream import Reader
from .._core.events import Closed, Exited, Failed, Output, SeqEvent
from .._core.recovery import GapLost, ReadSnapshot
from .._core.redact import redact
from .._core.reorder import ReorderOverflow
from .._errors import (
    CalledProcessError,
    ClientClosedError,
    ExecRuntimeError,
    ProtocolError,
    SandboxDeniedError,
    SessionLostError,
    TimeoutExpired,
    TransportError,
    os_error_from,
)
from .._wire.sandbox_intent import Sandbox, sandbox_intent
from .._wire.tracing import current_carrier
from .._wire.transport import (
    CLIENT_MAX_MESSAGE_BYTES,
    MessageTooBig,
    MessageTransport,
    TransportClosed,
)
from .._wire.uris import uri_for_remote
from .args import (
    EnvPolicy,
    check_bool,
    check_bytes,
    check_timeout,
    start_fields,
)
from .fs import FsClient
from .metrics import ClientMetrics
from .process import ProcessHandle, ProcessStream, StdinClosedError

log = logging.getLogger("exec_runtime.client")
T = TypeVar("T")

RECOVERY_DEADLINE = 25.0
"""How long the client tries to resume its session after a drop before it fails."""
RETRY_INTERVAL = 0.1
"""Between reconnect attempts, and between ``initialize`` retries while the old
connection is still attached."""
RECOVERY_READS = 16
"""Catch-up reads in flight at once while a resumed session catches up (each answer may
bring up to the ack window of retained output)."""
GAP_GRACE = 0.05
"""How long a seq gap may wait for the live stream before a ``process/read`` fills it."""
ACK_BYTES = 1 << 20
ACK_EVENTS = 4096
"""Acknowledge received output (``process/ack``) once this much arrived unacknowledged:
a quarter of the daemon's default ack window (4 MiB), so it rarely waits for one."""
ACK_DELAY = 0.01
"""Otherwise within this long: a daemon with a smaller window, or a stream that went
quiet just short of the thresholds, is never left waiting."""

# A mutating request in flight when the link dies has an unknown outcome: never replay
# it. Everything else is safe to re-send after recovery (writes keep their writeId).
MUTATING = frozenset(
    {
        "process/start",
        "process/signal",
        "process/terminate",
        "process/resize",
        "fs/writeFile",
        "fs/createDirectory",
        "fs/remove",
        "fs/copy",
        "fs/open",
        "fs/close",
    }
)
DISCONNECTED = "exec-server transport disconnected"
DETACHED_SEND_BYTES = 256 * 1024
"""Requests this big are written by a task of the link's, which a cancel does not stop
half-way (``_Link._send_detached``); smaller ones rarely wait for the socket at all."""
CLOSE_KILL_TIMEOUT = 2.0
"""How long ``aclose()`` waits for the kills of the processes only it can stop."""
RUN_KILL_WAIT = 1.0
"""How long a cancelled or failed ``run()`` waits for its process's kill to be
answered before it leaves the kill to a background task (a stalled link)."""


class CompletedProcess(subprocess.CompletedProcess[bytes]):
    """What ``run()`` returns: a ``subprocess.CompletedProcess`` whose ``returncode``
    follows subprocess (``-N`` for a death by signal N), plus ``exit_code``, the code
    as the wire reported it (128+N for signal N)."""

    def __init__(
        self, args: list[str], returncode: int, stdout: bytes, stderr: bytes, *, exit_code: int
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.exit_code = exit_code


def subprocess_returncode(exit_code: int) -> int:
    """The wire's 128+N (N a signal number) as subprocess reports a death by signal
    N: ``-N``. The wire cannot tell it from ``exit(128+N)``; other codes unchanged."""
    if 128 < exit_code < 128 + signal.NSIG:
        return 128 - exit_code
    return exit_code


class ClientState(enum.Enum):
    """:attr:`ExecClient.state`."""

    CONNECTED = "connected"
    RECOVERING = "recovering"
    FAILED = "failed"
    CLOSED = "closed"


class Connector(Protocol):
    """Opens a fresh transport; the nursery hosts whatever tasks the transport needs."""

    async def connect(self, nursery: trio.Nursery) -> MessageTransport: ...


@attrs.frozen
class ClientStatistics:
    """:meth:`ExecClient.statistics`: counters since the client opened."""

    calls: dict[str, int]
    """Calls made, by method."""
    reconnects: int
    """Connections lost (each starts a recovery)."""
    recoveries: int
    """Sessions resumed."""
    events_published: int
    """Process events delivered in order (pushed or read back)."""
    gap_reads: int
    """``process/read`` calls that filled a gap, resumed, or caught a consumer up."""
    failed_processes: int
    """Processes (or their consumers) that ended in ``Failed``."""
    state: str
    """The :class:`ClientState` value."""


class _LinkLost(Exception):
    pass


class _ReplyTooBig(_LinkLost):
    """The link was lost because we refused an incoming message over our size limit,
    quite likely the reply to a call in flight: asking again would lose it again."""


class _PendingCall:
    __slots__ = ("done", "lost", "reply", "too_big")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: wire.IncomingMessage | None = None
        self.lost = False
        self.too_big = False


class _Link:
    """One live connection: its transport and the calls waiting on it."""

    def __init__(self, transport: MessageTransport, nursery: trio.Nursery) -> None:
        self.transport = transport
        self.codec = transport.codec
        self.nursery = nursery  # the link's own: it ends with the link
        self.pending: dict[int, _PendingCall] = {}
        self.lost = trio.Event()
        self.closed = trio.Event()  # the owning link task closed the transport

    def mark_lost(self, *, too_big: bool = False) -> None:
        self.lost.set()
        for call in self.pending.values():
            call.lost = True
            call.too_big = too_big
            call.done.set()
        self.pending.clear()

    async def send(self, message: Any) -> None:
        await self.send_many([message])

    async def send_many(self, messages: list[Any]) -> None:
        """Several messages, in order, in as few writes as the transport allows."""
        if self.lost.is_set():
            raise _LinkLost
        frames = [self.codec.encode(m) for m in messages]
        if sum(map(len, frames)) >= DETACHED_SEND_BYTES:
            await self._send_detached(frames)
            return
        try:
            await self.transport.send_messages(frames)
        except TransportClosed:
            self.mark_lost()
            raise _LinkLost from None

    async def _send_detached(self, frames: list[bytes]) -> None:
        """A big write, in a task of the link's: a cancel of the caller returns at once
        but does not cut the frame short. A frame cut off mid-way ends the connection
        (what follows would be read as its payload), and with it every other call in
        flight and the connection's fs handles."""
        sent = trio.Event()
        lost = False

        async def send() -> None:
            nonlocal lost
            try:
                await self.transport.send_messages(frames)
            except TransportClosed:
                lost = True
                self.mark_lost()
            finally:
                sent.set()

        self.nursery.start_soon(send)
        await sent.wait()
        if lost:
            raise _LinkLost


async def _feed_stdin(
    proc: ProcessHandle, data: bytes, errors: list[ExecRuntimeError], nursery: trio.Nursery
) -> None:
    """``run(input=...)``: write it all, then close stdin."""
    try:
        if data:
            await proc.write(data)
        await proc.close_stdin()
    except StdinClosedError:
        pass  # exited or closed stdin before reading it all: not an error (subprocess.run)
    except ExecRuntimeError as exc:
        errors.append(exc)
        nursery.cancel_scope.cancel()


class _NoPublicConstructor(type):
    """trio's ``NoPublicConstructor``: ``ExecClient(...)`` raises ``TypeError``; the
    openers build one with the private ``ExecClient._create(...)``."""

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"exec_runtime.{cls.__qualname__} has no public constructor: connect with "
            "`async with exec_runtime.open_client(url) as client:` (or open_local())"
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc,no-any-return]


class ExecClient(metaclass=_NoPublicConstructor):
    """Run processes through an exec daemon.

    Get one from ``async with open_client(url)`` (or ``open_local()``): the opener owns
    the client's tasks and closes it on the way out; ``ExecClient(...)`` raises
    ``TypeError``.
    """

    def __init__(
        self,
        connector: Connector,
        nursery: trio.Nursery,
        *,
        client_name: str = "exec-runtime",
        recovery_deadline: float = RECOVERY_DEADLINE,
        retry_interval: float = RETRY_INTERVAL,
        ack_output: bool = True,
        meter_provider: MeterProvider | None = None,
        final_read: bool = False,
    ) -> None:
        """Private: ``ExecClient._create(...)``; ``final_read`` is the wide-area
        benchmark's A/B switch (``run()`` makes one ``process/read`` before it returns)."""
        self._connector = connector
        self._nursery = nursery
        self.client_name = client_name
        """The name sent in ``initialize`` (the daemon logs it)."""
        self._recovery_deadline = recovery_deadline
        self._retry_interval = retry_interval
        self._ack_output = ack_output
        self._daemon_takes_acks = False  # known once connected: the daemon's capabilities
        self._daemon_closes_stdin = True  # likewise: False for Codex, which ignores closeStdin
        self._final_read = final_read  # benchmark A/B only: one read before returning
        self._metrics = ClientMetrics(meter_provider)  # exec_client_* (``_client/metrics.py``)
        self._ids = itertools.count(1)
        self._link: _Link | None = None
        self._state = ClientState.RECOVERING
        self._state_changed = trio.Event()
        self._recovery: trio.CancelScope | None = None  # while the supervisor recovers
        self._failure: ExecRuntimeError | None = None
        self._streams: dict[str, ProcessStream] = {}
        self._gapped: set[str] = set()
        self._gap_wakeup = trio.Event()
        self._calls: Counter[str] = Counter()
        self._reconnects = 0
        self._recoveries = 0
        self._events_published = 0
        self._gap_reads = 0
        self._failed_processes = 0
        self._ack_due: dict[str, int] = {}
        """Process id -> the seq to acknowledge next (everything up to it arrived)."""
        self._ack_wakeup = trio.Event()  # something is due
        self._ack_now = trio.Event()  # ... and enough of it to send at once
        self.session_id: str | None = None
        """The daemon's session id, once connected; a resume keeps it."""
        self.environment: wire.EnvironmentInfo | None = None
        """The daemon host's environment from the last ``initialize`` (cwd, shell, OS,
        capabilities); :meth:`environment_info` asks again."""
        self._port = Port(self)
        self.fs = FsClient(self._port)
        """Filesystem methods on the daemon's host (PROTOCOL §8)."""

    # --- public API ---------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """``CONNECTED``; ``RECOVERING`` while it resumes the session after a drop
        (calls wait for it); ``FAILED`` once it gave up (calls raise
        :class:`ClientClosedError` naming why); ``CLOSED`` after :meth:`aclose`."""
        return self._state

    def statistics(self) -> ClientStatistics:
        """Counters since the client opened (calls by method, reconnects, recoveries,
        events published, gap reads, failed processes) and the state; a snapshot."""
        return ClientStatistics(
            calls=dict(self._calls),
            reconnects=self._reconnects,
            recoveries=self._recoveries,
            events_published=self._events_published,
            gap_reads=self._gap_reads,
            failed_processes=self._failed_processes,
            state=self._state.value,
        )

    async def start(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        env_policy: EnvPolicy | wire.EnvPolicy | Mapping[str, Any] | None = None,
        tty: bool = False,
        pipe_stdin: bool = False,
        process_id: str | None = None,
        tty_size: tuple[int, int] | None = None,
        arg0: str | None = None,
        sandbox: Sandbox | wire.SandboxIntent | Mapping[str, Any] | None = None,
        hold_output: bool = False,
    ) -> ProcessHandle:
        """Start a process and return its handle; its events are pushed from now on.

        With neither ``env`` nor ``env_policy``, the child inherits the daemon's
        environment minus names matching ``*KEY*``, ``*SECRET*``, ``*TOKEN*``,
        ``*PASSWORD*``. ``env`` alone is the exact environment; with ``env_policy`` it
        is an overlay.

        ``sandbox`` (a :class:`Sandbox`, or the raw Codex dict) asks the daemon to
        confine the command; it refuses (``ProtocolError`` -32602) rather than run it
        unconfined. ``handle.sandbox_type`` says how it was confined.

        Every argument is checked first: a mistake is a ``TypeError`` or ``ValueError``
        and nothing is sent (``env_policy`` is an :class:`EnvPolicy` or a dict of its
        fields, snake_case or camelCase; ``tty_size`` needs ``tty=True``). A command
        that is missing or cannot be executed, or a bad ``cwd``, raises the matching
        ``OSError`` (:class:`RemoteFileNotFoundError`, ... also ``ProtocolError``).

        Output is acknowledged as it arrives (``open_client(ack_output=True)``), so the
        daemon may forget it before ``events()`` reads it: a consumer that comes later
        than the daemon's retention window gets a ``Failed`` instead. With
        ``hold_output=True`` the client acknowledges output only once a consumer of
        ``events()`` takes it: the daemon holds the rest, and pauses the process when
        its window (``serve --ack-window-bytes``) is full, so a late consumer gets
        everything. Until a consumer comes, or if none ever does, such a process may
        stay paused (``wait()`` alone then waits for ever); a consumer that leaves
        ``events()`` early releases it. Needs acknowledgements: a daemon that takes
        them (``processAck``, ours; Codex has none and evicts as usual) and
        ``ack_output=True`` (the default); without them it changes nothing.
        """
        handle, _stream = await self._start(
            argv,
            cwd=cwd,
            env=env,
            env_policy=env_policy,
            tty=tty,
            pipe_stdin=pipe_stdin,
            process_id=process_id,
            tty_size=tty_size,
            arg0=arg0,
            sandbox=sandbox,
            hold_output=hold_output,
        )
        return handle

    async def _start(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None,
        env_policy: EnvPolicy | wire.EnvPolicy | Mapping[str, Any] | None,
        tty: bool,
        pipe_stdin: bool,
        process_id: str | None,
        tty_size: tuple[int, int] | None,
        arg0: str | None,
        sandbox: Sandbox | wire.SandboxIntent | Mapping[str, Any] | None,
        hold_output: bool,
    ) -> tuple[ProcessHandle, ProcessStream]:
        """``start()``, returning the handle's stream too (for ``run()``)."""
        # Every argument is checked before anything is sent: TypeError / ValueError.
        check_bool(hold_output, "hold_output")
        fields = start_fields(
            argv,
            cwd=cwd,
            env=env,
            env_policy=env_policy,
            tty=tty,
            pipe_stdin=pipe_stdin,
            process_id=process_id,
            tty_size=tty_size,
            arg0=arg0,
        )
        intent = sandbox_intent(sandbox)
        if self._state in (ClientState.FAILED, ClientState.CLOSED):
            raise self._closed_error()
        process_id = process_id or os.urandom(16).hex()  # as unique as uuid4, cheaper
        if process_id in self._streams:
            raise ValueError(f"process id {process_id!r} is already in use by this client")
        params = wire.ProcessStartParams(
            process_id=process_id,
            argv=fields.argv,
            cwd=self._cwd_uri(fields.cwd),
            env=fields.env if fields.env is not None else {},
            tty=tty,
        )
        if fields.env_policy is not None:
            params.env_policy = fields.env_policy
        if pipe_stdin:
            params.pipe_stdin = True
        if arg0 is not None:
            params.arg0 = arg0
        if fields.tty_size is not None:
            rows, cols = fields.tty_size
            params.tty_size = wire.TtySize(rows=rows, cols=cols)
        if intent is not None:
            params.sandbox = intent
        # Register first: the process's events may arrive before the start response.
        stream = ProcessStream(process_id, hold_output=hold_output)
        self._streams[process_id] = stream
        sent = False

        def on_send() -> None:
            nonlocal sent
            sent = True

        try:
            result = await self._call(
                "process/start", params, wire.ProcessStartResult, on_send=on_send
            )
        except BaseException as exc:
            self._streams.pop(process_id, None)
            if sent and (not isinstance(exc, ExecRuntimeError) or isinstance(exc, TransportError)):
                # Cancelled after the request went out, or the link died with it in
                # flight: the process may be starting or running already, and nobody
                # else knows its id. Kill it, in the background so the cancel takes
                # effect now (a no-op if the start never arrived; a start still in
                # progress is cancelled; after a drop, it waits for the resume).
                self._nursery.start_soon(self._terminate_quietly, process_id)
            if isinstance(exc, ExecRuntimeError) and self._is_closed():
                raise self._closed_error() from None  # aclose() cancelled the start
            if isinstance(exc, ProtocolError) and (mapped := os_error_from(exc)) is not exc:
                # A missing command, a bad cwd: FileNotFoundError & co., as subprocess.
                raise mapped from None
            raise
        if self._is_closed():
            # Closed while the reply was on its way: aclose() killed the process.
            raise self._closed_error()
        stream.started = True
        stdin_open = pipe_stdin or tty
        handle = ProcessHandle(self._port, stream, result.sandbox_type, stdin_open=stdin_open)
        return handle, stream

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        env_policy: EnvPolicy | wire.EnvPolicy | Mapping[str, Any] | None = None,
        tty: bool = False,
        input: bytes | bytearray | memoryview | None = None,
        pipe_stdin: bool = False,
        check: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 (as subprocess.run)
        tty_size: tuple[int, int] | None = None,
        arg0: str | None = None,
        sandbox: Sandbox | wire.SandboxIntent | Mapping[str, Any] | None = None,
        task_status: trio.TaskStatus[ProcessHandle] = trio.TASK_STATUS_IGNORED,
    ) -> CompletedProcess:
        """Run to completion, like ``trio.run_process`` with captured output.

        Completes from pushed events alone. Cancelling it kills the process group.
        ``check=True`` raises :class:`CalledProcessError` (a
        ``subprocess.CalledProcessError``) on a non-zero exit
        (:class:`SandboxDeniedError`, a subclass, when the sandbox stopped it).
        A PTY's output is returned as stdout. As in subprocess, ``returncode`` is
        ``-N`` for a death by signal N (the wire's 128+N is ``exit_code``; the wire
        cannot tell it from ``exit(128+N)``, so codes 129 to 128+NSIG read as signals).

        ``timeout`` (seconds, from the call): past it the process group is killed
        and :class:`TimeoutExpired` is raised (a ``subprocess.TimeoutExpired`` and a
        ``TimeoutError``, with the output so far), whatever ``check`` says.
        ``input`` must be bytes. Every argument is checked before anything is sent.

        As with ``trio.run_process``, ``await nursery.start(client.run, argv)`` returns
        the :class:`ProcessHandle` once the process runs, to signal, resize or (with
        ``pipe_stdin=True``) write to it, while the process lives no longer than the
        nursery. Its events are this call's to consume.
        """
        data = None if input is None else check_bytes(input, "input")
        check_bool(check, "check")
        limit = check_timeout(timeout)
        if data is not None and pipe_stdin:
            raise ValueError("input and pipe_stdin exclude each other: input closes stdin")
        deadline = math.inf if limit is None else trio.current_time() + limit
        with trio.CancelScope(deadline=deadline) as start_scope:
            # _start() checks the other arguments, and kills a start it gave up on.
            proc, stream = await self._start(
                argv,
                cwd=cwd,
                env=env,
                env_policy=env_policy,
                tty=tty,
                pipe_stdin=pipe_stdin or data is not None,
                process_id=None,
                tty_size=tty_size,
                arg0=arg0,
                sandbox=sandbox,
                hold_output=False,
            )
        if start_scope.cancelled_caught:
            assert limit is not None
            raise TimeoutExpired(list(argv), limit)
        stream.owned_by_run = True  # aclose() kills it with the run in flight
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        failure: list[str] = []
        denied = False
        feed_errors: list[ExecRuntimeError] = []
        try:
            task_status.started(proc)
            with trio.CancelScope(deadline=deadline) as scope:
                async with trio.open_nursery() as nursery:
                    if data is not None:
                        # Fed while the output is consumed (as subprocess's communicate
                        # does): a child that echoes its input never waits on us.
                        nursery.start_soon(_feed_stdin, proc, data, feed_errors, nursery)
                    async for event in proc.events():
                        if isinstance(event, Output):
                            (stderr if event.stream == "stderr" else stdout).append(event.data)
                        elif isinstance(event, Exited):
                            denied = event.sandbox_denied
                        elif isinstance(event, Failed):
                            failure.append(event.message)
                    nursery.cancel_scope.cancel()  # closed: its stdin is of no use now
            if scope.cancelled_caught:  # the process is killed on the way out
                assert limit is not None
                raise TimeoutExpired(list(argv), limit, b"".join(stdout), b"".join(stderr))
            if feed_errors:
                raise feed_errors[0]
            if failure:
                raise stream.failure_error()
        except BaseException:
            confirmed = False
            with trio.CancelScope(shield=True), trio.move_on_after(RUN_KILL_WAIT):
                try:
                    await proc.kill()
                    confirmed = True
                except ClientClosedError:
                    confirmed = True  # aclose() kills a run's process itself
                except ExecRuntimeError:
                    pass
            if not confirmed:
                # No answer in time (a stalled link) or the link dropped: the cancel
                # takes effect now and the kill goes on, after a resume if need be.
                with contextlib.suppress(RuntimeError):  # the client has ended
                    self._nursery.start_soon(self._terminate_quietly, proc.process_id)
            raise
        if self._final_read:
            await self._read(proc.process_id, 0, wait_ms=0)
        exit_code = await proc.wait()
        returncode = subprocess_returncode(exit_code)
        out, err = b"".join(stdout), b"".join(stderr)
        if check and exit_code != 0:
            error = SandboxDeniedError if denied else CalledProcessError
            raise error(returncode, list(argv), out, err, exit_code=exit_code)
        return CompletedProcess(list(argv), returncode, out, err, exit_code=exit_code)

    async def environment_info(self) -> wire.EnvironmentInfo:
        """Ask the daemon for its host's environment now (``environment/info``: cwd,
        shell, OS, capabilities); :attr:`environment` holds the answer from connecting."""
        return await self._call("environment/info", wire.EmptyParams(), wire.EnvironmentInfo)

    async def aclose(self) -> None:
        """Close the connection. Processes keep running until the session's TTL, but
        those of a ``run()`` or a ``start()`` still in progress are killed first (nobody
        could stop them later). Calls in other tasks fail with ClientClosedError, and
        ``events()`` consumers get a terminal Failed."""
        link = self._link
        if self._state not in (ClientState.FAILED, ClientState.CLOSED):
            connected = self._state is ClientState.CONNECTED
            self._set_state(ClientState.CLOSED)
            if self._recovery is not None:
                self._recovery.cancel()
            doomed = [
                s.process_id for s in self._streams.values() if s.owned_by_run or not s.started
            ]
            for stream in self._streams.values():
                if stream.started:  # a start in progress raises ClientClosedError itself
                    stream.fail("the client is closed", client_closed=True)
            self._streams.clear()
            self._gapped.clear()
            if connected and link is not None and doomed:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_KILL_TIMEOUT):
                    async with trio.open_nursery() as nursery:
                        for process_id in doomed:
                            nursery.start_soon(self._terminate_on, link, process_id)
        if link is not None:
            # The link task closes the transport (a graceful close needs its reader
            # task alive until the peer's close frame arrives); wait for it.
            link.mark_lost()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await link.closed.wait()

    async def _terminate_on(self, link: _Link, process_id: str) -> None:
        """``process/terminate`` on this link, whatever the client's state; never raises."""
        self._calls["process/terminate"] += 1
        self._metrics.call("process/terminate")
        params = wire.ProcessTerminateParams(process_id=process_id)
        try:
            await self._call_on(link, "process/terminate", params, wire.ProcessTerminateResult)
        except (ExecRuntimeError, _LinkLost):
            pass

    # --- calls --------------------------------------------------------------------

    def _is_closed(self) -> bool:
        return self._state is ClientState.CLOSED

    def _closed_error(self) -> ExecRuntimeError:
        if self._state is ClientState.FAILED and self._failure is not None:
            return ClientClosedError(f"the client failed: {self._failure}")
        return ClientClosedError("the client is closed")

    def _cwd_uri(self, cwd: str | os.PathLike[str] | None) -> str:
        if cwd is None:
            return uri_for_remote(self.environment.cwd if self.environment else os.getcwd())
        return uri_for_remote(cwd)

    async def _connected_link(self) -> _Link:
        while True:
            link = self._link
            # A lost link may still be current until the supervisor runs: wait for the
            # state change rather than retrying on it (a retry loop that never yields).
            if self._state is ClientState.CONNECTED and link is not None and not link.lost.is_set():
                return link
            if self._state in (ClientState.FAILED, ClientState.CLOSED):
                raise self._closed_error()
            await self._state_changed.wait()

    async def _call(
        self,
        method: str,
        params: Any,
        result_type: type[T],
        *,
        on_send: Callable[[], None] | None = None,
    ) -> T:
        """Call on the current link; ``on_send`` runs when the request may reach the daemon."""
        self._calls[method] += 1
        self._metrics.call(method)
        while True:
            link = await self._connected_link()
            if on_send is not None:
                on_send()
            try:
                return await self._call_on(link, method, params, result_type)
            except _ReplyTooBig:
                raise TransportError(
                    f"{method}: the connection closed on a message over the client's "
                    f"{CLIENT_MAX_MESSAGE_BYTES}-byte limit, most likely this call's reply; "
                    "not asked again"
                ) from None
            except _LinkLost:
                if self._state in (ClientState.FAILED, ClientState.CLOSED):
                    raise self._closed_error() from None  # closed under it, nothing dropped
                if method in MUTATING:
                    raise TransportError(DISCONNECTED) from None
                # Reads are idempotent and writes carry their writeId: retry after recovery.

    async def _call_on(self, link: _Link, method: str, params: Any, result_type: type[T]) -> T:
        request_id, call = await self._send_call(link, method, params)
        return await self._reply_to(link, request_id, call, method, result_type)

    async def _send_call(
        self, link: _Link, method: str, params: Any
    ) -> tuple[int, _PendingCall]:
        """Send a request on ``link``; its reply is awaited with ``_reply_to``."""
        request_id = next(self._ids)
        call = _PendingCall()
        link.pending[request_id] = call
        try:
            trace = current_carrier()  # the host's active span, if any: the daemon joins it
            await link.send(wire.Request(id=request_id, method=method, params=params, trace=trace))
        except BaseException:
            link.pending.pop(request_id, None)
            raise
        return request_id, call

    async def _reply_to(
        self, link: _Link, request_id: int, call: _PendingCall, method: str, result_type: type[T]
    ) -> T:
        try:
            await call.done.wait()
        finally:
            link.pending.pop(request_id, None)
        if call.too_big:
            raise _ReplyTooBig
        if call.lost or call.reply is None:
            raise _LinkLost
        reply = call.reply
        if reply.error is not None:
            raise ProtocolError(reply.error.code, reply.error.message, reply.error.data)
        try:
            return link.codec.decode(reply.result, result_type)
        except wire.InvalidParams as exc:
            raise ProtocolError(
                wire.errors.INTERNAL_ERROR, f"bad {method} result from the daemon: {exc}"
            ) from None

    async def _read(self, process_id: str, after_seq: int, wait_ms: int = 0) -> ReadSnapshot:
        self._gap_reads += 1
        self._metrics.gap_reads.add(1)
        result = await self._call(
            "process/read",
            wire.ProcessReadParams(process_id=process_id, after_seq=after_seq, wait_ms=wait_ms),
            wire.ProcessReadResult,
        )
        return _snapshot(result)

    async def _terminate(self, process_id: str) -> bool:
        result = await self._call(
            "process/terminate",
            wire.ProcessTerminateParams(process_id=process_id),
            wire.ProcessTerminateResult,
        )
        return result.running

    # --- events -------------------------------------------------------------------

    def _on_notification(self, link: _Link, message: wire.IncomingMessage) -> None:
        method = message.method
        params_type = wire.NOTIFICATIONS.get(method or "")
        if params_type is None or method in (wire.INITIALIZED, wire.PROCESS_ACK):
            log.debug("ignoring notification %r", method)
            return
        try:
            params: Any = link.codec.decode(message.params, params_type)
        except wire.InvalidParams as exc:
            log.warning("ignoring a malformed %s notification: %s", method, exc)
            return
        if isinstance(params, wire.ProcessOutputParams):
            self._on_output(params)
            return
        stream = self._streams.get(params.process_id)
        if stream is None:
            return  # finished, or not ours
        event: SeqEvent
        if isinstance(params, wire.ProcessExitedParams):
            if params.sandbox_denied is msgspec.UNSET:
                # A legacy exit: only a read says whether the sandbox denied it, so the
                # exit waits for one (the gap filler rebuilds it from the read's result).
                stream.legacy_exit = Exited(params.seq, params.exit_code, False)
                self._mark_gapped(stream)
                return
            event = Exited(params.seq, params.exit_code, params.sandbox_denied)
        else:
            event = Closed(params.seq)
        self._deliver(stream, [event])

    def _on_output(self, params: wire.ProcessOutputParams) -> None:
        stream = self._streams.get(params.process_id)
        if stream is not None:  # else finished, or not ours
            self._deliver(stream, [Output(params.seq, params.stream, params.chunk)])

    def _deliver(self, stream: ProcessStream, events: list[SeqEvent]) -> None:
        try:
            published = stream.push_many(events)
        except ReorderOverflow as exc:
            self._events_published += len(exc.published)
            if not self._daemon_takes_acks:
                self._fail_process_soon(stream, f"process {stream.process_id}: {exc}")
                return
            # The daemon holds all that was not acknowledged, which is everything from
            # the gap on: let go of what is held past it, and read it back instead.
            stream.reorder.discard_pending()
            self._mark_gapped(stream)
            if exc.published and self._ack_output:
                self._note_received(stream, exc.published)
            return
        self._events_published += len(published)
        if stream.done.is_set():
            self._streams.pop(stream.process_id, None)
            self._gapped.discard(stream.process_id)
            if self._daemon_takes_acks and stream.closed_event is not None:
                # The last ack lets the daemon trim what it holds for the closed
                # process back to its retention limit now, not at the closed TTL
                # (or, for a lagging consumer, once it caught up: _ack_consumed).
                self._ack_due[stream.process_id] = stream.ackable_seq
                self._ack_wakeup.set()
            else:
                self._ack_due.pop(stream.process_id, None)
            return
        if stream.reorder.pending_count:
            self._mark_gapped(stream)
        if published and self._ack_output:
            self._note_received(stream, published)

    def _note_received(self, stream: ProcessStream, published: list[SeqEvent]) -> None:
        """Schedule a ``process/ack`` for what arrived (the daemon holds it until then)."""
        seq = stream.note_received(published)
        if seq is None:
            return  # a consumer holds the acks back
        self._ack_due[stream.process_id] = seq
        if stream.unacked_bytes >= ACK_BYTES or stream.unacked_events >= ACK_EVENTS:
            self._ack_now.set()
        self._ack_wakeup.set()

    def _ack_consumed(self, stream: ProcessStream, *, now: bool = True) -> None:
        """A consumer took output (``hold_output``), caught up, or stopped consuming:
        acknowledge what it had held back (``now``: at once, the daemon may have paused
        the process for it)."""
        if self._daemon_takes_acks and stream.ackable_seq > stream.acked_seq:
            self._ack_due[stream.process_id] = stream.ackable_seq
            if now:
                self._ack_now.set()
            self._ack_wakeup.set()

    async def _send_acks(self, link: _Link) -> None:
        """Background, per link: send the due acknowledgements, batched."""
        while True:
            await self._ack_wakeup.wait()
            with trio.move_on_after(ACK_DELAY):
                await self._ack_now.wait()
            self._ack_wakeup, self._ack_now = trio.Event(), trio.Event()
            due, self._ack_due = self._ack_due, {}
            acks = []
            for process_id, seq in due.items():
                stream = self._streams.get(process_id)
                if stream is not None:
                    stream.acked(seq)
                params = wire.ProcessAckParams(process_id=process_id, seq=seq)
                acks.append(wire.Notification(method=wire.PROCESS_ACK, params=params))
            if not acks:
                continue
            try:
                await link.send_many(acks)  # one write for all of them
            except _LinkLost:
                return  # after a resume, its process/read says as much

    def _mark_gapped(self, stream: ProcessStream) -> None:
        self._gapped.add(stream.process_id)
        self._gap_wakeup.set()

    def _fail_process_soon(self, stream: ProcessStream, message: str) -> None:
        """Fail one process now; terminate it in the background.

        For callers that must not wait for a call: the reader task, and recovery
        (a terminate call would wait for the very recovery that is making it).
        """
        if self._fail_stream(stream, message):
            self._nursery.start_soon(self._terminate_quietly, stream.process_id)

    async def _fail_process(self, stream: ProcessStream, message: str) -> None:
        """Fail one process (a terminal Failed event) and kill it; the others go on."""
        if self._fail_stream(stream, message):
            await self._terminate_quietly(stream.process_id)

    def _fail_stream(self, stream: ProcessStream, message: str) -> bool:
        if stream.failure is not None or stream.closed_event is not None:
            return False
        log.warning("%s", message)
        stream.fail(message)
        self._failed_processes += 1
        self._metrics.failed_processes.add(1)
        self._streams.pop(stream.process_id, None)
        return True

    async def _terminate_quietly(self, process_id: str) -> None:
        with trio.move_on_after(self._recovery_deadline + 5):
            try:
                await self._terminate(process_id)
            except ExecRuntimeError:
                pass

    def _fail_consumer(self, stream: ProcessStream, message: str) -> None:
        """A consumer missed output the daemon no longer retains: its ``events()`` ends
        with Failed; the process, and the client's view of it, go on."""
        if stream.consumer_failure is None and stream.failure is None:
            log.warning("%s", message)
            self._failed_processes += 1
            self._metrics.failed_processes.add(1)
            stream.fail_consumer(message)

    async def _fill_gaps(self) -> None:
        """Background: fill seq gaps the live stream did not fill within GAP_GRACE."""
        while True:
            await self._gap_wakeup.wait()
            self._gap_wakeup = trio.Event()
            await trio.sleep(GAP_GRACE)
            for process_id in list(self._gapped):
                self._gapped.discard(process_id)
                stream = self._streams.get(process_id)
                if stream is None or stream.done.is_set():
                    continue
                try:
                    await self._catch_up(stream)
                except ProtocolError as exc:
                    if stream.legacy_exit is not None:
                        # The read that was to say sandboxDenied failed: the pushed
                        # exit is all there is to go on.
                        self._deliver(stream, [stream.legacy_exit])
                        continue
                    await self._fail_process(stream, f"process {process_id}: {exc.message}")
                except ExecRuntimeError:
                    pass  # the link went down: recovery catches up instead

    async def _catch_up(self, stream: ProcessStream) -> None:
        """Fill the network's gap with a read: ``ClientStream.catch_up``, the same merge
        as a lagging consumer's."""
        snapshot = await self._read(stream.process_id, stream.read_after(Reader.NETWORK))
        try:
            events = stream.catch_up(Reader.NETWORK, snapshot)
        except GapLost as exc:
            await self._fail_process(stream, f"process {stream.process_id}: {exc}")
            return
        self._deliver(stream, events)

    async def _catch_up_all(self, link: _Link) -> None:
        """Resume every started, unfinished process on ``link`` with a read from its
        cursor. The reads go out together, up to ``RECOVERY_READS`` in flight, so a
        session of many processes recovers in about one round trip rather than one per
        process; the answers are merged in this task, in the order the reads went out.
        Raises ``_LinkLost`` if the link drops meanwhile (the recovery starts again)."""
        streams = iter(
            [s for s in list(self._streams.values()) if s.started and not s.done.is_set()]
        )
        waiting: deque[tuple[ProcessStream, int, _PendingCall]] = deque()
        try:
            while True:
                while len(waiting) < RECOVERY_READS and (stream := next(streams, None)) is not None:
                    if stream.done.is_set():
                        continue  # completed from pushes while earlier reads were out
                    params = wire.ProcessReadParams(
                        process_id=stream.process_id, after_seq=stream.read_after(Reader.NETWORK)
                    )
                    self._gap_reads += 1
                    self._calls["process/read"] += 1
                    self._metrics.gap_reads.add(1)
                    self._metrics.call("process/read")
                    waiting.append((stream, *await self._send_call(link, "process/read", params)))
                if not waiting:
                    return
                stream, request_id, call = waiting.popleft()
                try:
                    result = await self._reply_to(
                        link, request_id, call, "process/read", wire.ProcessReadResult
                    )
                    events = stream.catch_up(Reader.NETWORK, _snapshot(result))
                except ProtocolError as exc:
                    self._fail_process_soon(stream, f"process {stream.process_id}: {exc.message}")
                except GapLost as exc:
                    self._fail_process_soon(stream, f"process {stream.process_id}: {exc}")
                else:
                    self._deliver(stream, events)
        finally:
            for _, request_id, _ in waiting:
                link.pending.pop(request_id, None)

    # --- links and recovery -------------------------------------------------------

    def _set_state(self, state: ClientState) -> None:
        if self._state in (ClientState.FAILED, ClientState.CLOSED):
            return
        self._state = state
        changed, self._state_changed = self._state_changed, trio.Event()
        changed.set()

    async def _supervise(self, *, task_status: trio.TaskStatus[None]) -> None:
        link: _Link = await self._nursery.start(self._run_link, None)
        self._link = link
        self._nursery.start_soon(self._fill_gaps)
        self._set_state(ClientState.CONNECTED)
        task_status.started()
        while True:
            await link.lost.wait()
            if self._state is ClientState.CLOSED:
                return
            self._set_state(ClientState.RECOVERING)
            with trio.CancelScope() as self._recovery:  # aclose() cancels it
                try:
                    link = await self._recover()
                except ExecRuntimeError as exc:
                    self._fail_client(exc)
                    return
            self._recovery = None
            if self._is_closed():
                link.mark_lost()  # closed during the recovery: its link task closes it
                return
            self._link = link
            self._set_state(ClientState.CONNECTED)

    def _fail_client(self, exc: ExecRuntimeError) -> None:
        # The error names the session for the caller; the log only by its fingerprint.
        log.error("exec client failed: %s", redact(str(exc), self.session_id))
        self._failure = exc
        self._set_state(ClientState.FAILED)
        for stream in list(self._streams.values()):
            # A start still waiting for the recovery fails with ClientClosedError itself.
            if stream.started:
                stream.fail(f"the client failed: {exc}")
                self._failed_processes += 1
                self._metrics.failed_processes.add(1)
        self._streams.clear()

    async def _run_link(
        self, resume: str | None, *, task_status: trio.TaskStatus[_Link]
    ) -> None:
        setup_error: Exception | None = None
        async with trio.open_nursery() as nursery:
            link: _Link | None = None
            try:
                link = _Link(await self._connector.connect(nursery), nursery)
                # Read before the initialize reply: events may be pushed right after it.
                nursery.start_soon(self._read_loop, link)
                await self._handshake(link, resume)
                capabilities = self.environment.capabilities if self.environment else {}
                # Only a daemon that says so gets acks (Codex closes the connection on
                # a notification it does not know).
                self._daemon_takes_acks = bool(self._ack_output and capabilities.get("processAck"))
                self._daemon_closes_stdin = bool(capabilities.get("closeStdin"))
                if self._daemon_takes_acks:
                    nursery.start_soon(self._send_acks, link)
            except Exception as exc:
                # Raised from here, outside the nursery, so the caller of start() sees
                # the error itself rather than an ExceptionGroup around it.
                setup_error = exc
            else:
                task_status.started(link)
                await link.lost.wait()
            finally:
                if link is not None:
                    link.mark_lost()
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await link.transport.aclose()
                    link.closed.set()
                nursery.cancel_scope.cancel()
        if setup_error is not None:
            raise setup_error

    async def _read_loop(self, link: _Link) -> None:
        try:
            while True:
                data = await link.transport.receive_message()
                output = link.codec.decode_output_notification(data)
                if output is not None:
                    self._on_output(output)
                    continue
                try:
                    message = link.codec.decode_message(data)
                except wire.MalformedMessage as exc:
                    log.warning("ignoring a malformed message from the daemon: %s", exc)
                    continue
                if message.method is not None:
                    self._on_notification(link, message)
                elif isinstance(message.id, int) and message.id in link.pending:
                    call = link.pending.pop(message.id)
                    call.reply = message
                    call.done.set()
        except MessageTooBig:
            link.mark_lost(too_big=True)
        except TransportClosed:
            pass
        finally:
            link.mark_lost()

    async def _handshake(self, link: _Link, resume: str | None) -> None:
        params = wire.InitializeParams(
            client_name=self.client_name, resume_session_id=resume, process_ack=self._ack_output
        )
        try:
            while True:
                try:
                    result = await self._call_on(
                        link, "initialize", params, wire.InitializeResult
                    )
                    break
                except ProtocolError as exc:
                    if exc.code != wire.errors.SESSION_ATTACHED:
                        raise
                    await trio.sleep(self._retry_interval)  # the old link is still attached
            if resume is not None and result.session_id != resume:
                raise SessionLostError(
                    wire.errors.INVALID_REQUEST,
                    f"resumed session id changed from {resume} to {result.session_id}",
                )
            await link.send(wire.Notification(method=wire.INITIALIZED))
        except _LinkLost:
            raise TransportError(DISCONNECTED) from None
        self.session_id = result.session_id
        self.environment = result.environment_info

    async def _recover(self) -> _Link:
        self._reconnects += 1
        self._metrics.reconnects.add(1)
        with trio.move_on_after(self._recovery_deadline):
            while True:
                try:
                    link: _Link = await self._nursery.start(self._run_link, self.session_id)
                except ProtocolError as exc:
                    raise SessionLostError(exc.code, exc.message) from None
                except Exception as exc:  # refused, reset, timed out, handshake rejected
                    log.info("reconnect failed (%s); retrying", redact(str(exc), self.session_id))
                    await trio.sleep(self._retry_interval)
                    continue
                try:
                    await self._catch_up_all(link)
                except _LinkLost:
                    await trio.sleep(self._retry_interval)
                    continue
                except BaseException:
                    link.mark_lost()  # out of time, or the client closed: not left open
                    raise
                self._recoveries += 1
                self._metrics.recoveries.add(1)
                return link
        raise TransportError(
            f"could not resume session {self.session_id} within {self._recovery_deadline:g} s"
        )


class Port:
    """The client as its process handles and ``client.fs`` see it
    (:class:`~.link.ProcessLink`): the only way in besides the public API. It lives in
    this module so that what it reaches of the client stays private to it."""

    __slots__ = ("_client",)

    def __init__(self, client: ExecClient) -> None:
        self._client = client

    async def call(self, method: str, params: Any, result_type: type[T]) -> T:
        return await self._client._call(method, params, result_type)

    @property
    def closes_stdin(self) -> bool:
        return self._client._daemon_closes_stdin

    async def read(self, process_id: str, after_seq: int) -> ReadSnapshot:
        return await self._client._read(process_id, after_seq)

    async def write(self, process_id: str, data: bytes, write_id: str, close: bool) -> str:
        result = await self.call(
            "process/write",
            wire.ProcessWriteParams(
                process_id=process_id, write_id=write_id, chunk=data, close_stdin=close
            ),
            wire.ProcessWriteResult,
        )
        return result.status

    async def signal(self, process_id: str, signal: str) -> None:
        params = wire.ProcessSignalParams(process_id=process_id, signal=signal)  # type: ignore[arg-type]
        await self.call("process/signal", params, wire.EmptyResult)

    async def terminate(self, process_id: str) -> bool:
        return await self._client._terminate(process_id)

    async def resize(self, process_id: str, rows: int, cols: int) -> None:
        params = wire.ProcessResizeParams(process_id=process_id, rows=rows, cols=cols)
        await self.call("process/resize", params, wire.EmptyResult)

    async def fail_process(self, stream: ProcessStream, message: str) -> None:
        await self._client._fail_process(stream, message)

    def fail_consumer(self, stream: ProcessStream, message: str) -> None:
        self._client._fail_consumer(stream, message)

    def consumed(self, stream: ProcessStream, *, now: bool = True) -> None:
        self._client._ack_consumed(stream, now=now)


def port(client: ExecClient) -> Port:
    """The client's :class:`Port` (the pool routes ``fs`` calls through it)."""
    return client._port


def wait_state_change(client: ExecClient) -> Awaitable[None]:
    """Until the client's :attr:`~ExecClient.state` changes (for the pool)."""
    return client._state_changed.wait()


def drop_link(client: ExecClient) -> None:
    """Make the client treat its connection as lost: it reconnects and resumes (for
    the pool, when probes say the host stopped answering)."""
    link = client._link
    if link is not None:
        link.mark_lost()


def _snapshot(result: wire.ProcessReadResult) -> ReadSnapshot:
    return ReadSnapshot(
        chunks=[Output(c.seq, c.stream, c.chunk) for c in result.chunks],
        next_seq=result.next_seq,
        exited=result.exited,
        exit_code=result.exit_code,
        closed=result.closed,
        sandbox_denied=result.sandbox_denied,
    )
