"""Scenario 1: `/usr/bin/true` end to end, one call at a time.

Ours: ``client.run([TRUE])`` through a daemon subprocess on loopback (msgpack frames, and
JSON frames as a second row). Baselines in the same run, interleaved in blocks of 25:
``trio.run_process`` in this process (the floor: the same spawn, pipes captured) and
``open_local()`` (the same client and daemon code over an in-memory transport).
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
    client_profile,
    running_daemon,
    sample_after_idle,
    sample_interleaved,
    summary_ms,
)

NAME = "one-shot"


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
