"""Scenario 1: `/usr/bin/true` end to end, one call at a time.

Ours: ``client.run([TRUE])`` through a daemon subprocess on loopback (msgpack frames, and
JSON frames as a second row). Baselines in the same run, interleaved in blocks of 25:
``trio.run_process`` in this process (the floor: the same spawn, pipes captured) and
``open_local()`` (the same client and daemon code over an in-memory transport).

With many descriptors open: the same ``open_local()`` one-shot against
``trio.run_process``, both in this process while it holds ``BUSY_FDS`` more open
descriptors (pipes), as a daemon running ~2,700 processes does (about six each). A
fork copies the forking thread's descriptor table and the child closes it, so a
spawn from a thread that shares the process's table pays for every one of them; the
daemon's spawn threads keep tables of their own (``_daemon/spawner.py``).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager

import trio

import exec_runtime

from ._common import (
    TRUE,
    Options,
    Row,
    ScenarioResult,
    client_profile,
    running_daemon,
    sample_after_idle,
    sample_interleaved,
    summary_ms,
)

NAME = "one-shot"
BUSY_FDS = 16_000


@contextmanager
def busy_descriptors(wanted: int) -> Iterator[int]:
    """Hold ``wanted`` more open descriptors (fewer if the hard limit is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held: list[int] = []
    try:
        while len(held) < min(wanted, hard - 2_000):
            held += os.pipe()
        yield len(held)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def floor_true() -> None:
    await trio.run_process([TRUE], capture_stdout=True, capture_stderr=True)


async def run(opts: Options) -> ScenarioResult:
    n = 50 if opts.quick else 200
    result = ScenarioResult(NAME)
    async with AsyncExitStack() as stack:
        daemon = await stack.enter_async_context(running_daemon(opts, profile_name=NAME))
        remote = await stack.enter_async_context(exec_runtime.open_client(daemon.url))
        remote_json = await stack.enter_async_context(
            exec_runtime.open_client(daemon.url, msgpack=False)
        )
        local = await stack.enter_async_context(exec_runtime.open_local())
        variants = {
            "trio.run_process": floor_true,
            "open_local": lambda: local.run([TRUE]),
            "daemon msgpack": lambda: remote.run([TRUE]),
            "daemon json": lambda: remote_json.run([TRUE]),
        }
        async with client_profile(opts, NAME):
            samples = await sample_interleaved(variants, n)
            idle_n = 20 if opts.quick else 60
            idle_variants = {k: variants[k] for k in ("trio.run_process", "daemon msgpack")}
            idle_samples = await sample_after_idle(idle_variants, idle_n)
            busy_variants = {k: variants[k] for k in ("trio.run_process", "open_local")}
            with busy_descriptors(BUSY_FDS) as busy_fds:
                busy_samples = await sample_interleaved(busy_variants, n // 2)
        reads = {
            "daemon msgpack": remote.statistics().calls.get("process/read", 0),
            "daemon json": remote_json.statistics().calls.get("process/read", 0),
            "open_local": local.statistics().calls.get("process/read", 0),
        }
        calls = {
            "daemon msgpack": remote.statistics().calls,
            "daemon json": remote_json.statistics().calls,
            "open_local": local.statistics().calls,
        }
        result.figures["daemon_rss_mb"] = daemon.rss_mb()
    stats = {name: summary_ms(values) for name, values in samples.items()}
    result.figures.update(n=n, argv=[TRUE], latency_ms=stats, process_read_calls=reads, calls=calls)
    floor = stats["trio.run_process"]
    for name in ("daemon msgpack", "daemon json", "open_local"):
        ours = stats[name]
        for q in ("p50", "p95", "p99"):
            notes = f"baseline trio.run_process; reads={reads[name]}"
            if q == "p50" and name == "daemon msgpack":
                notes += "; target ratio <= 2, reads 0"
            result.rows.append(
                Row(
                    f"one-shot {name} {q}",
                    ours[q],
                    floor[q],
                    "ms",
                    notes,
                    baseline_label="trio.run_process",
                )
            )
    starts = sum(c.get("process/start", 0) for c in calls.values())
    idle = {name: summary_ms(values) for name, values in idle_samples.items()}
    result.figures["after_idle_latency_ms"] = idle
    result.figures["after_idle_s"] = 0.05
    result.rows.append(
        Row(
            "one-shot daemon msgpack p50, each call after 50 ms idle",
            idle["daemon msgpack"]["p50"],
            idle["trio.run_process"]["p50"],
            "ms",
            f"baseline trio.run_process after the same idle; n={idle_n} each",
            baseline_label="trio.run_process",
        )
    )
    busy = {name: summary_ms(values) for name, values in busy_samples.items()}
    result.figures["busy_latency_ms"] = busy
    result.figures["busy_fds"] = busy_fds
    result.rows.append(
        Row(
            f"one-shot open_local p50, {busy_fds:,} more descriptors open",
            busy["open_local"]["p50"],
            busy["trio.run_process"]["p50"],
            "ms",
            f"baseline trio.run_process with the same descriptors open; n={n // 2} each",
            baseline_label="trio.run_process",
        )
    )
    result.rows.append(
        Row(
            "one-shot process/read calls",
            float(reads["daemon msgpack"] + reads["daemon json"] + reads["open_local"]),
            0.0,
            "calls",
            f"over all {starts} runs above (incl. warm-up and idle runs); must be 0",
            baseline_label="target",
        )
    )
    return result
