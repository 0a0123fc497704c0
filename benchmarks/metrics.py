"""Metrics overhead: one-shot `/usr/bin/true` through two daemon subprocesses in the
same run, interleaved: one with ``--metrics`` (the OpenTelemetry SDK recording every
request and process, a Prometheus reader behind ``GET /metrics``, scraped at the
end) and one without (the API alone: nothing recorded).
Issue 15's bound: p50 overhead <= 3%.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio

import exec_runtime

from ._common import (
    TRUE,
    Options,
    Row,
    ScenarioResult,
    running_daemon,
    sample_interleaved,
    summary_ms,
)

NAME = "metrics"


async def _scrape(url: str) -> int:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    return len(data)


async def run(opts: Options) -> ScenarioResult:
    n = 100 if opts.quick else 400
    result = ScenarioResult(NAME)
    async with AsyncExitStack() as stack:
        plain = await stack.enter_async_context(running_daemon(opts))
        metered = await stack.enter_async_context(running_daemon(opts, args=["--metrics"]))
        without = await stack.enter_async_context(exec_runtime.open_client(plain.url))
        with_metrics = await stack.enter_async_context(exec_runtime.open_client(metered.url))
        variants = {
            "daemon without metrics": lambda: without.run([TRUE]),
            "daemon --metrics": lambda: with_metrics.run([TRUE]),
        }
        samples = await sample_interleaved(variants, n)
        scraped = await _scrape(metered.url)
        result.figures["rss_mb"] = {"without": plain.rss_mb(), "with": metered.rss_mb()}
    stats = {name: summary_ms(values) for name, values in samples.items()}
    result.figures.update(n=n, latency_ms=stats, metrics_page_bytes=scraped)
    base, ours = stats["daemon without metrics"], stats["daemon --metrics"]
    for q in ("p50", "p95"):
        result.rows.append(
            Row(
                f"one-shot daemon msgpack {q}, --metrics (SDK + Prometheus)",
                ours[q],
                base[q],
                "ms",
                "baseline the same daemon without metrics, interleaved"
                + ("; target ratio <= 1.03" if q == "p50" else ""),
                baseline_label="no metrics",
            )
        )
    return result
