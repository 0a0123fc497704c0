"""``serve``'s options for operators: log format and metrics (``_daemon/log_format.py``,
``_daemon/metrics.py``, ``_daemon/metrics_export.py``)."""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from .._daemon.log_format import LOG_FORMATS


class AddOption(Protocol):
    def __call__(
        self,
        group: argparse._ActionsContainer,
        flag: str,
        help: str,
        *,
        dest: str | None = None,
        default: str | None = None,
        **kwargs: Any,
    ) -> None: ...


def add_observability_arguments(parser: argparse.ArgumentParser, add: AddOption) -> None:
    add(
        parser,
        "--log-format",
        "text lines, or one JSON object per line (time, level, logger, message, "
        "session fingerprint, process id)",
        choices=LOG_FORMATS,
        default="text",
    )
    group = parser.add_argument_group("metrics (PROTOCOL §12)")
    add(
        group,
        "--metrics",
        "serve GET /metrics (Prometheus text) on the listener, next to /readyz; "
        "it needs the token when the daemon has one. Extra: exec-runtime[prometheus]",
        action="store_true",
    )
    add(
        group,
        "--metrics-otlp-endpoint",
        "push metrics over OTLP/HTTP with delta temporality, e.g. "
        "http://collector:4318/v1/metrics; other OTEL_EXPORTER_OTLP_* variables apply. "
        "Extra: exec-runtime[otlp]",
        metavar="URL",
        default="$OTEL_EXPORTER_OTLP_METRICS_ENDPOINT if set, else off",
    )
