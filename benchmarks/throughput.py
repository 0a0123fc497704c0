"""Scenario 3: 100 MB of stdout end to end (quick: 20 MB), JSON text vs msgpack binary frames.

Ours: ``head -c N /dev/zero`` through a daemon subprocess per codec (each its own
process, so each has its own RSS), consumed with ``proc.events()`` (bytes counted and
checked, not kept). MB/s is 10^6 bytes per second from the start call to ``Closed``.
The daemon's peak RSS is its kernel high-water mark (VmHWM) after all runs, with VmRSS
sampled every 20 ms as a cross-check.

Baselines in the same run: the raw trio-websocket ceiling (a trio-websocket server
process sending 64 KiB binary messages to a trio-websocket client in this process, with
our 256 KiB receive buffer; once more with the 4 KiB default), and the local pipe floor
(a Trio task in this process draining the same command's stdout, 64 KiB reads).

Three rounds (quick: one), each running ceiling, JSON and msgpack in turn; the table
shows the median round of each.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack, nullcontext
from pathlib import Path
from typing import Any

import trio
import trio_websocket

import exec_runtime

from ._common import (
    CpuMeter,
    Options,
    Row,
    RssSampler,
    ScenarioResult,
    client_profile,
    running_daemon,
    spawn_with_url_line,
)

NAME = "throughput"
MESSAGE = 64 * 1024
CEILING_SERVER = Path(__file__).with_name("_ws_ceiling_server.py")


def total_bytes(opts: Options) -> int:
    return 20_000_000 if opts.quick else 100_000_000


def head_argv(total: int) -> list[str]:
    return ["head", "-c", str(total), "/dev/zero"]


async def stream_through(client: exec_runtime.ExecClient, total: int) -> dict[str, float]:
    """Run ``head -c total /dev/zero``; return seconds, MB/s and output chunk count."""
    received = chunks = 0
    exit_code = None
    start = time.perf_counter()
    proc = await client.start(head_argv(total))
    async for event in proc.events():
        if isinstance(event, exec_runtime.Output):
            received += len(event.data)
            chunks += 1
        elif isinstance(event, exec_runtime.Exited):
            exit_code = event.exit_code
        elif isinstance(event, exec_runtime.Failed):
            raise RuntimeError(f"stream failed: {event.message}")
    seconds = time.perf_counter() - start
    if received != total or exit_code != 0:
        raise RuntimeError(f"got {received} of {total} bytes, exit {exit_code}")
    return {"seconds": seconds, "chunks": chunks, "mb_s": total / seconds / 1e6}


async def measure_ours(opts: Options, total: int, msgpack: bool) -> dict[str, float]:
    """One fresh daemon subprocess, one stream; throughput and the daemon's RSS."""
    async with running_daemon(opts) as daemon, trio.open_nursery() as nursery:
        sampler = RssSampler(daemon.pid)
        idle_mb = daemon.rss_mb()
        nursery.start_soon(sampler.run)
        async with exec_runtime.open_client(daemon.url, msgpack=msgpack) as client:
            figures = await stream_through(client, total)
        sampler.read()
        nursery.cancel_scope.cancel()
    return {**figures, "daemon_idle_rss_mb": idle_mb, "daemon_peak_rss_mb": sampler.peak_mb}


