"""The daemon: listeners, the HTTP pre-handshake, connections, keepalive and shutdown.

Ownership: ``serve`` opens one nursery. Sessions run in it (each its own nursery of
processes); connections run in a child nursery. Cancelling ``serve`` cancels both, and
every process task kills its group on the way out. Setting the ``shutdown`` event
instead stops gracefully: stop accepting, SIGTERM every process group, SIGKILL what
is left after ``shutdown_grace`` (and let it report its exit and close to an attached
client), close every WebSocket with code 1001.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from urllib.parse import urlsplit

import attrs
import trio

import protocol_schema as wire

from .._wire.http import BadRequest, bearer_refusal, read_request_head, response
from .._wire.streams import WrappedStream
from .._wire.transport import StreamLineTransport, TransportClosed
from .._wire.websocket import WebSocket, WebSocketMessageTransport
from .._wire.websocket_handshake import accept
from .config import ServerConfig
from .connection import Connection
from .fds import FD_BUDGET
from .listeners import HandshakeSlots, ThrottledListener
from .managed import State
from .metrics import DaemonMetrics
from .metrics_export import MetricsPipeline, metrics_problem, metrics_response
from .sandbox import probe as sandbox_probe
from .session import SessionRegistry

log = logging.getLogger("exec_runtime.server")

CLOSE_TIMEOUT = 2.0
"""How long a close handshake may take before the socket is just closed."""
SHUTDOWN_CLOSE_TIMEOUT = 1.0
KILLED_REPORT_TIMEOUT = 1.0
"""On shutdown, how long processes SIGKILLed at the end of the grace have to report
their exit and close, and then the clients to be sent what is recorded."""
GOING_AWAY = 1001


class StartupError(ValueError):
    """The configuration cannot be served (exit code 2 from the CLI)."""


def parse_listen(listen: str) -> tuple[str, str, int]:
    """``ws://IP:PORT`` → ("ws", host, port); ``stdio`` → ("stdio", "", 0)."""
    if listen == "stdio":
        return "stdio", "", 0
    parts = urlsplit(listen)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"--listen must be ws://IP:PORT or stdio, got {listen!r}")
    try:
        port = parts.port or 0
    except ValueError:
        raise ValueError(f"bad port in {listen!r}") from None
    return parts.scheme, parts.hostname, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _check_sandbox_policy(config: ServerConfig) -> None:
    """An operator policy that needs a sandbox, on a host that has none, would refuse
    every start: refuse to serve instead (the probe runs once per process)."""
    if not (config.require_sandbox or config.default_sandbox):
        return
    available = sandbox_probe(config.bwrap_path)
    if not available.mechanisms(config.sandbox_mechanisms):
        reasons = "; ".join(f"{name}: {why}" for name, why in available.reasons.items())
        raise StartupError(
            "--require-sandbox and --default-sandbox need a sandbox mechanism, and none "
            f"of --sandbox-mechanisms ({', '.join(config.sandbox_mechanisms) or 'none'}) "
            f"is available{f' ({reasons})' if reasons else ''}"
        )


def check_startup(config: ServerConfig) -> ssl.SSLContext | None:
    """Refuse what must not be served; build the TLS context. Raises StartupError
    (or OSError / ssl.SSLError for an unreadable certificate)."""
    try:
        scheme, host, _port = parse_listen(config.listen)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    _check_sandbox_policy(config)
    if (problem := metrics_problem(config)) is not None:
        raise StartupError(problem)
    if scheme == "stdio":
        if config.tls_cert is not None:
            raise StartupError("--tls-cert needs a ws:// listen address, not stdio")
        return None
    if not is_loopback(host) and config.token is None and not config.allow_unauthenticated:
        raise StartupError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "run commands as this user. Set EXEC_RUNTIME_TOKEN or --token-file, or pass "
            "--allow-unauthenticated if another layer guards the port."
        )
    if config.tls_cert is None:
        if not is_loopback(host) and config.token is not None:
            log.warning("listening on %s without TLS: the token travels in clear text", host)
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except OSError as exc:  # ssl.SSLError too
        files = config.tls_cert + (f" / {config.tls_key}" if config.tls_key else "")
        raise StartupError(f"cannot load the TLS certificate {files}: {exc}") from None
    return context


@attrs.define(eq=False)
class _Daemon:
    config: ServerConfig
    registry: SessionRegistry
    stopping: bool = False
    connection_scopes: set[trio.CancelScope] = attrs.field(factory=set)
    scrape: Callable[[], bytes] | None = None  # GET /metrics (``_daemon/metrics_export.py``)
    handshake_slots: HandshakeSlots = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda self: HandshakeSlots(self.config.max_pending_connections), takes_self=True
        ),
    )


