"""A client pool across daemons: ``open_pool(endpoints)`` yields an :class:`ExecPool`.

Each endpoint URL names one daemon, or a DNS name with every address behind it (a
Kubernetes headless Service), resolved again every ``resolve_interval`` seconds. Each
address is an endpoint with its own :class:`ExecClient` (its own reconnect and resume).

Ownership (structured concurrency): the pool's nursery owns one task per endpoint, the
re-resolution task and one small watcher per ``start()``-ed process. An endpoint's task
owns its nursery: its ``/readyz`` prober and its client (``open_client``), which it
opens when the probe answers, and opens anew when the client failed for good (the
endpoint rejoins). ``aclose()`` (or leaving ``async with``) closes every client and
cancels the nursery: nothing outlives the pool.

Placement (``_core/placement.py``): least loaded among healthy endpoints (the pool's own
count of its running processes), ties at random; affinity keys stick to one endpoint.
An endpoint is healthy while its probe answers 200 and its client is connected, not
recovering. A probe that fails ``probe_failures`` times in a row while the client still
looks connected (a partition, a host that died without a TCP reset) makes the client
drop its link: it then recovers as after any drop, resuming the session if the host
answers within ``recovery_deadline``, else failing that endpoint's processes.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

import protocol_schema as wire

from .._core.placement import EndpointView, PlacementPolicy
from .._errors import ClientClosedError, ExecRuntimeError
from .._wire.sandbox_intent import Sandbox
from .args import EnvPolicy
from .client import (
    ClientState,
    ClientStatistics,
    CompletedProcess,
    ExecClient,
    drop_link,
    port,
    wait_state_change,
)
from .connect import open_client, open_stream_arguments, unwrap_lone_exception
from .fs import FsClient
from .process import ProcessHandle

log = logging.getLogger("exec_runtime.pool")

T = TypeVar("T")

RESOLVE_TIMEOUT = 10.0
"""Seconds one resolution may take; past it, it counts as failed (the endpoints stay)."""

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port)`` -> every address behind ``host`` (IP literals, as strings)."""


class NoEndpointError(ExecRuntimeError):
    """No endpoint could take the work within ``placement_timeout``: none is ready, or
    the one an affinity key is pinned to is not. The message says which and why."""


async def resolve_all(host: str, port: int) -> list[str]:
    """The default resolver: every address ``getaddrinfo`` gives for ``host``, once each,
    in its order (a headless Service's name gives one per ready pod)."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@attrs.frozen
class EndpointStatistics:
    url: str
    """The address's URL: where its client connects, and what handles' ``endpoint`` say."""
    source: str
    """The URL given to ``open_pool`` that it was resolved from."""
    ready: bool
    """Its last ``/readyz`` probe answered 200."""
    state: str | None
    """Its client's :class:`ClientState` value; None while it has no client."""
    present: bool
    """In the latest resolution (False: it left, and drains what it runs)."""
    running: int
    """The pool's processes running there now (``run()`` calls in progress included)."""
    placed: int
    """Processes the pool placed there, in all."""
    sessions: int
    """Clients opened to it: 1, plus one for every time it rejoined."""
    client: ClientStatistics | None


@attrs.frozen
class PoolStatistics:
    endpoints: dict[str, EndpointStatistics]
    placed: int
    """Processes placed, in all."""
    waited: int
    """Placements that had to wait for an endpoint to become ready."""
    resolutions: int
    resolution_errors: int
    state: str
    """``"open"`` or ``"closed"``."""

    @property
    def healthy(self) -> list[str]:
        """The endpoints that take new work now."""
        return [
            url
            for url, stats in self.endpoints.items()
            if stats.ready and stats.present and stats.state == ClientState.CONNECTED.value
        ]


class PoolProcessHandle(ProcessHandle):
    """A :class:`ProcessHandle` that says which endpoint runs it. Its calls go to that
    endpoint's client, and only there: a process never moves."""

    endpoint: str

    def __init__(self, handle: ProcessHandle, endpoint: str) -> None:
        # The same state as the client's handle (one stream, one client), plus a field.
        self.__dict__.update(handle.__dict__)
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<ProcessHandle {self.process_id!r} on {self.endpoint}>"


class _NamedTLS:
    """An ``ssl.SSLContext`` that checks the certificate against the DNS name the
    endpoint was resolved from, while the TCP connection goes to one of its addresses."""

    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        self._context = context
        self._server_name = server_name

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self._context.wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=self._server_name,
            session=session,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