async def ceiling_once(url: str, total: int, receive_buffer: int) -> float:
    """One raw trio-websocket transfer of ``total`` bytes in 64 KiB frames; MB/s."""
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        ws = await trio_websocket.connect_websocket_url(
            nursery, url, max_message_size=1 << 26, receive_buffer_size=receive_buffer
        )
        received = 0
        try:
            while received < total:
                received += len(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            pass
        seconds = time.perf_counter() - start
        await ws.aclose()
        nursery.cancel_scope.cancel()
    if received != total:
        raise RuntimeError(f"ceiling got {received} of {total} bytes")
    return total / seconds / 1e6


def _with_cpu(figures: dict[str, Any], cpu: CpuMeter, total: int) -> dict[str, Any]:
    mb = total / 1e6
    return {
        **figures,
        "server_cpu_ms_per_mb": cpu.remote_s * 1000 / mb,
        "client_cpu_ms_per_mb": cpu.local_s * 1000 / mb,
    }


async def pipe_floor(total: int) -> float:
    """Drain the same command's stdout pipe in this process, 64 KiB reads like the daemon."""
    start = time.perf_counter()
    process = await trio.lowlevel.open_process(head_argv(total), stdout=subprocess.PIPE)
    assert process.stdout is not None
    received = 0
    while data := await process.stdout.receive_some(64 * 1024):
        received += len(data)
    await process.wait()
    await process.stdout.aclose()
    seconds = time.perf_counter() - start
    assert received == total
    return total / seconds / 1e6


async def run(opts: Options) -> ScenarioResult:
    total = total_bytes(opts)
    rounds = 1 if opts.quick else 3
    result = ScenarioResult(NAME)
    runs: dict[str, list[Any]] = {
        "ceiling": [], "json": [], "msgpack": [], "json-tuned": [], "msgpack-tuned": []
    }  # fmt: skip
    async with AsyncExitStack() as stack:
        argv = [sys.executable, str(CEILING_SERVER), str(total), str(MESSAGE)]
        ceiling_server, ceiling_url, _ = await stack.enter_async_context(spawn_with_url_line(argv))
        nursery = await stack.enter_async_context(trio.open_nursery())
        clients, samplers, idle, pids = {}, {}, {}, {}
        for codec in ("json", "msgpack"):
            daemon = await stack.enter_async_context(
                running_daemon(opts, profile_name=f"{NAME}-{codec}")
            )
            idle[codec] = daemon.rss_mb()
            pids[codec] = daemon.pid
            samplers[codec] = RssSampler(daemon.pid)
            nursery.start_soon(samplers[codec].run)
            clients[codec] = await stack.enter_async_context(
                exec_runtime.open_client(daemon.url, msgpack=codec == "msgpack")
            )
        for round_ in range(rounds):
            with CpuMeter(ceiling_server.pid) as cpu:
                mb_s = await ceiling_once(ceiling_url, total, 256 * 1024)
            runs["ceiling"].append(_with_cpu({"mb_s": mb_s}, cpu, total))
            for codec, client in clients.items():
                profile = client_profile(opts, f"{NAME}-{codec}") if round_ == 0 else nullcontext()
                async with profile:
                    with CpuMeter(pids[codec]) as cpu:
                        figures = await stream_through(client, total)
                runs[codec].append(_with_cpu(figures, cpu, total))
        # Then the same streams once this process opted in to tune_malloc(), as serve
        # and run do: what a host that streams bulk output sees (it cannot be undone,
        # so these rounds come last; the scenarios after this one run tuned too).
        tuned = exec_runtime.tune_malloc()
        for _ in range(rounds):
            for codec, client in clients.items():
                with CpuMeter(pids[codec]) as cpu:
                    figures = await stream_through(client, total)
                runs[f"{codec}-tuned"].append(_with_cpu(figures, cpu, total))
        ceiling_4k = await ceiling_once(ceiling_url, total, 4 * 1024)
        floor = await pipe_floor(total)
        reads = {
            c: client.statistics().calls.get("process/read", 0) for c, client in clients.items()
        }
        for sampler in samplers.values():
            sampler.read()
        nursery.cancel_scope.cancel()

    ceiling = statistics.median(r["mb_s"] for r in runs["ceiling"])
    cpu = {
        side: {
            key: statistics.median(r[key] for r in runs[side])
            for key in ("server_cpu_ms_per_mb", "client_cpu_ms_per_mb")
        }
        for side in runs
    }
    ours = {
        codec: {
            "mb_s": statistics.median(r["mb_s"] for r in runs[codec]),
            "chunks": runs[codec][0]["chunks"],
            "runs": runs[codec],
            "daemon_idle_rss_mb": idle[codec],
            "daemon_peak_rss_mb": samplers[codec].peak_mb,
            "daemon_max_sampled_rss_mb": samplers[codec].max_rss_kb / 1024,
            "process_read_calls": reads[codec],
        }
        for codec in ("json", "msgpack")
    }
    result.figures.update(
        total_bytes=total,
        argv=head_argv(total),
        rounds=rounds,
        ours=ours,
        client_tune_malloc_applied=tuned,
        ours_client_tune_malloc={
            codec: {
                "mb_s": statistics.median(r["mb_s"] for r in runs[f"{codec}-tuned"]),
                "runs": runs[f"{codec}-tuned"],
            }
            for codec in ("json", "msgpack")
        },
        ws_ceiling_256k=runs["ceiling"],
        cpu_ms_per_mb=cpu,
        ws_ceiling_4k_mb_s=ceiling_4k,
        ws_message_bytes=MESSAGE,
        pipe_floor_mb_s=floor,
    )
    mb = total // 1_000_000
    j, m = ours["json"], ours["msgpack"]
    jt, mt = (statistics.median(r["mb_s"] for r in runs[f"{c}-tuned"]) for c in ("json", "msgpack"))
    ws = "trio-websocket ceiling"
    result.rows += [
        Row(f"throughput {mb} MB JSON / raw trio-websocket ceiling", j["mb_s"], ceiling, "MB/s",
            f"baseline raw {ws}, same run; target >= 0.7x; {j['chunks']} chunks",
            baseline_label=ws),
        Row(f"throughput {mb} MB msgpack / raw trio-websocket ceiling", m["mb_s"], ceiling,
            "MB/s", f"baseline raw {ws}, same run; target >= 1.0x", baseline_label=ws),
        Row(f"throughput {mb} MB JSON, client tune_malloc()", jt, ceiling, "MB/s",
            f"the host opted in (serve, run do); baseline raw {ws} (untuned)",
            baseline_label=ws),
        Row(f"throughput {mb} MB msgpack, client tune_malloc()", mt, ceiling, "MB/s",
            f"the host opted in (serve, run do); baseline raw {ws} (untuned)",
            baseline_label=ws),
        Row("client CPU per MB, msgpack, tune_malloc()",
            cpu["msgpack-tuned"]["client_cpu_ms_per_mb"],
            cpu["msgpack"]["client_cpu_ms_per_mb"], "ms/MB",
            "baseline: the same client before tune_malloc()", baseline_label="untuned"),
        Row("throughput msgpack vs JSON", m["mb_s"], j["mb_s"], "MB/s",
            "baseline: the JSON run", baseline_label="exec-runtime JSON"),
        Row("trio-websocket ceiling, 4 KiB buffer", ceiling_4k, ceiling, "MB/s",
            "baseline: 256 KiB receive buffer", "4 KiB default", "256 KiB"),
        Row("local pipe floor (64 KiB reads)", floor, ceiling, "MB/s",
            f"no socket; baseline {ws}", "pipe", ws),
        Row("daemon CPU per MB, JSON", cpu["json"]["server_cpu_ms_per_mb"],
            cpu["ceiling"]["server_cpu_ms_per_mb"], "ms/MB",
            "baseline: the ceiling's sender process", baseline_label="ws sender"),
        Row("daemon CPU per MB, msgpack", cpu["msgpack"]["server_cpu_ms_per_mb"],
            cpu["ceiling"]["server_cpu_ms_per_mb"], "ms/MB",
            "baseline: the ceiling's sender process", baseline_label="ws sender"),
        Row("client CPU per MB, JSON", cpu["json"]["client_cpu_ms_per_mb"],
            cpu["ceiling"]["client_cpu_ms_per_mb"], "ms/MB",
            "baseline: the ceiling's receiver", baseline_label="ws receiver"),
        Row("client CPU per MB, msgpack", cpu["msgpack"]["client_cpu_ms_per_mb"],
            cpu["ceiling"]["client_cpu_ms_per_mb"], "ms/MB",
            "baseline: the ceiling's receiver", baseline_label="ws receiver"),
        Row("daemon peak RSS, JSON", j["daemon_peak_rss_mb"], j["daemon_idle_rss_mb"], "MB",
            "VmHWM; baseline idle daemon; target <= 60 MB", baseline_label="idle daemon"),
        Row("daemon peak RSS, msgpack", m["daemon_peak_rss_mb"], m["daemon_idle_rss_mb"], "MB",
            "VmHWM; baseline idle daemon; target <= 60 MB", baseline_label="idle daemon"),
    ]  # fmt: skip
    return result
