"""Daemon metrics (PROTOCOL §12): Codex's ``exec_server_*`` instruments, same names.

One place owns the counts: a :class:`DaemonMetrics` per daemon (the session
registry's), which the connection, the session and the sequencer report to. It keeps
the active counts (connections by transport, processes) under a lock, and feeds the
counters and histograms, whose attribute sets are built once here: nothing on the hot
path formats a label. The active counts are observable gauges, read by callbacks at
each collection, from the SDK reader's own thread (a periodic exporter's, or a
Prometheus scrape's), so a delta-temporality exporter still sees them every interval.

Only the OpenTelemetry API is used here. With no SDK behind the provider (the
default: a global provider nobody configured) nothing is recorded at all. Attributes
never carry ids, paths, commands, URLs or tokens: only the fixed vocabularies below.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

import protocol_schema as wire

from .._wire.telemetry import recording

TRANSPORTS: Final = ("websocket", "stdio", "relay")
REQUEST_RESULTS: Final = ("success", "error", "disconnected")
PROCESS_RESULTS: Final = ("success", "error", "terminated")
UNKNOWN_METHOD: Final = "unknown"
METHODS: Final = (*wire.METHODS, UNKNOWN_METHOD)
BUCKETS: Final = (
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
)
"""Histogram bucket boundaries, seconds (PROTOCOL §12)."""

Attributes = Mapping[str, str]

_TRANSPORT: Final[dict[str, Attributes]] = {t: {"transport": t} for t in TRANSPORTS}
_METHOD: Final[dict[str, Attributes]] = {m: {"method": m} for m in METHODS}
_REQUEST: Final[dict[tuple[str, str], Attributes]] = {
    (m, r): {"method": m, "result": r} for m in METHODS for r in REQUEST_RESULTS
}
_PROCESS: Final[dict[str, Attributes]] = {r: {"result": r} for r in PROCESS_RESULTS}

VOCABULARY: Final = frozenset((*TRANSPORTS, *REQUEST_RESULTS, *PROCESS_RESULTS, *METHODS))
"""Every value an attribute of ours can take."""

clock: Final = time.perf_counter


class _Instruments:
    """The instruments of one meter provider, shared by every daemon recording to it
    (an SDK returns an instrument created twice once, without the second callback:
    the gauges' callbacks sum over the live daemons instead)."""

    def __init__(self, provider: metrics.MeterProvider) -> None:
        self.lock = threading.Lock()
        """Guards every count of every daemon here, and ``live``: the callbacks run
        on the SDK reader's thread."""
        self.live: weakref.WeakSet[DaemonMetrics] = weakref.WeakSet()
        meter = provider.get_meter("exec_runtime")
        self.connections_total = meter.create_counter(
            "exec_server_connections_total", description="Connections accepted"
        )
        self.requests_total = meter.create_counter(
            "exec_server_requests_total", description="Requests answered, by method and result"
        )
        self.request_duration = meter.create_histogram(
            "exec_server_request_duration_seconds",
            unit="s",
            description="From a request's handler starting to its answer",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        self.request_queue_duration = meter.create_histogram(
            "exec_server_request_queue_duration_seconds",
            unit="s",
            description="From a request's arrival to its handler starting",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        self.processes_finished = meter.create_counter(
            "exec_server_processes_finished_total", description="Processes ended, by result"
        )
        self.process_duration = meter.create_histogram(
            "exec_server_process_duration_seconds",
            unit="s",
            description="From a process's spawn to its end",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        meter.create_observable_gauge(
            "exec_server_connections_active",
            callbacks=[self._connections_active],
            description="Connections open, by transport",
        )
        meter.create_observable_gauge(
            "exec_server_processes_active",
            callbacks=[self._processes_active],
            description="Processes running (spawned, not yet ended)",
        )

    def _connections_active(self, options: CallbackOptions) -> Iterable[Observation]:
        totals = dict.fromkeys(TRANSPORTS, 0)
        with self.lock:
            for daemon in self.live:
                for transport, count in daemon.connections_active.items():
                    totals[transport] += count
        return [Observation(count, _TRANSPORT[t]) for t, count in totals.items()]

    def _processes_active(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            total = sum(daemon.processes_active for daemon in self.live)
        return [Observation(total)]


_BY_PROVIDER: weakref.WeakKeyDictionary[metrics.MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)
_BY_PROVIDER_LOCK = threading.Lock()


def _instruments_for(provider: metrics.MeterProvider) -> _Instruments:
    with _BY_PROVIDER_LOCK:
        instruments = _BY_PROVIDER.get(provider)
        if instruments is None:
            instruments = _BY_PROVIDER[provider] = _Instruments(provider)
        return instruments


def transport_kind(transport: object) -> str:
    """``websocket``, ``stdio`` (a byte stream of lines), or ``relay``: an in-process
    connection (``open_local``), relayed through memory channels."""
    name = type(transport).__name__
    if "WebSocket" in name:
        return "websocket"
    if name == "StreamLineTransport":
        return "stdio"
    return "relay"


class DaemonMetrics:
    """The counts of one daemon, and where its events are recorded."""

    def __init__(self, provider: metrics.MeterProvider | None = None) -> None:
        target = recording(provider)
        self._instruments = _instruments_for(target) if target is not None else None
        self.enabled = self._instruments is not None
        self._lock = self._instruments.lock if self._instruments else threading.Lock()
        self.connections_active = dict.fromkeys(TRANSPORTS, 0)
        self.processes_active = 0
        self.stopping = False
        """A graceful shutdown began: every process ending from here on was ended by
        it (``terminated``), whatever its exit code."""
        if self._instruments is not None:
            with self._lock:
                self._instruments.live.add(self)

    def close(self) -> None:
        """The daemon is gone: its counts leave the gauges."""
        if self._instruments is not None:
            with self._lock:
                self._instruments.live.discard(self)

    # --- connections ------------------------------------------------------------------

    def connection_opened(self, transport: object) -> Callable[[], None]:
        """Count a connection; returns what records its end (once, however often it
        is called)."""
        instruments = self._instruments
        if instruments is None:
            return _nothing
        kind = transport_kind(transport)
        with self._lock:
            self.connections_active[kind] += 1
        instruments.connections_total.add(1, _TRANSPORT[kind])
        ended = False

        def connection_ended() -> None:
            nonlocal ended
            if not ended:
                ended = True
                with self._lock:
                    self.connections_active[kind] -= 1

        return connection_ended

    # --- requests ---------------------------------------------------------------------

    def request_started(self, method: str, received: float) -> float:
        """A request's handler starts: record its time queued (since ``received``, a
        :data:`clock` reading when it was read); returns the start time."""
        now = clock()
        if self._instruments is not None and received:
            attributes = _METHOD.get(method) or _METHOD[UNKNOWN_METHOD]
            self._instruments.request_queue_duration.record(now - received, attributes)
        return now

    def request_done(self, method: str, result: str, started: float) -> None:
        instruments = self._instruments
        if instruments is None:
            return
        elapsed = clock() - started
        attributes = _REQUEST.get((method, result)) or _REQUEST[UNKNOWN_METHOD, result]
        instruments.requests_total.add(1, attributes)
        instruments.request_duration.record(elapsed, attributes)

    def request_answered_inline(self, method: str, success: bool, received: float) -> None:
        """A request answered by the reader itself (the handshake, an unknown method,
        invalid params): it spent no time queued."""
        instruments = self._instruments
        if instruments is not None:
            attributes = _METHOD.get(method) or _METHOD[UNKNOWN_METHOD]
            instruments.request_queue_duration.record(0.0, attributes)
            self.request_done(method, "success" if success else "error", received)

    # --- processes --------------------------------------------------------------------

    def process_started(self) -> ProcessRecord:
        if self._instruments is None:
            return NO_PROCESS
        with self._lock:
            self.processes_active += 1
        return ProcessRecord(self)

    def _process_ended(self, result: str, started: float) -> None:
        assert self._instruments is not None
        with self._lock:
            self.processes_active -= 1
        self._instruments.processes_finished.add(1, _PROCESS[result])
        self._instruments.process_duration.record(clock() - started, _PROCESS[result])


def _nothing() -> None:
    pass


class ProcessRecord:
    """One process's end, recorded once: at its exit (``exited``), or, for one the
    daemon killed before an exit was recorded (its session ended, the daemon shut
    down), when it is reaped (``ended``)."""

    __slots__ = ("_metrics", "_started", "done", "terminating")

    def __init__(self, daemon: DaemonMetrics | None) -> None:
        self._metrics = daemon
        self._started = clock()
        self.done = daemon is None
        self.terminating = False
        """``process/terminate`` killed it: it ends ``terminated``."""

    def exited(self, exit_code: int) -> None:
        if self.done:
            return
        assert self._metrics is not None
        if self.terminating or self._metrics.stopping:
            result = "terminated"
        else:
            result = "success" if exit_code == 0 else "error"
        self._finish(result)

    def ended(self) -> None:
        if not self.done:
            self._finish("terminated")

    def _finish(self, result: str) -> None:
        self.done = True
        assert self._metrics is not None
        self._metrics._process_ended(result, self._started)


NO_PROCESS: Final = ProcessRecord(None)
"""The record of a process nobody meters (metrics disabled, or never spawned)."""
NO_METRICS: Final = DaemonMetrics(metrics.NoOpMeterProvider())
"""Records nothing: the default until a registry is given its own."""