_RUNNING: set[_Daemon] = set()
"""The daemons ``serve`` runs in this process, for :func:`log_state`."""


def log_state() -> None:
    """Log one line per running daemon: what it holds (SIGUSR1). No ids in it."""
    for daemon in list(_RUNNING):
        log.info("state: %s", state_summary(daemon))


def state_summary(daemon: _Daemon) -> str:
    sessions = list(daemon.registry.sessions.values())
    attached = sum(session.attached is not None for session in sessions)
    starting = running = closed = retained = stdin = 0
    for session in sessions:
        for managed in session:
            if managed.state is State.STARTING:
                starting += 1
            elif managed.closed:
                closed += 1
            else:
                running += 1
            if managed.sequencer is not None:
                retained += managed.sequencer.sequence.retention.bytes
            if managed.stdin is not None:
                stdin += managed.stdin.pending_bytes
    processes = f"{running} running" + (f", {starting} starting" if starting else "")
    processes += f", {closed} closed"
    output, buffers = daemon.registry.output_budget, daemon.registry.buffer_budget
    return (
        f"{len(sessions)} sessions ({attached} attached, {len(sessions) - attached} detached), "
        f"{starting + running + closed} processes ({processes}), "
        f"{len(daemon.connection_scopes)} WebSocket connections, "
        f"{retained} bytes of output retained, {stdin} bytes queued for stdin, "
        f"output budget {output.used}/{output.limit} bytes ({output.waiting} waiting), "
        f"buffer budget {buffers.used}/{buffers.limit} bytes ({buffers.waiting} waiting)"
    )


