"""Scenario: the cold path, a host's first big command on a fresh client.

Each repetition starts a fresh daemon subprocess and a fresh client process
(``_cold_run_driver.py``, untuned malloc as any library host), which runs
``client.run(["head", "-c", "100000000", "/dev/zero"])`` (quick: 20 MB) four times on
one client. The row is the first run's MB/s against the median of the three later
(warm) runs of the same client: measured side by side in one process, so a busy
machine weighs on both. Per run, the client's CPU seconds and minor page faults, and
the daemon's (from ``/proc/<pid>/stat``), say where a first-run gap comes from.
Three repetitions (quick: one); the table shows the median ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from ._common import Options, Row, ScenarioResult, running_daemon

NAME = "cold-path"
ROUNDS = 4
REPO = Path(__file__).resolve().parents[1]


def _daemon_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, minor faults) of one process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


async def one_repetition(opts: Options, total: int) -> dict[str, Any]:
    async with running_daemon(opts) as daemon:
        cpu0, faults0 = _daemon_stat(daemon.pid)
        done = await trio.run_process(
            [sys.executable, "-m", "benchmarks._cold_run_driver", daemon.url, str(total),
             str(ROUNDS)],
            cwd=REPO, capture_stdout=True, capture_stderr=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        cpu1, faults1 = _daemon_stat(daemon.pid)
    runs: list[dict[str, Any]] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    first, warm = runs[0], runs[1:]
    warm_mb_s = statistics.median(r["mb_s"] for r in warm)
    return {
        "runs": runs,
        "first_mb_s": first["mb_s"],
        "warm_median_mb_s": warm_mb_s,
        "ratio": first["mb_s"] / warm_mb_s,
        "daemon_cpu_s_all_runs": cpu1 - cpu0,
        "daemon_minor_faults_all_runs": faults1 - faults0,
    }


async def run(opts: Options) -> ScenarioResult:
    total = 20_000_000 if opts.quick else 100_000_000
    repetitions = 1 if opts.quick else 3
    result = ScenarioResult(NAME)
    reps = [await one_repetition(opts, total) for _ in range(repetitions)]
    median = sorted(reps, key=lambda r: r["ratio"])[len(reps) // 2]
    result.figures.update(total_bytes=total, rounds_per_client=ROUNDS, repetitions=reps)
    mb = total // 1_000_000
    first_faults = median["runs"][0]["client_minor_faults"]
    warm_faults = statistics.median(r["client_minor_faults"] for r in median["runs"][1:])
    ratios = ", ".join(f"{r['ratio']:.2f}" for r in reps)
    result.rows.append(
        Row(f"cold path: first {mb} MB client.run, fresh client / warm median",
            median["first_mb_s"], median["warm_median_mb_s"], "MB/s",
            f"fresh daemon + client process each; median of {repetitions} (ratios {ratios}); "
            f"client minor faults first {first_faults} vs warm {warm_faults:.0f}; target >= 0.9x",
            ours_label="first run", baseline_label="warm median, same client"),
    )  # fmt: skip
    return result
