"""Connecting: ``open_client`` dials a daemon (``ws://``/``wss://``) and maps every
failure to :class:`ConnectError`. ``open_local`` (``_local.py``) shares ``client_from``."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from errno import ECONNREFUSED
from urllib.parse import urlsplit

import trio
from opentelemetry.metrics import MeterProvider

import protocol_schema as wire

from .._errors import ConnectError, ConnectionRejectedError, ExecRuntimeError
from .._wire.transport import (
    CLIENT_MAX_MESSAGE_BYTES,
    MessageTransport,
    TransportClosed,
)
from .._wire.websocket import WebSocketMessageTransport
from .._wire.websocket_handshake import HandshakeError, UpgradeRejected, handshake
from .args import check_client_options
from .client import Connector, ExecClient


class WebSocketConnector:
    """Dials the daemon; offers msgpack frames and falls back to JSON if not accepted."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        msgpack: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.token = token
        self.ssl_context = ssl_context
        self.msgpack = msgpack
        self.connect_timeout = connect_timeout

    async def connect(self, nursery: trio.Nursery) -> MessageTransport:
        """Raises :class:`ConnectError` (``ConnectionRejectedError`` for an HTTP
        refusal) for every failure to connect, naming the likely cause; a bad URL is
        a ``ValueError``. Nothing of ssl or trio escapes."""
        try:
            return await self._connect()
        except ExecRuntimeError:
            raise
        except ValueError as exc:
            if not isinstance(exc, ssl.SSLError):  # SSLCertVerificationError is both
                raise  # a bad URL: the caller's mistake
            raise self._connect_error(exc) from exc
        except trio.TooSlowError:
            raise ConnectError(
                f"cannot connect to {self.url}: no answer within {self.connect_timeout:g} s "
                "(is the daemon up, and is this its URL?)"
            ) from None
        except (HandshakeError, trio.BrokenResourceError, OSError) as exc:
            raise self._connect_error(exc) from exc

    def _connect_error(self, exc: Exception) -> ConnectError:
        url = self.url
        if isinstance(exc, UpgradeRejected):
            hint = {
                401: " (a missing or wrong token: token=, token_file= or $EXEC_RUNTIME_TOKEN)",
                403: " (a browser Origin is refused)",
            }.get(exc.status_code, "")
            return ConnectionRejectedError(
                f"{url}: the daemon refused the connection: HTTP {exc.status_code}{hint}",
                exc.status_code,
                exc.body,
            )
        if isinstance(exc, HandshakeError):
            return ConnectError(f"cannot connect to {url} (is it an exec-runtime daemon?): {exc}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ConnectError(
                f"cannot connect to {url}: the daemon's TLS certificate is not trusted "
                f"({exc}); pass ssl_context= with its CA",
                errno=exc.errno,
            )
        if isinstance(exc, ssl.SSLError):
            hint = ""
            if exc.reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"):
                hint = " (the daemon answered in plain text: it serves ws://, not wss://)"
            return ConnectError(f"cannot connect to {url}: TLS handshake failed: {exc}{hint}")
        if isinstance(exc, trio.BrokenResourceError):
            return ConnectError(
                f"cannot connect to {url}: the connection closed during the TLS handshake "
                "(does the daemon serve wss://?)"
            )
        errno = _errno_of(exc)
        hint = ""
        if errno == ECONNREFUSED:
            hint = " (connection refused: is the daemon running, and on this port?)"
        return ConnectError(f"cannot connect to {url}: {exc}{hint}", errno=errno)

    async def _connect(self) -> MessageTransport:
        headers = []
        if self.token is not None:
            headers.append((b"Authorization", f"Bearer {self.token}".encode()))
        with trio.fail_after(self.connect_timeout):
            stream, host, resource = await _open_stream(self.url, self.ssl_context)
            try:
                ws = await handshake(
                    stream,
                    host,
                    resource,
                    subprotocols=[wire.MSGPACK_SUBPROTOCOL] if self.msgpack else [],
                    extra_headers=headers,
                    max_message_size=CLIENT_MAX_MESSAGE_BYTES,
                )
            except TransportClosed as exc:
                await trio.aclose_forcefully(stream)
                hint = ""
                if urlsplit(self.url).scheme == "ws":
                    hint = " (if the daemon serves wss://, use a wss:// URL)"
                raise ConnectError(f"{self.url}: {exc}{hint}") from None
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return WebSocketMessageTransport(ws, wire.codec_for_subprotocol(ws.subprotocol))


async def _open_stream(
    url: str, ssl_context: ssl.SSLContext | None
) -> tuple[trio.SocketStream | trio.SSLStream[trio.SocketStream], str, str]:
    """TCP (and TLS) to ``url``: (stream, Host header, resource).

    The TLS handshake is done here, so a certificate the client does not trust raises
    ``ssl.SSLCertVerificationError`` (an OSError) itself, instead of surfacing at the
    WebSocket handshake's first write as a connection that merely closed.
    """
    host, port, secure, host_header, resource = open_stream_arguments(url, ssl_context)
    tcp = await trio.open_tcp_stream(host, port)
    if not secure:
        return tcp, host_header, resource
    tls = trio.SSLStream(
        tcp,
        ssl_context or ssl.create_default_context(),
        server_hostname=host,
        https_compatible=True,
    )
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(tcp)
        if isinstance(exc.__cause__, ssl.SSLError):
            raise exc.__cause__ from None
        raise
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls, host_header, resource


