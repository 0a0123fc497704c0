"""Where metrics go: shared by the daemon's and the client's instruments."""

from __future__ import annotations

from opentelemetry import metrics


def recording(provider: metrics.MeterProvider | None) -> metrics.MeterProvider | None:
    """The provider to record to, or None when it would record nothing: a no-op
    provider, or OpenTelemetry's global proxy while no SDK was installed behind it
    (checked once, when the daemon starts)."""
    provider = provider or metrics.get_meter_provider()
    if isinstance(provider, metrics.NoOpMeterProvider):
        return None
    if type(provider).__name__ == "_ProxyMeterProvider":
        real = getattr(provider, "_real_meter_provider", provider)
        if real is None:
            return None
    return provider
