"""Scenario 4: many concurrent processes.

Ours: 1,000 concurrent ``sh -c 'sleep 0.5; echo x'`` in one session (quick: 200), then
50 clients x 20 processes (quick: 10 x 10), each against a fresh daemon subprocess.
Event latency is from calling ``start`` to receiving the ``x`` output event. A process
counts as complete when it printed ``x``, exited 0 and closed.

Baseline in the same run: the same commands as concurrent ``trio.lowlevel.open_process``
children of this process, latency to the first stdout bytes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import trio

import exec_runtime

from ._common import Options, Row, RssSampler, ScenarioResult, percentile, running_daemon

NAME = "concurrency"
ARGV = ["sh", "-c", "sleep 0.5; echo x"]
DEADLINE = 180.0


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.completed = 0
        self.failures: list[str] = []

    def figures(self, total: int, seconds: float) -> dict[str, Any]:
        ms = [s * 1000 for s in self.latencies]
        return {
            "processes": total,
            "completed": self.completed,
            "failed": len(self.failures),
            "failure_samples": self.failures[:5],
            "total_s": seconds,
            "latency_p50_ms": percentile(ms, 50),
            "latency_p99_ms": percentile(ms, 99),
            "latency_max_ms": max(ms) if ms else float("nan"),
        }


async def ours_one(
    client: exec_runtime.ExecClient, go: trio.Event, tally: Tally, argv: list[str] = ARGV
) -> None:
    await go.wait()
    start = time.perf_counter()
    output, exit_code, closed = b"", None, False
    try:
        proc = await client.start(argv)
        async for event in proc.events():
            if isinstance(event, exec_runtime.Output):
                if not output:
                    tally.latencies.append(time.perf_counter() - start)
                output += event.data
            elif isinstance(event, exec_runtime.Exited):
                exit_code = event.exit_code
            elif isinstance(event, exec_runtime.Closed):
                closed = True
            else:
                tally.failures.append(event.message)
                return
    except exec_runtime.ExecRuntimeError as exc:
        tally.failures.append(f"{type(exc).__name__}: {exc}")
        return
    if output == b"x\n" and exit_code == 0 and closed:
        tally.completed += 1
    else:
        tally.failures.append(f"output {output!r} exit {exit_code} closed {closed}")


async def baseline_one(go: trio.Event, tally: Tally, argv: list[str] = ARGV) -> None:
    await go.wait()
    start = time.perf_counter()
    try:
        process = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        tally.failures.append(str(exc))
        return
    assert process.stdout is not None
    try:
        output = b""
        while chunk := await process.stdout.receive_some(65536):
            if not output:
                tally.latencies.append(time.perf_counter() - start)
            output += chunk
        await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            await process.stdout.aclose()
            if process.returncode is None:
                process.kill()
                await process.wait()
    if output == b"x\n" and process.returncode == 0:
        tally.completed += 1
    else:
        tally.failures.append(f"output {output!r} exit {process.returncode}")


async def fan_out(tasks: list[Any], go: trio.Event) -> float:
    """Start every task (each waits on ``go``), release them together; the elapsed time."""
    start = time.perf_counter()
    with trio.move_on_after(DEADLINE):  # stragglers are cancelled and count as incomplete
        async with trio.open_nursery() as nursery:
            for fn, *args in tasks:
                nursery.start_soon(fn, *args)
            await trio.sleep(0.1)  # every task is parked on go
            start = time.perf_counter()
            go.set()
    return time.perf_counter() - start


async def baseline(count: int, argv: list[str] = ARGV) -> dict[str, Any]:
    tally, go = Tally(), trio.Event()
    seconds = await fan_out([(baseline_one, go, tally, argv) for _ in range(count)], go)
    return tally.figures(count, seconds)


async def ours(
    opts: Options,
    clients: int,
    per_client: int,
    tag: str,
    argv: list[str] = ARGV,
    preexec_fn: Callable[[], None] | None = None,
) -> dict[str, Any]:
    tally, go = Tally(), trio.Event()
    limits = ""
    daemon_cm = running_daemon(opts, profile_name=f"{NAME}-{tag}", preexec_fn=preexec_fn)
    async with daemon_cm as daemon:
        limits = _nofile_line(daemon.pid)
        sampler = RssSampler(daemon.pid)
        idle_mb = daemon.rss_mb()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            opened = []
            async with trio.open_nursery() as openers:
                for _ in range(clients):
                    openers.start_soon(_open_into, nursery, daemon.url, opened)
            tasks = [(ours_one, c, go, tally, argv) for c in opened for _ in range(per_client)]
            seconds = await fan_out(tasks, go)
            reads = sum(c.statistics().calls.get("process/read", 0) for c in opened)
            nursery.cancel_scope.cancel()
        sampler.read()
    figures = tally.figures(clients * per_client, seconds)
    figures.update(
        clients=len(opened),
        per_client=per_client,
        daemon_idle_rss_mb=idle_mb,
        daemon_peak_rss_mb=sampler.peak_mb,
        process_read_calls=reads,
        daemon_max_open_files=limits,
    )
    return figures


def _nofile_line(pid: int) -> str:
    """The daemon's ``Max open files`` line from /proc/<pid>/limits (soft, hard)."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return " ".join(line.split()[3:5])
    except OSError:
        pass
    return ""


async def _open_into(
    nursery: trio.Nursery, url: str, opened: list[exec_runtime.ExecClient]
) -> None:
    """Open a client that lives until ``nursery`` is cancelled."""

    async def hold(task_status: trio.TaskStatus[exec_runtime.ExecClient]) -> None:
        async with exec_runtime.open_client(url) as client:
            task_status.started(client)
            await trio.sleep_forever()

    opened.append(await nursery.start(hold))


async def run(opts: Options) -> ScenarioResult:
    single = 200 if opts.quick else 1000
    many, per = (10, 10) if opts.quick else (50, 20)
    result = ScenarioResult(NAME)
    base_single = await baseline(single)
    one_session = await ours(opts, 1, single, "one-session")
    base_many = await baseline(many * per) if many * per != single else base_single
    multi = await ours(opts, many, per, "many-clients")
    result.figures.update(
        argv=ARGV,
        baseline_single=base_single,
        one_session=one_session,
        baseline_many=base_many,
        many_clients=multi,
    )
    for label, figures, base in (
        (f"{single} in one session", one_session, base_single),
        (f"{many} clients x {per}", multi, base_many),
    ):
        done = f"{figures['completed']}/{figures['processes']} completed"
        result.rows += [
            Row(
                f"concurrency {label}: total",
                figures["total_s"],
                base["total_s"],
                "s",
                f"{done} (baseline {base['completed']}/{base['processes']}); "
                f"reads={figures['process_read_calls']}",
                baseline_label="open_process in-process",
            ),
            Row(
                f"concurrency {label}: p99 latency",
                figures["latency_p99_ms"],
                base["latency_p99_ms"],
                "ms",
                "start -> output received (incl. 500 ms sleep)",
                baseline_label="open_process in-process",
            ),
            Row(
                f"concurrency {label}: daemon RSS",
                figures["daemon_peak_rss_mb"],
                figures["daemon_idle_rss_mb"],
                "MB",
                "VmHWM; baseline idle daemon",
                baseline_label="idle daemon",
            ),
            Row(
                f"concurrency {label}: completed",
                float(figures["completed"]),
                float(figures["processes"]),
                "procs",
                "all must complete",
                baseline_label="started",
            ),
        ]
    return result
