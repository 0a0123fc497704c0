"""Daemon configuration (attrs). Embedders construct it directly; ``exec-runtime serve``
structures it with cattrs from its config file, ``EXEC_RUNTIME_<OPTION>`` variables and
flags (``_cli/serve_options.py``), where each field's validator names the bad value."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

import attrs
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from .._core.sequence import DEFAULT_RETAIN_BYTES, DEFAULT_RETAIN_CHUNKS
from .budget import default_budgets
from .fds import DEFAULT_FD_RESERVE

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_JSON_VALUES: Final = 262_144
DEFAULT_MAX_SESSIONS: Final = 256
DEFAULT_MAX_PROCESSES_PER_SESSION: Final = 4096
DEFAULT_MAX_CLOSED_PROCESSES_PER_SESSION: Final = 128
DEFAULT_MAX_DETACHED_SESSIONS: Final = 64
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 1024
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
DEFAULT_MAX_PENDING_CONNECTIONS: Final = 128
DEFAULT_PING_INTERVAL: Final = 30.0
DEFAULT_PING_TIMEOUT: Final = 20.0
DEFAULT_RESUME_PROBE_TIMEOUT: Final = 5.0
DEFAULT_SHUTDOWN_GRACE: Final = 2.0
DEFAULT_ACK_WINDOW_BYTES: Final = 4 << 20


def _not_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # Written so NaN fails too (every comparison with NaN is false): a NaN TTL would
    # pass a plain ``value < 0`` and crash the daemon at its first deadline.
    # Infinity is allowed: "never" (expire, ping, SIGKILL on shutdown).
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # Finite too: these are limits and timeouts whose point is to bound something.
    if not 0 < value < math.inf:
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value}")


def _valid_token(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    # Never put the value in the message: it may be a real secret with a typo.
    if value is None:
        return
    if not value:
        raise ValueError("the token must not be empty")
    if not all(0x21 <= ord(ch) <= 0x7E for ch in value):
        raise ValueError(
            "the token must be printable ASCII without spaces (it travels in an HTTP header)"
        )


SANDBOX_MECHANISMS: Final = ("bwrap", "landlock")
DEFAULT_SANDBOX_PROFILES: Final = ("read-only", "workspace-write")


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _known_mechanisms(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    unknown = [m for m in value if m not in SANDBOX_MECHANISMS]
    if unknown:
        raise ValueError(
            f"unknown sandbox mechanism {unknown[0]!r}: choose from {', '.join(SANDBOX_MECHANISMS)}"
        )


def _known_profile(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and value not in DEFAULT_SANDBOX_PROFILES:
        raise ValueError(
            f"default_sandbox must be one of {', '.join(DEFAULT_SANDBOX_PROFILES)}, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything ``exec-runtime serve`` can be told. All times are seconds."""

    listen: str = "ws://127.0.0.1:0"
    retain_bytes: int = attrs.field(default=DEFAULT_RETAIN_BYTES, validator=_not_negative)
    retain_chunks: int = attrs.field(default=DEFAULT_RETAIN_CHUNKS, validator=_not_negative)
    ack_window_bytes: int = attrs.field(default=DEFAULT_ACK_WINDOW_BYTES, validator=_positive)
    """For a client that acknowledges output (``process/ack``): unacknowledged output is
    held (never evicted) up to this much per process, then the process is paused until
    acknowledgements arrive. Bigger than ``retain_bytes`` so acks rarely stall a fast
    stream; what is acknowledged is evicted by ``retain_bytes`` as usual."""
    closed_ttl: float = attrs.field(default=30.0, validator=_not_negative)
    detached_ttl: float = attrs.field(default=30.0, validator=_not_negative)

    # --- memory budgets (``_daemon/budget.py``; defaults from the machine's memory) ----
    daemon_output_bytes: int = attrs.field(
        factory=lambda: default_budgets()[0], validator=_positive
    )
    """Process output the daemon holds, over every process: read from the children and
    not yet delivered, retained (payload plus ``CHUNK_COST`` per chunk) and not yet
    acknowledged. Past it the processes whose output would grow it are paused (their
    pumps stop reading, so they block on their full pipes). Default: an eighth of the
    machine's memory, at least 64 MiB."""
    daemon_buffer_bytes: int = attrs.field(
        factory=lambda: default_budgets()[1], validator=_positive
    )
    """Request payloads read and not yet handled, and replies not yet written, over
    every connection. Past it every connection stops reading and big replies wait
    before they are produced. Default: an eighth of the machine's memory, at least
    128 MiB."""
    connection_buffer_bytes: int = attrs.field(
        factory=lambda: default_budgets()[2], validator=_positive
    )
    """The same for one connection: past it that connection stops reading (TCP
    backpressure) and its big replies wait. Default: a sixteenth of the daemon's,
    between 64 and 512 MiB."""

    # --- auth and TLS (PROTOCOL §1) ---------------------------------------------------
    token: str | None = attrs.field(default=None, validator=_valid_token, repr=False)
    """Every WebSocket handshake must carry ``Authorization: Bearer <token>``.
    Kept out of ``repr`` so the config can be logged."""
    allow_unauthenticated: bool = False
    """Allow a non-loopback listen address without a token."""
    tls_cert: str | None = None
    """PEM certificate chain (may also hold the key): serve ``wss://``."""
    tls_key: str | None = None
    """PEM private key, when it is not in ``tls_cert``."""

    # --- limits -----------------------------------------------------------------------
    max_message_bytes: int = attrs.field(default=DEFAULT_MAX_MESSAGE_BYTES, validator=_positive)
    """A bigger message closes the connection (WebSocket close code 1009)."""
    max_json_values: int = attrs.field(default=DEFAULT_MAX_JSON_VALUES, validator=_positive)
    """A message holding more JSON values is rejected with -32600."""
    max_sessions: int = attrs.field(default=DEFAULT_MAX_SESSIONS, validator=_positive)
    """Live sessions (attached or detached); a new one past it gets -32600."""
    max_processes_per_session: int = attrs.field(
        default=DEFAULT_MAX_PROCESSES_PER_SESSION, validator=_positive
    )
    """Processes of one session that are starting or not yet closed; past it -32600."""
    max_closed_processes_per_session: int = attrs.field(
        default=DEFAULT_MAX_CLOSED_PROCESSES_PER_SESSION, validator=_not_negative
    )
    """Closed processes of one session kept for ``process/read`` (each holds up to
    ``retain_bytes``) until their ``closed_ttl`` passes; past it the oldest closed one
    is forgotten early, as if its TTL had passed."""
    max_detached_sessions: int = attrs.field(
        default=DEFAULT_MAX_DETACHED_SESSIONS, validator=_not_negative
    )
    """Past it, the session detached longest ago is ended (its processes killed)."""
    max_concurrent_requests: int = attrs.field(
        default=DEFAULT_MAX_CONCURRENT_REQUESTS, validator=_positive
    )
    """Requests of one connection running at once; the next waits (the connection
    stops reading) until one finishes."""
    handshake_timeout: float = attrs.field(default=DEFAULT_HANDSHAKE_TIMEOUT, validator=_positive)
    """TLS plus the HTTP request head must arrive within this, or the socket is closed."""
    max_pending_connections: int = attrs.field(
        default=DEFAULT_MAX_PENDING_CONNECTIONS, validator=_positive
    )
    """TCP connections still in TLS or the HTTP request head (before the token is
    checked). At the limit the daemon stops accepting, and new connections wait in the
    listen backlog until one finishes. With ``handshake_timeout`` it bounds what
    unauthenticated sockets can hold here (file descriptors, memory)."""
    fd_reserve: int = attrs.field(default=DEFAULT_FD_RESERVE, validator=_not_negative)
    """File descriptors kept free for accepting connections, logging and the orphan
    watchdog (at most an eighth of the limit): a process start or ``fs/open`` that
    would take them is refused with -32600 (``_daemon/fds.py``)."""
    ping_interval: float = attrs.field(default=DEFAULT_PING_INTERVAL, validator=_not_negative)
    """Seconds between WebSocket pings; 0 disables keepalive."""
    ping_timeout: float = attrs.field(default=DEFAULT_PING_TIMEOUT, validator=_positive)
    """A peer that sends nothing for this long after a ping, while the connection is
    otherwise idle (we are not blocked sending to it, and we are reading), is dead:
    the connection is closed and its session detached."""
    resume_probe_timeout: float = attrs.field(
        default=DEFAULT_RESUME_PROBE_TIMEOUT, validator=_positive
    )
    """A resume of a session that is still attached (``-32010``, retryable) pings the
    attached connection; one that does not answer within this is taken for dead (say,
    half-open: its client is gone while we are blocked writing to it) and closed, so
    a retry of the resume succeeds. The regular keepalive would wait as long as we
    are sending."""

    outbox_frames: int = 8
    """Frames queued per connection before notifications apply backpressure."""
    shutdown_grace: float = attrs.field(default=DEFAULT_SHUTDOWN_GRACE, validator=_not_negative)
    """On a graceful shutdown, how long after SIGTERM to every process group before SIGKILL."""
    orphan_watchdog: bool = True
    """Register every process group with a watchdog process that SIGKILLs what is
    still running if this process dies without doing so itself (SIGKILL, the OOM
    killer, a crash). One per process, started at the first spawn (``_daemon/orphans.py``)."""
    tracer_provider: TracerProvider | None = None
    """Where request spans go (PROTOCOL §2 ``trace``); None: OpenTelemetry's global
    provider, which records nothing until an SDK is configured."""
    meter_provider: MeterProvider | None = None
    """Where the daemon's metrics go (PROTOCOL §12, ``_daemon/metrics.py``); None: the global
    provider, which records nothing until an SDK is configured."""
    metrics: bool = False
    """Serve ``GET /metrics`` (Prometheus text) on the listener; extra ``[prometheus]``."""
    metrics_otlp_endpoint: str | None = None
    """Push metrics over OTLP/HTTP (delta temporality) to this URL; extra ``[otlp]``."""
    _start_delay: float = attrs.field(default=0.0, alias="_start_delay", repr=False)
    """Tests only, not an option (no flag, no config key): hold each process/start in
    the starting state this long, to widen the window a test races against."""

    # --- sandbox (PROTOCOL §11) ---------------------------------------------------------
    sandbox_mechanisms: tuple[str, ...] = attrs.field(
        default=("bwrap", "landlock"), converter=_str_tuple, validator=_known_mechanisms
    )
    """The mechanisms that may enforce a sandbox intent, in order of preference; empty
    refuses every sandboxed request (fail closed)."""
    bwrap_path: str | None = None
    """bubblewrap's path; None: ``bwrap`` on PATH."""
    require_sandbox: bool = False
    """Refuse every process/start that asks for no confinement (no intent, or one
    that confines nothing)."""
    default_sandbox: str | None = attrs.field(default=None, validator=_known_profile)
    """``read-only`` or ``workspace-write``: the profile for starts without an intent
    (the workspace is the start's cwd)."""

    def __attrs_post_init__(self) -> None:
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key needs tls_cert")