@attrs.define(eq=False)
class _Source:
    """One URL given to ``open_pool``."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    literal: bool  # an IP address: nothing to resolve
    urls: list[str] = attrs.field(factory=list)  # its endpoints at the last resolution


@attrs.define(eq=False)
class _Endpoint:
    url: str
    source: _Source
    host: str  # the address
    server_name: str | None  # for wss: the name the certificate must carry
    present: bool = True
    ready: bool = False
    client: ExecClient | None = None
    running: int = 0
    placed: int = 0
    sessions: int = 0
    last_error: str = ""
    settled: trio.Event = attrs.field(factory=trio.Event)  # first probe or connect done
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.state is ClientState.CONNECTED

    def view(self) -> EndpointView:
        return EndpointView(self.url, self.ready and self.connected, self.running, self.present)


class _ForwardStatus:
    """The ``task_status`` handed to the client's ``run``: reports a pool handle."""

    def __init__(self, outer: trio.TaskStatus[PoolProcessHandle], endpoint: str) -> None:
        self._outer = outer
        self._endpoint = endpoint

    def started(self, value: ProcessHandle | None = None) -> None:
        assert value is not None
        self._outer.started(PoolProcessHandle(value, self._endpoint))


class _FsRouter:
    """Stands in for an ExecClient under an :class:`FsClient`: each call goes to the
    endpoint the pool places the affinity key on (the same one every time)."""

    def __init__(self, pool: ExecPool, affinity: str | None) -> None:
        self._pool = pool
        self._affinity = affinity

    async def call(self, method: str, params: Any, result_type: type[T]) -> T:
        client = await self._pool._client_for(self._affinity)
        return await port(client).call(method, params, result_type)


