"""The client's counts as ``exec_client_*`` OpenTelemetry counters (the daemon's
``exec_server_*`` instruments are ``_daemon/metrics.py``)."""

from __future__ import annotations

import threading
import weakref
from typing import Final

from opentelemetry import metrics

import protocol_schema as wire

from .._wire.telemetry import recording

UNKNOWN_METHOD: Final = "unknown"
_METHOD: Final = {m: {"method": m} for m in (*wire.METHODS, UNKNOWN_METHOD)}
_LOCK = threading.Lock()


class ClientMetrics:
    """The client's counts (``ExecClient.statistics()``) as ``exec_client_*`` counters,
    through the host's meter provider (the global one unless the client is given
    one): reconnects, recoveries, gap reads, failed processes, calls by method."""

    def __init__(self, provider: metrics.MeterProvider | None = None) -> None:
        target = recording(provider) or metrics.NoOpMeterProvider()
        with _LOCK:
            counters = _CLIENT_COUNTERS.get(target)
            if counters is None:
                meter = target.get_meter("exec_runtime.client")
                counters = _CLIENT_COUNTERS[target] = tuple(
                    meter.create_counter(f"exec_client_{name}_total", description=description)
                    for name, description in _CLIENT_COUNTS
                )
        self.reconnects, self.recoveries, self.gap_reads, self.failed_processes, self._calls = (
            counters
        )

    def call(self, method: str) -> None:
        self._calls.add(1, _METHOD.get(method) or _METHOD[UNKNOWN_METHOD])


_CLIENT_COUNTS: Final = (
    ("reconnects", "Links the client lost and opened again"),
    ("recoveries", "Sessions the client recovered after a reconnect"),
    ("gap_reads", "process/read calls that filled a gap in the pushed output"),
    ("failed_processes", "Processes the client gave up on (failed)"),
    ("calls", "Calls the client made, by method"),
)
_CLIENT_COUNTERS: weakref.WeakKeyDictionary[metrics.MeterProvider, tuple[metrics.Counter, ...]] = (
    weakref.WeakKeyDictionary()
)
