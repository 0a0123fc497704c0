"""``serve``'s options for operators: log format and metrics (``_logging.py``,
``_metrics.py``, ``_metrics_export.py``)."""

from __future__ import annotations

import argparse

from .._daemon.log_format import LOG_FORMATS


def add_observability_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text lines, or one JSON object per line (time, level, logger, message, "
        "session fingerprint, process id); default %(default)s",
    )
    group = parser.add_argument_group("metrics (PROTOCOL §12)")
    group.add_argument(
        "--metrics",
        action="store_true",
        help="serve GET /metrics (Prometheus text) on the listener, next to /readyz; "
        "it needs the token when the daemon has one. Extra: exec-runtime[prometheus]",
    )
    group.add_argument(
        "--metrics-otlp-endpoint",
        metavar="URL",
        help="push metrics over OTLP/HTTP with delta temporality, e.g. "
        "http://collector:4318/v1/metrics (default: $OTEL_EXPORTER_OTLP_METRICS_ENDPOINT "
        "if set; other OTEL_EXPORTER_OTLP_* variables apply). Extra: exec-runtime[otlp]",
    )
