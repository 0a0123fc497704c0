"""Scenario 5: drop the connection during a 10 MB stream (quick: the same).

The client reaches a daemon subprocess through a :class:`DelayProxy` with no delay.
Once 30% of the stream has been received, the proxy cuts the connection on both sides
(the daemon sees it close and detaches the session). We record the time from the cut
until the client reports the recovery done (``statistics().recoveries`` goes up, which
happens after its catch-up ``process/read``), the time until ``Closed``, and the bytes
lost (expected minus received; must be 0), over five drops per stream (the median).

Two streams: ``head -c 10000000 /dev/zero`` at full speed, and a paced one (160 x
62,500 bytes, 10 ms apart). Baselines in the same run: a fresh ``open_client``
handshake through the same proxy (what a reconnect must at least cost), and the same
stream with no drop.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import trio

import exec_runtime

from ._common import Options, Row, ScenarioResult, running_daemon
from .delay_proxy import DelayProxy

NAME = "recovery"
TOTAL = 10_000_000
DROP_FRACTION = 0.3
TRIALS = 5
"""Drops per stream (quick: 1): one drop's recovery time swings by 2x from run to run."""
MANY = 20
"""Running processes in the many-processes recovery (a delay proxy, 80 ms RTT)."""
STREAMS = {
    "full-speed": ["head", "-c", str(TOTAL), "/dev/zero"],
    "paced": [
        "sh",
        "-c",
        "i=0; while [ $i -lt 160 ]; do head -c 62500 /dev/zero; sleep 0.01; i=$((i+1)); done",
    ],
}


async def stream_once(url: str, argv: list[str], proxy: DelayProxy | None) -> dict[str, Any]:
    """Stream ``argv``; if ``proxy`` is given, cut it at DROP_FRACTION of the bytes."""
    received = 0
    failure: str | None = None
    t_drop = t_recovered = None
    async with exec_runtime.open_client(url) as client, trio.open_nursery() as nursery:

        async def watch_recovery() -> None:
            nonlocal t_recovered
            while True:  # poll: the client has no recovery hook, and 0.5 ms is fine here
                if client.statistics().recoveries:
                    t_recovered = time.perf_counter()
                    return
                await trio.sleep(0.0005)

        start = time.perf_counter()
        proc = await client.start(argv)
        async for event in proc.events():
            if isinstance(event, exec_runtime.Output):
                received += len(event.data)
                if proxy is not None and t_drop is None and received >= TOTAL * DROP_FRACTION:
                    nursery.start_soon(watch_recovery)
                    t_drop = time.perf_counter()
                    proxy.cut()
            elif isinstance(event, exec_runtime.Failed):
                failure = event.message
        t_end = time.perf_counter()
        stats = client.statistics()
        nursery.cancel_scope.cancel()
    figures: dict[str, Any] = {
        "received": received,
        "bytes_lost": TOTAL - received,
        "failure": failure,
        "total_s": t_end - start,
        "reconnects": stats.reconnects,
        "recoveries": stats.recoveries,
        "process_read_calls": stats.calls.get("process/read", 0),
    }
    if t_drop is not None:
        figures["drop_at_bytes"] = int(TOTAL * DROP_FRACTION)
        figures["drop_to_caught_up_ms"] = (
            (t_recovered - t_drop) * 1000 if t_recovered is not None else None
        )
        figures["drop_to_closed_ms"] = (t_end - t_drop) * 1000
    return figures


async def resume_ms(url: str, proxy: DelayProxy, processes: int) -> float:
    """Start ``processes`` that print a line and wait; once each line arrived, cut the
    link; the time until the client has resumed them all (its recovery count goes up,
    after every catch-up read was answered)."""
    argv = ["sh", "-c", "echo up; exec sleep 60"]
    async with exec_runtime.open_client(url) as client:
        procs = [await client.start(argv) for _ in range(processes)]
        for proc in procs:
            async for event in proc.events():
                if isinstance(event, exec_runtime.Output):
                    break
        start = time.perf_counter()
        proxy.cut()
        while not client.statistics().recoveries:  # noqa: ASYNC110 - no recovery hook to wait on
            await trio.sleep(0.0005)
        elapsed = (time.perf_counter() - start) * 1000
        for proc in procs:
            await proc.kill()
    return elapsed


async def handshake_ms(url: str, repeats: int = 5) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        async with exec_runtime.open_client(url):
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def run(opts: Options) -> ScenarioResult:
    result = ScenarioResult(NAME)
    trials = 1 if opts.quick else TRIALS
    async with running_daemon(opts) as daemon, trio.open_nursery() as nursery:
        host, port = daemon.url.removeprefix("ws://").rsplit(":", 1)
        proxy: DelayProxy = await nursery.start(DelayProxy(host, int(port)).run)
        connect_ms = await handshake_ms(proxy.url)
        for name, argv in STREAMS.items():
            clean = await stream_once(proxy.url, argv, None)
            drops = [await stream_once(proxy.url, argv, proxy) for _ in range(trials)]
            caught_up = [d["drop_to_caught_up_ms"] for d in drops]
            result.figures[name] = {
                "argv": argv,
                "no_drop": clean,
                "with_drop": drops,
                "drop_to_caught_up_ms": caught_up,
            }
            lost = max(d["bytes_lost"] for d in drops)
            failures = [d["failure"] for d in drops if d["failure"]]
            note = f"failures: {failures}" if failures else "no failure"
            timed = [ms for ms in caught_up if ms is not None]
            shown = ", ".join(f"{ms:.1f}" for ms in timed)
            result.rows += [
                Row(
                    f"recovery {name}: drop -> caught up",
                    statistics.median(timed) if timed else None,
                    connect_ms,
                    "ms",
                    f"median of {trials} drops ({shown}); baseline fresh open_client "
                    f"handshake; {note}",
                    baseline_label="fresh handshake",
                ),
                Row(
                    f"recovery {name}: bytes lost",
                    float(lost),
                    0.0,
                    "B",
                    f"must be 0, most of any of {trials} drops; "
                    f"{sum(d['recoveries'] for d in drops)} recoveries, "
                    f"{sum(d['process_read_calls'] for d in drops)} reads",
                    baseline_label="target",
                ),
                Row(
                    f"recovery {name}: total with drop",
                    statistics.median(d["total_s"] for d in drops) * 1000,
                    clean["total_s"] * 1000,
                    "ms",
                    "median; baseline the same stream with no drop",
                    baseline_label="no drop",
                ),
            ]
        result.figures["fresh_handshake_ms"] = connect_ms
        # A session of many running processes over a long link: each needs a catch-up
        # read, and one round trip for all of them is what the client aims at.
        far: DelayProxy = await nursery.start(DelayProxy(host, int(port), delay=0.04).run)
        many = [await resume_ms(far.url, far, MANY) for _ in range(trials)]
        one = [await resume_ms(far.url, far, 1) for _ in range(trials)]
        result.figures["many_processes"] = {"processes": MANY, "ms": many, "one_ms": one}
        result.rows.append(
            Row(
                f"recovery, {MANY} running processes at 80 ms RTT: drop -> caught up",
                statistics.median(many),
                statistics.median(one),
                "ms",
                f"median of {trials} ({', '.join(f'{ms:.0f}' for ms in many)}); "
                "baseline one process through the same link",
                baseline_label="one process",
            )
        )
        nursery.cancel_scope.cancel()
    return result
