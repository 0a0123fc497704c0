"""Where the daemon's metrics go when ``serve --metrics`` / ``--metrics-otlp-endpoint``
(or ``ServerConfig.metrics`` / ``metrics_otlp_endpoint``) ask: the daemon builds an
OpenTelemetry SDK meter provider of its own, with

- a Prometheus reader (extra ``[prometheus]``), whose text (cumulative) ``GET /metrics``
  serves on the daemon's listener; a scrape collects on the thread it renders in;
- a periodic OTLP/HTTP exporter (extra ``[otlp]``) with delta temporality, configured
  by the standard ``OTEL_EXPORTER_OTLP_*`` variables too (headers, timeout,
  certificates, compression, ``OTEL_METRIC_EXPORT_INTERVAL``), flushed as the daemon
  stops, however it stops.

The SDK and the exporters are imported only here, only when asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.metrics import MeterProvider

from .config import ServerConfig

log = logging.getLogger("exec_runtime.metrics")

PROMETHEUS_EXTRA: Final = "pip install 'exec-runtime[prometheus]'"
OTLP_EXTRA: Final = "pip install 'exec-runtime[otlp]'"
PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
SHUTDOWN_TIMEOUT_MILLIS: Final = 5_000
"""How long the last export may take as the daemon exits."""


def _missing(*modules: str) -> str | None:
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            return module
    return None


def metrics_problem(config: ServerConfig) -> str | None:
    """Why the metrics ``config`` asks for cannot be served, or None."""
    wanted = config.metrics or config.metrics_otlp_endpoint is not None
    if wanted and config.meter_provider is not None:
        return (
            "meter_provider excludes metrics and metrics_otlp_endpoint: the daemon "
            "builds its own provider for those (add your readers to yours instead)"
        )
    if config.metrics:
        if config.listen == "stdio":
            return (
                "--metrics serves GET /metrics on the daemon's listener: it needs a ws:// "
                "--listen address, not stdio (export with --metrics-otlp-endpoint instead)"
            )
        module = _missing(
            "opentelemetry.sdk.metrics", "opentelemetry.exporter.prometheus", "prometheus_client"
        )
        if module is not None:
            return (
                f"--metrics needs the Prometheus exporter ({module} is missing): "
                f"{PROMETHEUS_EXTRA}"
            )
    if config.metrics_otlp_endpoint is not None:
        module = _missing(
            "opentelemetry.sdk.metrics", "opentelemetry.exporter.otlp.proto.http.metric_exporter"
        )
        if module is not None:
            return (
                f"--metrics-otlp-endpoint needs the OTLP/HTTP exporter ({module} is missing): "
                f"{OTLP_EXTRA}"
            )
    return None


def otlp_endpoint_from_env(environ: dict[str, str] | None = None) -> str | None:
    """``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``, which turns the OTLP export on without
    ``--metrics-otlp-endpoint`` (the generic ``OTEL_EXPORTER_OTLP_ENDPOINT`` does not:
    it may be set for traces alone)."""
    env = os.environ if environ is None else environ
    return env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip() or None


class MetricsPipeline:
    """The daemon's own SDK provider and its readers."""

    def __init__(self, config: ServerConfig) -> None:
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader

        readers: list[MetricReader] = []
        self.scrape: Callable[[], bytes] | None = None
        """Renders the Prometheus text (collects: run it off the event loop)."""
        if config.metrics:
            reader, self.scrape = _prometheus()
            readers.append(reader)
        if config.metrics_otlp_endpoint is not None:
            readers.append(_otlp(config.metrics_otlp_endpoint))
        # Flushed by ``serve`` as it ends (bounded), not by the SDK's atexit hook.
        self._provider = SdkMeterProvider(metric_readers=readers, shutdown_on_exit=False)
        self.provider: MeterProvider = self._provider

    def shutdown(self) -> None:
        """Collect and export the last points, then stop the readers (blocking)."""
        try:
            self._provider.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MILLIS)
        except Exception:  # an exporter's failure must not turn an exit into a crash
            log.exception("flushing metrics failed")


def _prometheus() -> tuple[Any, Callable[[], bytes]]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    try:
        reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=registry
        )
    except TypeError:  # an exporter older than its ``registry`` parameter
        registry = REGISTRY
        reader = PrometheusMetricReader(disable_target_info=True)
    return reader, lambda: generate_latest(registry)


def _otlp(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        PeriodicExportingMetricReader,
    )

    delta, cumulative = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
    exporter = OTLPMetricExporter(
        endpoint=endpoint or None,
        preferred_temporality={
            Counter: delta,
            Histogram: delta,
            ObservableCounter: delta,
            ObservableGauge: cumulative,  # a gauge is its last value either way
            UpDownCounter: cumulative,
            ObservableUpDownCounter: cumulative,
        },
    )
    return PeriodicExportingMetricReader(exporter)


async def metrics_response(scrape: Callable[[], bytes]) -> bytes:
    """``GET /metrics``: the Prometheus text, collected off the event loop."""
    import trio

    from .._wire.http import response

    body = await trio.to_thread.run_sync(scrape)
    return response(200, "OK", body, extra=f"Content-Type: {PROMETHEUS_CONTENT_TYPE}\r\n")