def _errno_of(exc: BaseException) -> int | None:
    """The errno of an OSError, or of the first attempt trio's ``open_tcp_stream``
    made (its "all attempts failed" error has none of its own)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        return _errno_of(cause.exceptions[0])
    if cause is not None:
        return _errno_of(cause)
    return None


def open_stream_arguments(
    url: str, ssl_context: ssl.SSLContext | None
) -> tuple[str, int, bool, str, str]:
    """(host, port, secure, Host header, resource) of a daemon URL; ValueError if bad."""
    if not isinstance(url, str):
        raise TypeError(f"the daemon URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"the daemon URL must be ws:// or wss://, got {url!r}")
    if parts.scheme == "ws" and ssl_context is not None:
        raise ValueError("ssl_context needs a wss:// URL")
    host = parts.hostname
    if host is None:
        raise ValueError(f"no host in {url!r}")
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}: {exc}") from None
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    return host, port, secure, host_header, resource


def _read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path``, stripped (``serve --token-file``'s rule)."""
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read token_file {os.fspath(path)!r}: {exc}") from exc
    if not token:
        raise ValueError(f"token_file {os.fspath(path)!r} is empty")
    return token


@asynccontextmanager
async def open_client(
    url: str,
    *,
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    client_name: str = "exec-runtime",
    ssl_context: ssl.SSLContext | None = None,
    msgpack: bool = True,
    recovery_deadline: float = 25.0,
    ack_output: bool = True,
    meter_provider: MeterProvider | None = None,
) -> AsyncIterator[ExecClient]:
    """Connect to ``exec-runtime serve`` (``ws://`` or ``wss://``) and start a session.

    The client reconnects and resumes the session on its own if the connection drops.
    With ``ack_output`` (the default, where the daemon supports it) the client
    acknowledges the output it received, and the daemon holds what is unacknowledged
    instead of evicting it: a drop loses nothing, and a client that falls a whole
    retention window behind pauses the process rather than losing its output.

    The bearer token is ``token``, else the content of ``token_file``, else
    ``$EXEC_RUNTIME_TOKEN`` (as ``serve`` and ``run`` read it), else none.

    ``meter_provider``: where the client's ``exec_client_*`` counters go (reconnects,
    recoveries, gap reads, failed processes, calls); default OpenTelemetry's global
    provider, which records nothing until an SDK is configured.

    Errors: a bad ``url`` or arguments raise ``ValueError``/``TypeError`` at once;
    failing to connect raises :class:`ConnectError` (refused, unreachable, timed out,
    TLS, ``ws://``/``wss://`` mismatch, not a daemon), :class:`ConnectionRejectedError`
    with ``status_code`` for an HTTP refusal (401: the token). Both are
    :class:`TransportError` and ``ConnectionError``; ``__cause__`` has the details.
    """
    open_stream_arguments(url, ssl_context)  # ValueError now, not at the first connect
    check_client_options(
        client_name=client_name,
        meter_provider=meter_provider,
        recovery_deadline=recovery_deadline,
        ack_output=ack_output,
        msgpack=msgpack,
        ssl_context=ssl_context,
    )
    if token is not None and token_file is not None:
        raise ValueError("give token or token_file, not both")
    if token is not None and not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    if token_file is not None:
        token = _read_token_file(token_file)
    elif token is None:
        token = os.environ.get("EXEC_RUNTIME_TOKEN", "").strip() or None
    connector = WebSocketConnector(url, token=token, ssl_context=ssl_context, msgpack=msgpack)
    async with client_from(
        connector,
        client_name,
        recovery_deadline=recovery_deadline,
        ack_output=ack_output,
        meter_provider=meter_provider,
    ) as client:
        yield client


@asynccontextmanager
async def client_from(
    connector: Connector,
    client_name: str,
    *,
    recovery_deadline: float = 25.0,
    ack_output: bool = True,
    meter_provider: MeterProvider | None = None,
    final_read: bool = False,
) -> AsyncIterator[ExecClient]:
    """A client on ``connector``, its tasks in a nursery of its own, closed on exit
    (``open_client``, ``open_local`` and the testing stacks). ``final_read``: the
    wide-area benchmark's A/B switch (``benchmarks/wide_area.py``)."""
    with unwrap_lone_exception():
        async with trio.open_nursery() as nursery:
            client = ExecClient._create(
                connector,
                nursery,
                client_name=client_name,
                recovery_deadline=recovery_deadline,
                ack_output=ack_output,
                final_read=final_read,
                meter_provider=meter_provider,
            )
            await nursery.start(client._supervise)
            try:
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()


@contextmanager
def unwrap_lone_exception() -> Iterator[None]:
    """Re-raise a lone exception leaving our internal nurseries as itself.

    Trio wraps whatever leaves a nursery (the ``async with`` body's exception too) in
    an ExceptionGroup. The nurseries here are an implementation detail, so a caller
    gets ``OSError`` for a refused connection, or its own ``CalledProcessError``,
    as itself. Two or more distinct exceptions stay grouped.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, BaseExceptionGroup):
            raise
        raise leaf from leaf.__cause__