async def serve(
    config: ServerConfig,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon (see :func:`_serve`), recording its metrics (``_daemon/metrics.py``);
    the last points are exported however it ends (returns, is cancelled, fails).

    Process-wide settings stay the host's: unlike ``exec-runtime serve``, this neither
    raises ``RLIMIT_NOFILE`` to the hard limit nor tunes malloc (docs/security.md)."""
    check_startup(config)
    wanted = config.metrics or config.metrics_otlp_endpoint is not None
    pipeline = MetricsPipeline(config) if wanted else None
    metrics = DaemonMetrics(pipeline.provider if pipeline else config.meter_provider)
    try:
        scrape = pipeline.scrape if pipeline else None
        await _serve(config, metrics, scrape, shutdown=shutdown, task_status=task_status)
    finally:
        if pipeline is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pipeline.shutdown)
        metrics.close()


async def _serve(
    config: ServerConfig,
    metrics: DaemonMetrics,
    scrape: Callable[[], bytes] | None = None,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon. ``task_status.started`` receives the bound URL.

    Embed it with ``url = await nursery.start(exec_runtime.serve, config)``. Cancelling
    it kills every process group at once; setting ``shutdown`` stops gracefully (see
    the module docstring) and returns. Raises StartupError for a configuration that
    must not be served (a non-loopback address without a token).
    """
    ssl_context = check_startup(config)
    scheme, host, port = parse_listen(config.listen)
    if config.sandbox_mechanisms:
        # Probe now (it logs what can enforce a sandbox), not at the first request.
        await trio.to_thread.run_sync(sandbox_probe, config.bwrap_path)
    async with trio.open_nursery() as session_nursery:
        registry = SessionRegistry(session_nursery, config, metrics)
        daemon = _Daemon(config, registry, scrape=scrape)
        _RUNNING.add(daemon)
        FD_BUDGET.keep(config.fd_reserve)
        try:
            async with trio.open_nursery() as connections:
                ended = trio.Event()
                accept_scope = trio.CancelScope()
                if scheme == "stdio":
                    task_status.started("stdio")
                    connections.start_soon(_serve_stdio, registry, ended)
                else:
                    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
                    tcp_listeners = await trio.open_tcp_listeners(port, host=host)
                    bound_port = tcp_listeners[0].socket.getsockname()[1]
                    for tcp_listener in tcp_listeners:
                        listener: trio.abc.Listener[trio.abc.Stream] = tcp_listener
                        if ssl_context is not None:
                            listener = trio.SSLListener(
                                tcp_listener, ssl_context, https_compatible=True
                            )
                        listeners.append(ThrottledListener(listener, daemon.handshake_slots))
                    url = f"{'wss' if ssl_context else 'ws'}://{_url_host(host)}:{bound_port}"
                    log.info("listening on %s", url)
                    connections.start_soon(
                        _accept, partial(_handle_tcp, daemon), listeners, connections, accept_scope
                    )
                    task_status.started(url)
                async with trio.open_nursery() as waiting:
                    waiting.start_soon(_set_when, ended, waiting.cancel_scope)
                    if shutdown is not None:
                        waiting.start_soon(_set_when, shutdown, waiting.cancel_scope)
                if not ended.is_set():
                    await _shut_down(daemon, accept_scope)
                connections.cancel_scope.cancel()
        finally:
            _RUNNING.discard(daemon)
            FD_BUDGET.release(config.fd_reserve)
            registry.close_all()
            session_nursery.cancel_scope.cancel()


async def _set_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _accept(
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
    listeners: list[trio.abc.Listener[trio.abc.Stream]],
    handler_nursery: trio.Nursery,
    scope: trio.CancelScope,
) -> None:
    """Accept until ``scope`` is cancelled (which closes the listeners); connections
    run in ``handler_nursery``, so they outlive the accept loop."""
    with scope:
        await trio.serve_listeners(handler, listeners, handler_nursery=handler_nursery)


async def _shut_down(daemon: _Daemon, accept_scope: trio.CancelScope) -> None:
    """Stop accepting; SIGTERM every process group; after ``shutdown_grace`` (or once
    every process closed) SIGKILL the rest, which then report exit and close as any
    process does (bounded); close every connection with 1001."""
    daemon.stopping = True
    daemon.registry.closing = True
    daemon.registry.metrics.stopping = True  # what ends now was ended by the shutdown
    accept_scope.cancel()
    grace = daemon.config.shutdown_grace
    log.info("shutting down: SIGTERM to every process group, SIGKILL after %gs", grace)
    for session in list(daemon.registry.sessions.values()):
        # A process started now would miss the SIGTERM below and only get the SIGKILL.
        session.refusing_starts = "the daemon is shutting down"
        for managed in session:
            if managed.state is State.STARTING:
                managed.cancel_start()
            elif managed.child is not None and not managed.closed:
                # Even after the leader exited: a grandchild may still hold the pipes.
                await managed.child.send_signal(signal.SIGTERM)  # a tty: its foreground job
    registry = daemon.registry
    with trio.move_on_after(grace):
        await _until(lambda: _all_closed(registry))
    if not _all_closed(registry):
        # SIGKILL what is left, and let it report its exit (137) and close as any
        # process does, so an attached client learns how its command ended.
        for session in list(registry.sessions.values()):
            for managed in session:
                if managed.child is not None and not managed.closed:
                    managed.child.kill()
        with trio.move_on_after(KILLED_REPORT_TIMEOUT):
            await _until(lambda: _all_closed(registry))
    with trio.move_on_after(KILLED_REPORT_TIMEOUT):  # what is recorded reaches the clients
        await _until(lambda: all(s.flushed for s in registry.sessions.values()))
    registry.close_all()  # cancelling a process task SIGKILLs its group and reaps
    for scope in list(daemon.connection_scopes):
        scope.cancel()


async def _until(done: Callable[[], bool]) -> None:
    """Poll ``done`` until it holds (no event says so here); the caller bounds it."""
    while not done():  # noqa: ASYNC110
        await trio.sleep(0.01)


def _all_closed(registry: SessionRegistry) -> bool:
    return all(managed.closed for session in registry.sessions.values() for managed in session)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve_stdio(registry: SessionRegistry, ended: trio.Event) -> None:
    receive = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    send = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    transport = StreamLineTransport(receive, send, registry.config.max_message_bytes)
    try:
        await Connection(transport, registry).serve()
    finally:
        ended.set()
        with trio.CancelScope(shield=True):
            await transport.aclose()


async def _handle_tcp(daemon: _Daemon, stream: trio.abc.Stream) -> None:
    try:
        async with stream:
            try:
                upgrade = await _pre_handshake(daemon, stream)
            finally:
                daemon.handshake_slots.give_back()  # taken by ThrottledListener.accept
            if upgrade is not None:
                headers, rest = upgrade
                await _serve_websocket(daemon, _WatchedStream(stream), headers, rest)
    except Exception:  # one connection's failure must never take the daemon down
        log.exception("connection failed")


async def _pre_handshake(
    daemon: _Daemon, stream: trio.abc.Stream
) -> tuple[dict[str, str], bytes] | None:
    """TLS and the HTTP request head (bounded by ``handshake_timeout``), then /readyz,
    the Origin and token checks, all before any upgrade. Returns the upgrade's headers
    and the bytes after the head, or None once it has answered and the socket is done."""
    config = daemon.config
    try:
        with trio.fail_after(config.handshake_timeout):
            head = await read_request_head(stream)
    except trio.TooSlowError:
        log.debug("closing a connection whose handshake took over %gs", config.handshake_timeout)
        await _try_send(stream, response(408, "Request Timeout"))
        return None
    except (BadRequest, trio.BrokenResourceError, OSError) as exc:
        # A failed TLS handshake (e.g. the client does not trust our certificate)
        # arrives here as BrokenResourceError; the 400 then goes nowhere.
        log.debug("bad handshake: %s", exc)
        await _try_send(stream, response(400, "Bad Request"))
        return None
    if head.method == "GET" and head.path == "/readyz" and not head.is_upgrade:
        await _try_send(stream, response(200, "OK"))  # open without a token, by design
        return None
    if "origin" in head.headers:
        await _try_send(stream, response(403, "Forbidden", b"browser origins are refused\n"))
        return None
    if config.token is not None:
        refusal = bearer_refusal(head.headers, config.token)
        if refusal is not None:
            log.info("refused a connection from %s: %s", _peer(stream), refusal)
            await _try_send(
                stream,
                response(
                    401,
                    "Unauthorized",
                    b"missing or wrong token\n",
                    extra='WWW-Authenticate: Bearer realm="exec-runtime"\r\n',
                ),
            )
            return None
    if head.path == "/metrics" and daemon.scrape is not None and not head.is_upgrade:
        await _try_send(stream, await metrics_response(daemon.scrape))  # the token's
        return None
    if not head.is_upgrade:
        await _try_send(stream, response(426, "Upgrade Required", extra="Upgrade: websocket\r\n"))
        return None
    _, _, rest = head.raw.partition(b"\r\n\r\n")
    return head.headers, rest


def _peer(stream: trio.abc.Stream) -> str:
    inner: object = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    if isinstance(inner, trio.SocketStream):
        try:
            address = inner.socket.getpeername()
        except OSError:
            return "?"
        return f"{address[0]}:{address[1]}"
    return "?"


class _WatchedStream(WrappedStream):
    """Tracks whether the WebSocket is *idle*: the connection's reader is waiting for
    bytes (so a pong would be seen at once) and nothing is being sent. A missing pong
    only counts as a dead peer while idle: a client that stops reading blocks our
    sends, and a full request queue stops our reader, and neither is evidence that
    the peer is gone."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self._sending = 0
        self._receiving = False
        self._idle_since: float | None = None

    def idle_for(self) -> float:
        if self._idle_since is None:
            return 0.0
        return trio.current_time() - self._idle_since

    def _update(self) -> None:
        if self._receiving and not self._sending:
            if self._idle_since is None:
                self._idle_since = trio.current_time()
        else:
            self._idle_since = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self._receiving = True
        self._idle_since = None  # bytes just arrived (or this is the first read)
        self._update()
        try:
            return await super().receive_some(max_bytes)
        finally:
            self._receiving = False
            self._update()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._sending_now():
            await super().send_all(data)

    async def send_all_pieces(self, pieces: Sequence[bytes]) -> None:
        with self._sending_now():
            await super().send_all_pieces(pieces)

    @contextmanager
    def _sending_now(self) -> Iterator[None]:
        self._sending += 1
        self._update()
        try:
            yield
        finally:
            self._sending -= 1
            self._idle_since = None  # restart the clock: these bytes may hold a ping
            self._update()


async def _serve_websocket(
    daemon: _Daemon, stream: _WatchedStream, headers: dict[str, str], rest: bytes
) -> None:
    """Serve one WebSocket; always end with a close handshake, bounded in time.

    Pings run in a nursery shielded from the daemon's shutdown (a ping cancelled
    mid-write would corrupt the stream): cancelling ``serve`` reaches the connection
    through ``connection_scope`` instead (via the watcher below), and the close
    handshake then runs, bounded, as the connection ends.
    """
    connection_scope = trio.CancelScope()

    async def cancel_connection_with_outer_scope() -> None:
        try:
            await trio.sleep_forever()
        finally:
            connection_scope.cancel()

    daemon.connection_scopes.add(connection_scope)
    try:
        async with trio.open_nursery() as watcher:
            watcher.start_soon(cancel_connection_with_outer_scope)
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as ws_nursery:
                    with connection_scope:
                        await _run_websocket(
                            daemon, stream, headers, rest, ws_nursery, connection_scope
                        )
                    ws_nursery.cancel_scope.cancel()
            watcher.cancel_scope.cancel()
    finally:
        daemon.connection_scopes.discard(connection_scope)


async def _run_websocket(
    daemon: _Daemon,
    stream: _WatchedStream,
    headers: dict[str, str],
    rest: bytes,
    ws_nursery: trio.Nursery,
    connection_scope: trio.CancelScope,
) -> None:
    config = daemon.config
    try:
        ws = await accept(
            stream,
            headers,
            rest,
            subprotocols=[wire.MSGPACK_SUBPROTOCOL],
            max_message_size=config.max_message_bytes,
        )
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return
    if ws is None:
        return  # not a valid upgrade: answered 400
    subprotocol = ws.subprotocol
    try:
        async with trio.open_nursery() as nursery:
            if config.ping_interval > 0:
                nursery.start_soon(
                    _keepalive, ws, stream, config, ws_nursery, connection_scope.cancel
                )
            probe = _ResumeProbe(ws, config, nursery, ws_nursery, connection_scope.cancel)
            await Connection(
                WebSocketMessageTransport(ws, wire.codec_for_subprotocol(subprotocol)),
                daemon.registry,
                probe.start,
            ).serve()
            nursery.cancel_scope.cancel()
    finally:
        timeout = SHUTDOWN_CLOSE_TIMEOUT if daemon.stopping else CLOSE_TIMEOUT
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            if daemon.stopping:
                await ws.aclose(GOING_AWAY, "the daemon is shutting down")
            else:
                await ws.aclose()


async def _keepalive(
    ws: WebSocket,
    stream: _WatchedStream,
    config: ServerConfig,
    ping_nursery: trio.Nursery,
    close_dead: Callable[[], None],
) -> None:
    """Ping every ``ping_interval`` (PROTOCOL §1), so idle connections stay open through
    proxies and dead peers are found. A peer that answers nothing for ``ping_timeout``
    while the connection is idle (see _WatchedStream) is dead: the connection closes,
    which detaches its session. While we are blocked sending to it (a client applying
    backpressure), it is given all the time it needs.

    The ping itself runs in the WebSocket's own nursery and is never cancelled
    mid-send: a half-written frame would corrupt the stream.
    """
    check_every = config.ping_timeout / 4
    while True:
        await trio.sleep(config.ping_interval)
        pong = trio.Event()
        ping_nursery.start_soon(_ping, ws, pong)
        while not pong.is_set():
            with trio.move_on_after(check_every):
                await pong.wait()
            if ws.close_reason is not None:
                return
            if not pong.is_set() and stream.idle_for() >= config.ping_timeout:
                log.info(
                    "peer %s sent nothing for %gs after a ping: closing the connection",
                    _peer(stream.inner),
                    config.ping_timeout,
                )
                close_dead()
                return


class _ResumeProbe:
    """A resume of this connection's session came in on another connection: the client
    thinks this one is gone. If it cannot answer a ping within
    ``resume_probe_timeout`` (even while we are blocked sending to it, which the
    keepalive forgives), it is closed, and the client's next resume attempt succeeds."""

    def __init__(
        self,
        ws: WebSocket,
        config: ServerConfig,
        nursery: trio.Nursery,
        ping_nursery: trio.Nursery,
        close_dead: Callable[[], None],
    ) -> None:
        self._ws = ws
        self._timeout = config.resume_probe_timeout
        self._nursery = nursery
        self._ping_nursery = ping_nursery
        self._close_dead = close_dead
        self._running = False

    def start(self) -> None:
        if not self._running:  # the client retries every 100 ms: one probe at a time
            self._running = True
            self._nursery.start_soon(self._run)

    async def _run(self) -> None:
        pong = trio.Event()
        self._ping_nursery.start_soon(_ping, self._ws, pong)
        with trio.move_on_after(self._timeout):
            await pong.wait()
        self._running = False
        if not pong.is_set() and self._ws.close_reason is None:
            log.info(
                "a resume of its session came in elsewhere and the connection did not "
                "answer a ping for %gs: closing it",
                self._timeout,
            )
            self._close_dead()


async def _ping(ws: WebSocket, pong: trio.Event) -> None:
    try:
        await ws.ping(os.urandom(4))
    except TransportClosed:
        return
    pong.set()


async def _try_send(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