class ExecPool:
    """Processes across many daemons. Create with :func:`open_pool`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        sources: list[_Source],
        *,
        resolver: Resolver,
        client_args: dict[str, Any],
        ssl_context: ssl.SSLContext | None,
        resolve_interval: float,
        probe_interval: float,
        probe_timeout: float,
        probe_failures: int,
        placement_timeout: float,
        retry_interval: float,
        rng: random.Random | None,
    ) -> None:
        self._nursery = nursery
        self._sources = sources
        self._resolver = resolver
        self._client_args = client_args
        self._ssl_context = ssl_context
        self._resolve_interval = resolve_interval
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._probe_failures = probe_failures
        self._placement_timeout = placement_timeout
        self._retry_interval = retry_interval
        self._policy = PlacementPolicy(rng)
        self._endpoints: dict[str, _Endpoint] = {}
        self._changed = trio.Event()
        self._closed = False
        self._placed = 0
        self._waited = 0
        self._resolutions = 0
        self._resolution_errors = 0
        self._resolution_error = ""

    # --- public API -------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Every endpoint the pool knows now (those that left but still drain included)."""
        return list(self._endpoints)

    def statistics(self) -> PoolStatistics:
        """A snapshot: each endpoint (ready, its client's state, what runs there) and
        the pool's counters (placements, waits, resolutions)."""
        return PoolStatistics(
            endpoints={
                url: EndpointStatistics(
                    url=url,
                    source=ep.source.url,
                    ready=ep.ready,
                    state=None if ep.client is None else ep.client.state.value,
                    present=ep.present,
                    running=ep.running,
                    placed=ep.placed,
                    sessions=ep.sessions,
                    client=None if ep.client is None else ep.client.statistics(),
                )
                for url, ep in self._endpoints.items()
            },
            placed=self._placed,
            waited=self._waited,
            resolutions=self._resolutions,
            resolution_errors=self._resolution_errors,
            state="closed" if self._closed else "open",
        )

    def pinned(self, affinity: str) -> str | None:
        """The endpoint an affinity key is pinned to, if it is."""
        return self._policy.pinned(affinity)

    def forget_affinity(self, affinity: str) -> None:
        """Unpin an affinity key: its next process is placed as a new one."""
        self._policy.forget_affinity(affinity)

    def fs(self, affinity: str | None = None) -> FsClient:
        """The filesystem methods of the endpoint ``affinity`` is pinned to (pinning it
        now if it is not): ``await pool.fs("agent-7").write_file(path, data)``. Without
        a key, each call goes to the least loaded endpoint."""
        return FsClient(_FsRouter(self, affinity))

    async def start(
        self,
        argv: Sequence[str],
        *,
        affinity: str | None = None,
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
    ) -> PoolProcessHandle:
        """:meth:`ExecClient.start` on the endpoint placement chooses (the one
        ``affinity`` is pinned to); waits up to ``placement_timeout`` for one to be
        ready, then raises :class:`NoEndpointError`. A start that fails is not retried
        elsewhere: with the link lost mid-call the process may have started."""
        ep, client = await self._place(affinity)
        try:
            handle = await client.start(
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
        except BaseException:
            self._release(ep)
            raise
        self._nursery.start_soon(self._count_until_done, ep, handle)
        return PoolProcessHandle(handle, ep.url)

    async def run(
        self,
        argv: Sequence[str],
        *,
        affinity: str | None = None,
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
        task_status: trio.TaskStatus[PoolProcessHandle] = trio.TASK_STATUS_IGNORED,
    ) -> CompletedProcess:
        """:meth:`ExecClient.run` on the endpoint placement chooses. If that endpoint
        dies meanwhile the call raises ``ProcessFailed`` within its recovery deadline
        (nothing migrates: run it again and it goes elsewhere)."""
        ep, client = await self._place(affinity)
        try:
            return await client.run(
                argv,
                cwd=cwd,
                env=env,
                env_policy=env_policy,
                tty=tty,
                input=input,
                pipe_stdin=pipe_stdin,
                check=check,
                timeout=timeout,
                tty_size=tty_size,
                arg0=arg0,
                sandbox=sandbox,
                task_status=cast(
                    "trio.TaskStatus[ProcessHandle]", _ForwardStatus(task_status, ep.url)
                ),
            )
        finally:
            self._release(ep)

    async def aclose(self) -> None:
        """Close every client (as :meth:`ExecClient.aclose`) and end every task the pool
        runs. Calls in progress and later ones raise :class:`ClientClosedError`."""
        if self._closed:
            return
        self._closed = True
        self._notify()
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for ep in list(self._endpoints.values()):
                    if ep.client is not None:
                        nursery.start_soon(ep.client.aclose)
        self._nursery.cancel_scope.cancel()

    # --- placement ----------------------------------------------------------------------

    async def _place(self, affinity: str | None) -> tuple[_Endpoint, ExecClient]:
        """Choose an endpoint and count one process on it (the caller releases it)."""
        if affinity is not None and not isinstance(affinity, str):
            raise TypeError(f"affinity must be a str, not {type(affinity).__name__}")
        waited = False
        with trio.move_on_after(self._placement_timeout):
            while True:
                if self._closed:
                    raise ClientClosedError("the pool is closed")
                changed = self._changed
                views = [ep.view() for ep in self._endpoints.values()]
                placement = self._policy.place(views, affinity)
                if placement.endpoint is not None:
                    ep = self._endpoints[placement.endpoint]
                    assert ep.client is not None
                    ep.running += 1
                    ep.placed += 1
                    self._placed += 1
                    self._waited += waited
                    await trio.lowlevel.checkpoint()
                    return ep, ep.client
                reason = placement.reason
                waited = True
                await changed.wait()
        raise NoEndpointError(
            f"no endpoint took the process within {self._placement_timeout:g} s: "
            f"{reason}{self._diagnosis()}"
        )

    async def _client_for(self, affinity: str | None) -> ExecClient:
        ep, client = await self._place(affinity)
        self._release(ep)  # an fs call is not a process: placed, not counted
        return client

    def _diagnosis(self) -> str:
        details = [f"{ep.url}: {ep.last_error}" for ep in self._endpoints.values() if ep.last_error]
        if self._resolution_error:
            details.append(f"resolution: {self._resolution_error}")
        return f" ({'; '.join(details)})" if details else ""

    def _release(self, ep: _Endpoint) -> None:
        ep.running -= 1
        self._notify()
        self._retire_if_drained(ep)

    async def _count_until_done(self, ep: _Endpoint, handle: ProcessHandle) -> None:
        try:
            with suppress(ExecRuntimeError):
                await handle.wait()  # Closed, or Failed (its endpoint died, the pool closed)
        finally:
            self._release(ep)

    def _notify(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while True:
            changed = self._changed
            if predicate():
                return
            await changed.wait()

    # --- endpoints ------------------------------------------------------------------------

    async def _resolve(self) -> None:
        """Resolve every source once; add new endpoints, mark the missing ones."""
        self._resolutions += 1
        errors = []
        for source in self._sources:
            if source.literal:
                addresses = [source.host]
            else:
                try:
                    with trio.fail_after(RESOLVE_TIMEOUT):
                        addresses = list(await self._resolver(source.host, source.port))
                except (OSError, ValueError, trio.TooSlowError) as exc:  # gaierror: OSError
                    # Keep what it resolved to last time: a DNS hiccup removes nothing.
                    self._resolution_errors += 1
                    errors.append(f"{source.host}: {exc or 'no answer in time'}")
                    log.warning("cannot resolve %s: %s", source.host, exc)
                    continue
            source.urls = [_endpoint_url(source, address) for address in addresses]
        self._resolution_error = "; ".join(errors)
        wanted: dict[str, tuple[_Source, str]] = {}
        for source in self._sources:
            for url in source.urls:
                wanted.setdefault(url, (source, urlsplit(url).hostname or ""))
        for url, (source, address) in wanted.items():
            ep = self._endpoints.get(url)
            if ep is None:
                server_name = None if source.literal or source.scheme != "wss" else source.host
                ep = _Endpoint(url, source, address, server_name)
                self._endpoints[url] = ep
                log.info("endpoint %s joined (from %s)", url, source.url)
                self._nursery.start_soon(self._run_endpoint, ep)
            elif not ep.present:
                ep.present = True
                log.info("endpoint %s is back in the resolution", url)
        for ep in list(self._endpoints.values()):
            if ep.url not in wanted and ep.present:
                ep.present = False
                log.info("endpoint %s left the resolution; it drains", ep.url)
                self._retire_if_drained(ep)
        self._notify()

    def _retire_if_drained(self, ep: _Endpoint) -> None:
        if not ep.present and ep.running == 0 and self._endpoints.get(ep.url) is ep:
            del self._endpoints[ep.url]
            self._policy.forget_endpoint(ep.url)
            ep.scope.cancel()  # its client closes on the way out
            log.info("endpoint %s retired", ep.url)

    async def _resolve_loop(self) -> None:
        while True:
            await trio.sleep(self._resolve_interval)
            await self._resolve()

    async def _run_endpoint(self, ep: _Endpoint) -> None:
        """Probe it, and hold a client to it while it is up; rejoin after a failure."""
        with ep.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._probe_loop, ep)
                while True:
                    await self._until(lambda: ep.ready)
                    try:
                        async with open_client(ep.url, **self._client_args_for(ep)) as client:
                            ep.client = client
                            ep.sessions += 1
                            ep.last_error = ""
                            ep.settled.set()
                            log.info("endpoint %s connected (session %d)", ep.url, ep.sessions)
                            self._notify()
                            await self._until_down(client)
                            if not self._closed:
                                ep.last_error = f"its client {client.state.value}"
                                log.warning("endpoint %s: %s", ep.url, ep.last_error)
                    except (ExecRuntimeError, OSError) as exc:  # ConnectError and its kind
                        ep.last_error = str(exc)
                        log.info("endpoint %s: %s", ep.url, exc)
                    finally:
                        ep.client = None
                        ep.settled.set()
                        self._notify()
                    await trio.sleep(self._retry_interval)

    async def _until_down(self, client: ExecClient) -> None:
        """Until the client failed for good or closed; tells placement of every change."""
        while client.state not in (ClientState.FAILED, ClientState.CLOSED):
            await wait_state_change(client)
            self._notify()  # CONNECTED <-> RECOVERING changes who takes work

    def _client_args_for(self, ep: _Endpoint) -> dict[str, Any]:
        args = dict(self._client_args)
        if ep.source.scheme == "wss":
            args["ssl_context"] = self._tls_for(ep)
        return args

    def _tls_for(self, ep: _Endpoint) -> ssl.SSLContext:
        context = self._ssl_context or ssl.create_default_context()
        if ep.server_name is None:
            return context
        return cast(ssl.SSLContext, _NamedTLS(context, ep.server_name))

    async def _probe_loop(self, ep: _Endpoint) -> None:
        failures = 0
        while True:
            ready = await self._probe(ep)
            failures = 0 if ready else failures + 1
            if ready != ep.ready:
                ep.ready = ready
                log.info("endpoint %s is %s", ep.url, "ready" if ready else "not ready")
                self._notify()
            if not ready:
                ep.settled.set()
            if failures >= self._probe_failures and ep.client is not None and ep.connected:
                # The link looks up but the host does not answer: a partition, or a host
                # gone without a reset. Reconnect: resume if it answers in time.
                log.warning(
                    "endpoint %s: %d probes failed; its client reconnects", ep.url, failures
                )
                drop_link(ep.client)
                failures = 0
            await trio.sleep(self._probe_interval)

    async def _probe(self, ep: _Endpoint) -> bool:
        """``GET /readyz`` answered 200 within ``probe_timeout``."""
        parts = urlsplit(ep.url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        with trio.move_on_after(self._probe_timeout):
            stream: trio.abc.Stream | None = None
            try:
                tcp = await trio.open_tcp_stream(ep.host, port)
                stream = tcp
                if parts.scheme == "wss":
                    stream = trio.SSLStream(
                        tcp, self._tls_for(ep), server_hostname=ep.host, https_compatible=True
                    )
                host = parts.netloc.rpartition("@")[2]
                request = f"GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                await stream.send_all(request.encode())
                answer = b""
                while b"\r\n" not in answer and len(answer) < 4096:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    answer += chunk
                status = answer.split(b"\r\n", 1)[0].split()
                return len(status) >= 2 and status[1] == b"200"
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            finally:
                if stream is not None:
                    await trio.aclose_forcefully(stream)
        return False


def _endpoint_url(source: _Source, address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return urlunsplit((source.scheme, f"{host}:{source.port}", source.path, "", ""))


def _parse_source(url: str, ssl_context: ssl.SSLContext | None) -> _Source:
    host, port, secure, _host_header, resource = open_stream_arguments(url, ssl_context)
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    path = resource if resource != "/" else ""
    return _Source(url, "wss" if secure else "ws", host, port, path, literal)


@asynccontextmanager
async def open_pool(
    endpoints: str | Sequence[str],
    *,
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    client_name: str = "exec-runtime",
    ssl_context: ssl.SSLContext | None = None,
    msgpack: bool = True,
    recovery_deadline: float = 25.0,
    ack_output: bool = True,
    resolver: Resolver | None = None,
    resolve_interval: float = 5.0,
    probe_interval: float = 1.0,
    probe_timeout: float = 2.0,
    probe_failures: int = 3,
    placement_timeout: float = 30.0,
    connect_timeout: float = 10.0,
    rng: random.Random | None = None,
) -> AsyncIterator[ExecPool]:
    """Run processes across many daemons: one :class:`ExecClient` per endpoint.

    ``endpoints``: ``ws://``/``wss://`` URLs. A URL whose host is a name stands for
    every address the name resolves to (a Kubernetes headless Service:
    ``ws://exec-runtime.agents.svc.cluster.local:8765``), resolved again every
    ``resolve_interval`` seconds: new addresses join, vanished ones take no new work
    and leave once their processes ended. ``resolver`` replaces DNS (``(host, port)``
    to a list of addresses). With ``wss://`` and a name, the certificate is checked
    against the name, the connection goes to each address.

    ``token``/``token_file``/``client_name``/``ssl_context``/``msgpack``/
    ``recovery_deadline``/``ack_output`` are :func:`open_client`'s, for every endpoint.
    An endpoint is probed (``GET /readyz``) every ``probe_interval`` seconds; it takes
    new processes while the probe answers and its client is connected. The pool waits
    up to ``connect_timeout`` for every endpoint's first probe or connection; a call
    waits up to ``placement_timeout`` for a ready endpoint (:class:`NoEndpointError`).
    ``rng`` breaks ties between equally loaded endpoints (seed it to reproduce).
    """
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    if not endpoints:
        raise ValueError("open_pool needs at least one endpoint URL")
    for name, value in (
        ("resolve_interval", resolve_interval),
        ("probe_interval", probe_interval),
        ("probe_timeout", probe_timeout),
        ("placement_timeout", placement_timeout),
        ("connect_timeout", connect_timeout),
    ):
        if not isinstance(value, int | float) or not value > 0 or math.isnan(value):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if not isinstance(probe_failures, int) or probe_failures < 1:
        raise ValueError(f"probe_failures must be a positive int, got {probe_failures!r}")
    sources = [_parse_source(url, ssl_context) for url in endpoints]
    if token is not None and token_file is not None:
        raise ValueError("give token or token_file, not both")
    client_args: dict[str, Any] = {
        "token": token,
        "token_file": token_file,
        "client_name": client_name,
        "msgpack": msgpack,
        "recovery_deadline": recovery_deadline,
        "ack_output": ack_output,
    }
    with unwrap_lone_exception():
        async with trio.open_nursery() as nursery:
            pool = ExecPool(
                nursery,
                sources,
                resolver=resolver or resolve_all,
                client_args=client_args,
                ssl_context=ssl_context,
                resolve_interval=resolve_interval,
                probe_interval=probe_interval,
                probe_timeout=probe_timeout,
                probe_failures=probe_failures,
                placement_timeout=placement_timeout,
                retry_interval=min(1.0, probe_interval),
                rng=rng,
            )
            try:
                await pool._resolve()
                nursery.start_soon(pool._resolve_loop)
                with trio.move_on_after(connect_timeout):
                    for ep in list(pool._endpoints.values()):
                        await ep.settled.wait()
                yield pool
            finally:
                await pool.aclose()


__all__ = [
    "EndpointStatistics",
    "ExecPool",
    "NoEndpointError",
    "PoolProcessHandle",
    "PoolStatistics",
    "Resolver",
    "open_pool",
    "resolve_all",
]
