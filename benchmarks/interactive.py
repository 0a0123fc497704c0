"""Scenario: interactive latency, what a user typing into a remote shell feels.

**PTY echo.** ``proc.write(b"x\\n")`` to ``cat`` started with ``tty=True`` through a
daemon subprocess on loopback (msgpack), timed until both echoes arrived as ``Output``
events (the terminal's own echo of the input and ``cat``'s copy of the line: two ``x``).
Baselines measured in the same run, interleaved in blocks of 25 with the same warm-up:
one ``process/write`` round trip (``proc.write(b"x\\n")`` to ``cat >/dev/null`` on a pipe,
through the same client and daemon) and the same echo through a local PTY (``os.openpty``,
``cat`` on the slave, this process writing to the master and waiting until it can read
both echoes). The floor of the remote echo is one round trip plus the local echo: the
write goes one way, the echo comes back the other. The row's ratio is against that sum.

**Output latency.** A child prints ``time.monotonic_ns()`` as a line every 2 ms; the
latency of a line is from that stamp to the moment ``events()`` yields it (both
processes read the same CLOCK_MONOTONIC). Baseline: the same child as a
``trio.lowlevel.open_process`` child of this process, its stdout pipe read directly.
Blocks of lines alternate between the two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

import exec_runtime

from ._common import (
    Options,
    Row,
    ScenarioResult,
    client_profile,
    running_daemon,
    sample_interleaved,
    summary_ms,
)

NAME = "interactive"

STAMPER = (
    "import os, sys, time\n"
    "n, gap = int(sys.argv[1]), float(sys.argv[2])\n"
    "time.sleep(0.05)\n"
    "for _ in range(n):\n"
    "    time.sleep(gap)\n"
    "    os.write(1, b'%d\\n' % time.monotonic_ns())\n"
)
GAP_S = 0.002


def _count_x(data: bytes) -> int:
    return data.count(b"x")


async def remote_echo(client: exec_runtime.ExecClient, stack: AsyncExitStack) -> Any:
    """A ``cat`` on a tty; the returned callable writes one line and waits for both echoes."""
    proc = await client.start(["cat"], tty=True)
    events = proc.events()

    async def kill() -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await proc.kill()
            await events.aclose()

    stack.push_async_callback(kill)

    async def once() -> None:
        await proc.write(b"x\n")
        seen = 0
        while seen < 2:
            event = await events.__anext__()
            if isinstance(event, exec_runtime.Output):
                seen += _count_x(event.data)
            else:
                raise RuntimeError(f"cat on a tty ended: {event!r}")
        if seen != 2:
            raise RuntimeError(f"expected two echoes, saw {seen}")

    return once


async def write_round_trip(client: exec_runtime.ExecClient, stack: AsyncExitStack) -> Any:
    """One ``process/write`` request and its response (to a child that drops its input)."""
    proc = await client.start(["sh", "-c", "exec cat >/dev/null"], pipe_stdin=True)

    async def kill() -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await proc.kill()

    stack.push_async_callback(kill)

    async def once() -> None:
        await proc.write(b"x\n")

    return once


async def local_echo(stack: AsyncExitStack) -> Callable[[], Awaitable[None]]:
    """The same echo through a PTY of this process: write to the master, read both echoes."""
    master, slave = os.openpty()
    process = await trio.lowlevel.open_process(
        ["cat"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    os.set_blocking(master, False)

    async def stop() -> None:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
        os.close(master)

    stack.push_async_callback(stop)

    async def once() -> None:
        os.write(master, b"x\n")
        seen = 0
        while seen < 2:
            await trio.lowlevel.wait_readable(master)
            try:
                seen += _count_x(os.read(master, 4096))
            except BlockingIOError:
                continue
        if seen != 2:
            raise RuntimeError(f"expected two echoes, saw {seen}")

    return once


async def ours_output_latency(client: exec_runtime.ExecClient, lines: int) -> list[float]:
    """Seconds from each stamp to ``events()`` yielding it."""
    latencies: list[float] = []
    proc = await client.start([sys.executable, "-c", STAMPER, str(lines), str(GAP_S)])
    async for event in proc.events():
        now = time.monotonic_ns()
        if isinstance(event, exec_runtime.Output):
            latencies += [(now - int(x)) / 1e9 for x in event.data.split()]
        elif isinstance(event, exec_runtime.Failed):
            raise RuntimeError(event.message)
    return latencies


async def local_output_latency(lines: int) -> list[float]:
    latencies: list[float] = []
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", STAMPER, str(lines), str(GAP_S)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    buffer = b""
    while data := await process.stdout.receive_some(65536):
        now = time.monotonic_ns()
        buffer += data
        *done, buffer = buffer.split(b"\n")
        latencies += [(now - int(x)) / 1e9 for x in done]
    await process.wait()
    await process.stdout.aclose()
    return latencies


async def run(opts: Options) -> ScenarioResult:
    n = 50 if opts.quick else 200
    result = ScenarioResult(NAME)
    async with AsyncExitStack() as stack:
        daemon = await stack.enter_async_context(running_daemon(opts, profile_name=NAME))
        client = await stack.enter_async_context(exec_runtime.open_client(daemon.url))
        variants = {
            "pty echo": await remote_echo(client, stack),
            "process/write round trip": await write_round_trip(client, stack),
            "local pty echo": await local_echo(stack),
        }
        async with client_profile(opts, NAME):
            samples = await sample_interleaved(variants, n)
        blocks, lines = (2, 100) if opts.quick else (5, 200)
        ours_lat: list[float] = []
        local_lat: list[float] = []
        for _ in range(blocks):
            ours_lat += await ours_output_latency(client, lines)
            local_lat += await local_output_latency(lines)
    stats = {name: summary_ms(values) for name, values in samples.items()}
    out = {"exec-runtime": summary_ms(ours_lat), "local pipe": summary_ms(local_lat)}
    result.figures.update(
        n=n, echo_ms=stats, output_latency_ms=out, output_gap_s=GAP_S, output_lines=len(ours_lat)
    )
    echo, rtt, local = (
        stats[k]["p50"] for k in ("pty echo", "process/write round trip", "local pty echo")
    )
    result.rows += [
        Row("PTY echo p50 / (write round trip + local PTY echo)", echo, rtt + local, "ms",
            f"cat on a tty, write(b'x\\n') -> both echoes; baseline {rtt:.3f} + {local:.3f} ms "
            "measured in the same run; target <= 1.2x", baseline_label="write RTT + local echo"),
        Row("PTY echo p50 / local PTY echo", echo, local, "ms",
            "the same echo through a PTY of this process", baseline_label="local pty echo"),
        Row("process/write round trip p50", rtt, None, "ms",
            "to cat >/dev/null on a pipe, same client and daemon"),
        Row("output latency p50: child writes a line -> events() yields it",
            out["exec-runtime"]["p50"], out["local pipe"]["p50"], "ms",
            f"{len(ours_lat)} lines, one per {GAP_S * 1000:.0f} ms; baseline: the same child's "
            "pipe read in this process; target <= 0.15 ms", baseline_label="local pipe"),
        Row("output latency p99", out["exec-runtime"]["p99"], out["local pipe"]["p99"], "ms",
            "", baseline_label="local pipe"),
    ]  # fmt: skip
    return result
