"""Scenario (``--scale`` only, ~1-2 min): 10,000 concurrent processes, 100 clients x 100.

Ours: 100 clients of one daemon subprocess each start 100 ``sh -c 'sleep 1; echo x'``
at once (released together). A process counts as complete when it printed ``x``,
exited 0 and closed; latency is from calling ``start`` to receiving ``x`` (so it
includes the 1 s sleep). The daemon's peak RSS is its VmHWM.

File descriptors: each running process holds 5-7 of the daemon's (pipes, pidfds, the
wake-up epoll), so 10,000 need ~70,000. The daemon is started with a soft
``RLIMIT_NOFILE`` of 1,024 and, where this process may raise it (CAP_SYS_RESOURCE), a
hard limit of 131,072 (else the hard limit this process has, 20,000 on the 2026-12 VMs):
``exec-runtime serve`` raises the soft limit to the hard one at start-up, and the
figures record what ``/proc/<pid>/limits`` said after that. Without root the hard
limit is whatever this process has, and a start past the daemon's reserve is refused
(counted as a failure).

Baseline in the same run: the same 10,000 commands as concurrent
``trio.lowlevel.open_process`` children of this process.
"""

from __future__ import annotations

import resource

from . import concurrency
from ._common import Options, Row, ScenarioResult

NAME = "scale"
ARGV = ["sh", "-c", "sleep 1; echo x"]
WANTED_NOFILE = 131_072


def _hard_limit() -> int:
    """Raise this process's own limits as far as allowed (root: WANTED_NOFILE)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_NOFILE, WANTED_NOFILE))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


async def run(opts: Options) -> ScenarioResult:
    clients, per = (20, 50) if opts.quick else (100, 100)
    total = clients * per
    hard = _hard_limit()

    def low_soft_limit() -> None:  # in the daemon's child, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    result = ScenarioResult(NAME)
    base = await concurrency.baseline(total, ARGV)
    ours = await concurrency.ours(opts, clients, per, "scale", ARGV, low_soft_limit)
    result.figures.update(argv=ARGV, baseline=base, ours=ours, hard_nofile=hard)
    done = f"{ours['completed']}/{total} completed"
    label = f"scale {clients} clients x {per} `sleep 1; echo x`"
    sample = "; ".join(ours["failure_samples"][:2])
    result.rows += [
        Row(f"{label}: completed", float(ours["completed"]), float(total), "procs",
            f"all must complete; daemon open files (soft hard) {ours['daemon_max_open_files']}"
            + (f"; failures e.g. {sample}" if sample else ""),
            baseline_label="started"),
        Row(f"{label}: p99 start -> output", ours["latency_p99_ms"] / 1000,
            base["latency_p99_ms"] / 1000, "s",
            f"{done}; incl. the 1 s sleep; baseline open_process in-process "
            f"({base['completed']}/{total}); target <= 2.5 s",
            baseline_label="open_process in-process"),
        Row(f"{label}: p50 start -> output", ours["latency_p50_ms"] / 1000,
            base["latency_p50_ms"] / 1000, "s", "", baseline_label="open_process in-process"),
        Row(f"{label}: all done", ours["total_s"], base["total_s"], "s",
            "release -> last process closed", baseline_label="open_process in-process"),
        Row(f"{label}: daemon RSS", ours["daemon_peak_rss_mb"], ours["daemon_idle_rss_mb"], "MB",
            "VmHWM; baseline idle daemon; target <= 250 MB", baseline_label="idle daemon"),
    ]  # fmt: skip
    return result
