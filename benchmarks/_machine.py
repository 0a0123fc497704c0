"""What the numbers were measured on: CPU, cores, RAM, kernel, Python, package versions."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "exec-runtime",
    "trio",
    "trio-websocket",
    "wsproto",
    "h11",
    "msgspec",
    "pybase64",
    "attrs",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_machine() -> dict[str, Any]:
    try:
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        load = []
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gib": _mem_total_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": _versions(),
        "load_average_start": load,
    }


def cpu_snapshot() -> tuple[float, float, float]:
    """(machine busy CPU-seconds, machine total CPU-seconds, our tree's CPU-seconds)."""
    busy = total = 0.0
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [float(x) for x in fields[:8]]
        hz = os.sysconf("SC_CLK_TCK")
        total = sum(ticks) / hz
        busy = total - (ticks[3] + ticks[4]) / hz  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        pass
    ours = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        ours += usage.ru_utime + usage.ru_stime
    return busy, total, ours


def cpu_usage(
    before: tuple[float, float, float], after: tuple[float, float, float]
) -> dict[str, float]:
    """How busy the machine was during a scenario, and how much of that was not us.

    ``others_cores`` estimates CPU used by other processes on this shared machine (in
    cores, averaged over the scenario); high values mean noisy absolute numbers.
    Children are counted once reaped, so peers' and daemons' CPU is included.
    """
    busy = after[0] - before[0]
    total = after[1] - before[1]
    ours = after[2] - before[2]
    cores = os.cpu_count() or 1
    wall = total / cores if total else 0.0
    return {
        "machine_busy_cores": busy / wall if wall else float("nan"),
        "ours_cores": ours / wall if wall else float("nan"),
        "others_cores": max(0.0, busy - ours) / wall if wall else float("nan"),
        "load_average_after": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
    }
