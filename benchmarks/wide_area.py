"""Scenario 2: wide-area A/B, pushed completion vs final-read completion.

A :class:`DelayProxy` adds 40 ms each way (about 80 ms RTT) between the client and a
daemon subprocess. Two clients share the proxy and the daemon: one completes from pushed
events (the default), the other with the private ``final_read=True`` switch (set through
``client_from``; not public API), which makes ``run()`` issue one zero-wait
``process/read`` after the pushed events before it returns.

Per call we record, by wrapping the client's ``_call`` on the instance (timestamps only,
no change in behaviour):

- e2e: ``client.run([TRUE])`` from call to return;
- completion wait: from the ``process/start`` response to ``run()`` returning, i.e. the
  wait for pushed exit/close plus, in final-read mode, the final read;
- final read RPC: the duration of the ``process/read`` call inside ``run()`` (final-read
  mode). For the pushed client, which makes no read, we time one direct
  ``process/read`` on the finished process after each run instead (not part of e2e).

Median of 3 runs x 30 calls (quick: 1 x 10) of each statistic; the runs alternate
between the two clients so drift hits both alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import exec_runtime
import protocol_schema as wire
from exec_runtime._client.connect import WebSocketConnector, client_from

from ._common import TRUE, Options, Row, ScenarioResult, percentile, running_daemon
from .delay_proxy import DelayProxy

NAME = "wide-area"
ONE_WAY_DELAY = 0.040


class CallTimer:
    """Wraps ``client._call`` on one client instance; records (method, params, start, end)."""

    def __init__(self, client: exec_runtime.ExecClient) -> None:
        self.records: list[tuple[str, Any, float, float]] = []
        original: Callable[..., Awaitable[Any]] = client._call

        async def timed_call(method: str, params: Any, result_type: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(method, params, result_type, **kwargs)
            finally:
                self.records.append((method, params, start, time.perf_counter()))

        client._call = timed_call  # type: ignore[method-assign]


async def direct_read_ms(client: exec_runtime.ExecClient, process_id: str) -> float:
    params = wire.ProcessReadParams(process_id=process_id, after_seq=0, wait_ms=0)
    start = time.perf_counter()
    await client._call("process/read", params, wire.ProcessReadResult)
    return (time.perf_counter() - start) * 1000


async def one_run(
    client: exec_runtime.ExecClient, timer: CallTimer, calls: int, direct_read: bool
) -> dict[str, float]:
    e2e, wait, read_rpc, start_rpc = [], [], [], []
    for _ in range(calls):
        timer.records.clear()
        t0 = time.perf_counter()
        await client.run([TRUE])
        t1 = time.perf_counter()
        starts = [r for r in timer.records if r[0] == "process/start"]
        reads = [r for r in timer.records if r[0] == "process/read"]
        e2e.append((t1 - t0) * 1000)
        _, start_params, start_sent, start_answered = starts[0]
        start_rpc.append((start_answered - start_sent) * 1000)
        wait.append((t1 - start_answered) * 1000)
        if reads:
            read_rpc.append((reads[-1][3] - reads[-1][2]) * 1000)
        elif direct_read:
            read_rpc.append(await direct_read_ms(client, start_params.process_id))
    return {
        "e2e_p50": percentile(e2e, 50),
        "e2e_p95": percentile(e2e, 95),
        "start_rpc_p50": percentile(start_rpc, 50),
        "completion_wait_p50": percentile(wait, 50),
        "read_rpc_p50": percentile(read_rpc, 50) if read_rpc else float("nan"),
    }


async def measure_rtt(url: str, pings: int = 10) -> float:
    """Median ``environment/status`` round trip through the proxy, in ms."""
    async with exec_runtime.open_client(url) as client:
        samples = []
        for _ in range(pings):
            start = time.perf_counter()
            await client._call("environment/status", wire.EmptyParams(), dict)
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def run(opts: Options) -> ScenarioResult:
    runs, calls = (1, 10) if opts.quick else (3, 30)
    result = ScenarioResult(NAME)
    per_run: dict[str, list[dict[str, float]]] = {"pushed": [], "final-read": []}
    async with running_daemon(opts) as daemon, trio.open_nursery() as nursery:
        host, port = daemon.url.removeprefix("ws://").rsplit(":", 1)
        proxy: DelayProxy = await nursery.start(DelayProxy(host, int(port), ONE_WAY_DELAY).run)
        rtt = await measure_rtt(proxy.url)
        async with (
            exec_runtime.open_client(proxy.url) as pushed,
            client_from(
                WebSocketConnector(proxy.url), "exec-runtime", final_read=True
            ) as final,
        ):
            timers = {"pushed": CallTimer(pushed), "final-read": CallTimer(final)}
            clients = {"pushed": pushed, "final-read": final}
            for client in clients.values():  # warm-up
                for _ in range(2):
                    await client.run([TRUE])
            for _ in range(runs):
                for name, client in clients.items():
                    per_run[name].append(
                        await one_run(client, timers[name], calls, direct_read=name == "pushed")
                    )
            reads_pushed = pushed.statistics().calls.get("process/read", 0)
        nursery.cancel_scope.cancel()

    medians = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in per_run.items()
    }
    result.figures.update(
        one_way_delay_ms=ONE_WAY_DELAY * 1000,
        measured_rtt_ms=rtt,
        runs=runs,
        calls_per_run=calls,
        per_run=per_run,
        median_of_runs=medians,
        pushed_client_reads_including_direct_probes=reads_pushed,
        method=(
            "e2e = client.run() wall time; completion wait = process/start response to run() "
            "return; final read RPC = the read inside run() (final-read client) or a direct "
            "zero-wait process/read after each run (pushed client, outside e2e)"
        ),
    )
    p, f = medians["pushed"], medians["final-read"]
    label = "final-read completion"
    result.rows += [
        Row(
            "wide-area e2e p50",
            p["e2e_p50"],
            f["e2e_p50"],
            "ms",
            f"RTT {rtt:.1f} ms; target pushed <= RTT+3 = {rtt + 3:.1f} ms; seed 118.7 vs 159.5",
            "pushed completion",
            label,
        ),
        Row("wide-area e2e p95", p["e2e_p95"], f["e2e_p95"], "ms", "", "pushed completion", label),
        Row(
            "wide-area completion-wait p50",
            p["completion_wait_p50"],
            f["completion_wait_p50"],
            "ms",
            "after the start response",
            "pushed completion",
            label,
        ),
        Row(
            "wide-area read RPC p50",
            p["read_rpc_p50"],
            f["read_rpc_p50"],
            "ms",
            "ours: direct probe read (outside e2e); baseline: the read inside run()",
            "pushed completion",
            label,
        ),
        Row(
            "wide-area e2e p50 - RTT",
            p["e2e_p50"] - rtt,
            3.0,
            "ms",
            "pushed overhead beyond one RTT vs the 3 ms target",
            "pushed completion",
            "target",
        ),
    ]
    return result
