"""A pool across daemons (``exec_runtime.open_pool``).

Rows:

- 3 daemons x N processes through one pool, against the same N processes through one
  daemon (``open_client``): wall time for all of them, each started at once and run to
  completion with its output read. Each daemon is a subprocess on its own loopback
  address (127.0.0.11-13, one port), found through a name the pool resolves, as a
  Kubernetes headless Service's would be. On a machine with few cores the daemons
  share them: the gain is what spreading buys on *this* machine.
- failover: a daemon is SIGKILLed while the host keeps starting processes one after
  another; the time from the kill to the pool taking it out of placement, and to the
  last start that still went to it (after it, all new work goes elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from contextlib import AsyncExitStack
from typing import Any

import trio

import exec_runtime
from exec_runtime import ExecRuntimeError

from ._common import Daemon, Options, Row, ScenarioResult, percentile, running_daemon

NAME = "pool"
ADDRESSES = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
HOST = "exec-runtime-bench.test"
OUTPUT_BYTES = 16 * 1024
ARGV = ["head", "-c", str(OUTPUT_BYTES), "/dev/zero"]
FAILOVER_RECOVERY_DEADLINE = 2.0
POOL_ARGS: dict[str, Any] = {"probe_interval": 0.05, "probe_timeout": 0.5, "resolve_interval": 1.0}


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


async def daemon_on(stack: AsyncExitStack, opts: Options, address: str, port: int) -> Daemon:
    return await stack.enter_async_context(
        running_daemon(
            opts, profile_name=f"{NAME}-{address}", args=["--listen", f"ws://{address}:{port}"]
        )
    )


async def spread(runner: Any, count: int) -> tuple[float, int]:
    """Run ``count`` processes at once; (seconds, how many returned all their output)."""
    done = 0

    async def one() -> None:
        nonlocal done
        result = await runner.run(ARGV)
        if len(result.stdout) == OUTPUT_BYTES:
            done += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return time.perf_counter() - start, done


async def throughput(opts: Options, count: int, rounds: int) -> dict[str, Any]:
    port = free_port(ADDRESSES[0])

    async def resolver(host: str, port: int) -> list[str]:
        await trio.lowlevel.checkpoint()
        return list(ADDRESSES)

    pooled: list[float] = []
    single: list[float] = []
    completed = {"pool": 0, "single": 0}
    async with AsyncExitStack() as stack:
        daemons = [await daemon_on(stack, opts, address, port) for address in ADDRESSES]
        async with (
            exec_runtime.open_pool(f"ws://{HOST}:{port}", resolver=resolver, **POOL_ARGS) as pool,
            exec_runtime.open_client(daemons[0].url) as client,
        ):
            assert len(pool.statistics().healthy) == len(ADDRESSES)
            await spread(pool, 6)  # warm both paths: connections, first forks
            await spread(client, 6)
            for _ in range(rounds):  # interleaved, so drift hits both alike
                seconds, done = await spread(pool, count)
                pooled.append(seconds)
                completed["pool"] += done
                seconds, done = await spread(client, count)
                single.append(seconds)
                completed["single"] += done
            placed = {url: s.placed for url, s in pool.statistics().endpoints.items()}
    return {
        "processes": count,
        "rounds": rounds,
        "output_bytes": OUTPUT_BYTES,
        "pool_s": pooled,
        "single_s": single,
        "pool_median_s": percentile(pooled, 50),
        "single_median_s": percentile(single, 50),
        "completed": completed,
        "placed_per_daemon": placed,
        "cores": os.cpu_count(),
    }


async def wait_quietly(handle: exec_runtime.PoolProcessHandle) -> None:
    with contextlib.suppress(ExecRuntimeError):
        await handle.wait()


async def out_of_placement(pool: exec_runtime.ExecPool, url: str, into: list[float]) -> None:
    """Append the moment ``url`` stops being a healthy endpoint of ``pool``."""
    while url in pool.statistics().healthy:  # noqa: ASYNC110 - polls the pool's state
        await trio.sleep(0.0005)
    into.append(time.perf_counter())


async def failover(opts: Options, trials: int) -> dict[str, Any]:
    port = free_port(ADDRESSES[0])
    live = list(ADDRESSES)

    async def resolver(host: str, port: int) -> list[str]:
        await trio.lowlevel.checkpoint()
        return list(live)

    detect: list[float] = []
    last_on_victim: list[float] = []
    starts_after_kill: list[int] = []
    starts_on_victim: list[int] = []
    async with AsyncExitStack() as stack:
        for address in ADDRESSES[1:]:
            await daemon_on(stack, opts, address, port)
        async with exec_runtime.open_pool(
            f"ws://{HOST}:{port}", resolver=resolver, **POOL_ARGS
        ) as pool:
            victim_url = f"ws://{ADDRESSES[0]}:{port}"
            for _ in range(trials):
                async with AsyncExitStack() as victim_stack:
                    victim = await daemon_on(victim_stack, opts, ADDRESSES[0], port)
                    with trio.fail_after(30):
                        while victim_url not in pool.statistics().healthy:  # noqa: ASYNC110
                            await trio.sleep(0.005)
                    gone_at: list[float] = []
                    last_hit = 0.0
                    count = 0
                    hits = 0

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(out_of_placement, pool, victim_url, gone_at)
                        os.kill(victim.pid, signal.SIGKILL)
                        killed_at = time.perf_counter()
                        # Start processes back to back until 0.5 s after it left placement.
                        while not gone_at or time.perf_counter() < gone_at[0] + 0.5:
                            count += 1
                            placed_at = time.perf_counter() - killed_at
                            try:
                                handle = await pool.start(["true"])
                            except ExecRuntimeError:
                                last_hit = placed_at  # placed on the victim: the start failed
                                hits += 1
                                continue
                            if handle.endpoint == victim_url:
                                last_hit = placed_at  # fails within the recovery deadline
                                hits += 1
                            nursery.start_soon(wait_quietly, handle)
                    detect.append(gone_at[0] - killed_at)
                    last_on_victim.append(last_hit)
                    starts_after_kill.append(count)
                    starts_on_victim.append(hits)
    return {
        "trials": trials,
        "detect_s": detect,
        "last_start_on_victim_s": last_on_victim,
        "starts_after_kill": starts_after_kill,
        "starts_on_victim": starts_on_victim,
        "probe_interval_s": POOL_ARGS["probe_interval"],
        "recovery_deadline_s": FAILOVER_RECOVERY_DEADLINE,
    }


async def run(opts: Options) -> ScenarioResult:
    count, rounds = (200, 3) if opts.quick else (1000, 5)
    trials = 3 if opts.quick else 10
    result = ScenarioResult(NAME)
    spread_figures = await throughput(opts, count, rounds)
    failover_figures = await failover(opts, trials)
    result.figures.update(argv=ARGV, throughput=spread_figures, failover=failover_figures)
    done = spread_figures["completed"]
    result.rows += [
        Row(
            f"pool: 3 daemons x {count} processes, total",
            spread_figures["pool_median_s"],
            spread_figures["single_median_s"],
            "s",
            f"median of {rounds}; {OUTPUT_BYTES // 1024} KiB output each; "
            f"completed {done['pool']}/{count * rounds} vs {done['single']}/{count * rounds}; "
            f"{spread_figures['cores']} cores shared by all daemons",
            ours_label="open_pool, 3 daemons",
            baseline_label="open_client, 1 daemon",
        ),
        Row(
            "pool: daemon SIGKILLed -> out of placement",
            percentile(failover_figures["detect_s"], 50) * 1000,
            max(failover_figures["detect_s"]) * 1000,
            "ms",
            f"median vs max of {trials} kills (client sees the reset; probes every "
            f"{POOL_ARGS['probe_interval'] * 1000:g} ms)",
            ours_label="median",
            baseline_label="max",
        ),
        Row(
            "pool: daemon SIGKILLed -> all new work elsewhere",
            percentile(failover_figures["last_start_on_victim_s"], 50) * 1000,
            max(failover_figures["last_start_on_victim_s"]) * 1000,
            "ms",
            "kill to the last back-to-back start placed on it (0: none was): "
            f"{sum(failover_figures['starts_on_victim'])} of "
            f"{sum(failover_figures['starts_after_kill'])} starts; those fail within the "
            f"recovery deadline ({FAILOVER_RECOVERY_DEADLINE:g} s here)",
            ours_label="median",
            baseline_label="max",
        ),
    ]
    return result
