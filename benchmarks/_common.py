"""Shared pieces: options, result rows, percentiles, a daemon subprocess with RSS readings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

TRUE = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"
CACHE_DIR = Path(os.environ.get("EXEC_RUNTIME_BENCH_CACHE", "~/.cache/exec-runtime-bench"))


@dataclass
class Options:
    quick: bool = False
    install_peers: bool = False
    profile_dir: Path | None = None
    cache_dir: Path = field(default_factory=lambda: CACHE_DIR.expanduser())


@dataclass
class Row:
    """One line of the table. ``ratio`` is ours / baseline (lower is better for times)."""

    scenario: str
    ours: float | None
    baseline: float | None
    unit: str
    notes: str = ""
    ours_label: str = "exec-runtime"
    baseline_label: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class ScenarioResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": [row.as_dict() for row in self.rows],
            "figures": self.figures,
            "seconds": self.seconds,
            "error": self.error,
        }


# --- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/min/max in milliseconds, plus the sample count."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "mean": sum(ms) / len(ms) if ms else float("nan"),
        "min": min(ms) if ms else float("nan"),
        "max": max(ms) if ms else float("nan"),
    }


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def sample_interleaved(
    variants: dict[str, Callable[[], Awaitable[Any]]],
    n: int,
    *,
    warmup: int = 10,
    block: int = 25,
    block_warmup_s: float = 0.25,
) -> dict[str, list[float]]:
    """Time each variant ``n`` times, interleaved in blocks, so machine drift hits all alike.

    Each block starts with ``block_warmup_s`` of untimed calls of the same variant:
    on these VMs a process that sat idle while the other variants ran (a daemon, say)
    is slow for its next ~20-80 calls (measured: +30-50%, fading over ~0.2 s), and without this the
    first variant after an in-process one pays for it. The idle case is measured on
    its own, for every variant alike, by :func:`sample_after_idle`.
    """
    for fn in variants.values():
        for _ in range(warmup):
            await fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    done = 0
    while done < n:
        size = min(block, n - done)
        for name, fn in variants.items():
            until = time.perf_counter() + block_warmup_s
            while time.perf_counter() < until:
                await fn()
            for _ in range(size):
                samples[name].append(await timed(fn))
        done += size
    return samples


async def sample_after_idle(
    variants: dict[str, Callable[[], Awaitable[Any]]], n: int, *, idle_s: float = 0.05
) -> dict[str, list[float]]:
    """Time each call after ``idle_s`` of doing nothing (how an agent host calls: one
    command now and then), every variant alike, round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(n):
        for name, fn in variants.items():
            await trio.sleep(idle_s)
            samples[name].append(await timed(fn))
    return samples


# --- the daemon as a real subprocess -----------------------------------------------------


def read_status_kb(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (and friends) from /proc/<pid>/status, in kB; {} once it is gone."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:", "VmSize:", "VmPeak:")):
                    key, rest = line.split(":", 1)
                    values[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by a remote process (by pid) and by this process over a block."""

    def __init__(self, remote_pid: int) -> None:
        self.remote_pid = remote_pid
        self.remote_s = self.local_s = 0.0

    def __enter__(self) -> CpuMeter:
        self._remote0 = process_cpu_seconds(self.remote_pid)
        self._local0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remote_s = process_cpu_seconds(self.remote_pid) - self._remote0
        self.local_s = time.process_time() - self._local0


class RssSampler:
    """Reads VmRSS every ``interval`` s; ``peak_mb`` prefers the kernel's VmHWM."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.max_rss_kb = 0
        self.hwm_kb = 0

    def read(self) -> None:
        status = read_status_kb(self.pid)
        self.max_rss_kb = max(self.max_rss_kb, status.get("VmRSS", 0))
        self.hwm_kb = max(self.hwm_kb, status.get("VmHWM", 0))

    async def run(self) -> None:
        while True:
            self.read()
            await trio.sleep(self.interval)

    @property
    def peak_mb(self) -> float:
        return max(self.hwm_kb, self.max_rss_kb) / 1024


@dataclass
class Daemon:
    url: str
    pid: int
    process: trio.Process
    stderr_path: str

    def rss_mb(self) -> float:
        return read_status_kb(self.pid).get("VmRSS", 0) / 1024

    def hwm_mb(self) -> float:
        return read_status_kb(self.pid).get("VmHWM", 0) / 1024


async def read_first_line(stream: trio.abc.ReceiveStream, limit_s: float = 30.0) -> str:
    buffer = b""
    with trio.fail_after(limit_s):
        while b"\n" not in buffer:
            data = await stream.receive_some(4096)
            if not data:
                raise RuntimeError(f"the process ended before printing a line: {buffer!r}")
            buffer += data
    return buffer.split(b"\n", 1)[0].decode().strip()


@asynccontextmanager
async def spawn_with_url_line(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    parse: Callable[[str], str] = lambda line: line,
    limit_s: float = 30.0,
    stream: str = "stdout",
    preexec_fn: Callable[[], None] | None = None,
) -> AsyncIterator[tuple[trio.Process, str, str]]:
    """Start ``argv``; wait for its first stdout (or stderr) line; SIGTERM it on exit."""
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = log.name
    pipe_out = stream == "stdout"
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if pipe_out else log,
        stderr=log if pipe_out else subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )
    log.close()
    pipe = process.stdout if pipe_out else process.stderr
    assert pipe is not None
    try:
        try:
            line = parse(await read_first_line(pipe, limit_s))
        except Exception as exc:
            raise RuntimeError(f"{argv[0]} did not start: {exc}; log: {tail(log_path)}") from exc
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, pipe)  # never let a full pipe block the child
            try:
                yield process, line, log_path
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)
            await pipe.aclose()


@asynccontextmanager
async def background_process(
    argv: Sequence[str], *, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[trio.Process, str]]:
    """Start ``argv`` with its output in a log file; SIGTERM (then SIGKILL) it on exit."""
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
    with log:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        yield process, log.name
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


def tail(path: str, limit: int = 2000) -> str:
    """The end of a log file, for error messages."""
    try:
        return Path(path).read_text(errors="replace")[-limit:]
    except OSError:
        return ""


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass


async def _stop(process: trio.Process, grace: float = 10.0) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()


@asynccontextmanager
async def running_daemon(
    opts: Options | None = None,
    *,
    profile_name: str | None = None,
    args: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> AsyncIterator[Daemon]:
    """``python -m exec_runtime serve`` as a subprocess (its own CPU, its own RSS).

    With ``opts.profile_dir`` and a ``profile_name``, the daemon runs under pyinstrument
    and saves ``<profile_dir>/<profile_name>.daemon.pyisession`` when it exits on SIGTERM
    (``render_profiles`` turns sessions into text).
    """
    argv = [sys.executable]
    if opts is not None and opts.profile_dir is not None and profile_name is not None:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
        out = opts.profile_dir / f"{profile_name}.daemon.pyisession"
        argv += ["-m", "pyinstrument", "-i", "0.0005", "-r", "session", "-o", str(out)]
    argv += ["-m", "exec_runtime", "serve", "--log-level", "WARNING", *args]
    async with spawn_with_url_line(argv, preexec_fn=preexec_fn) as (process, url, log_path):
        yield Daemon(url=url, pid=process.pid, process=process, stderr_path=log_path)


@asynccontextmanager
async def client_profile(opts: Options, name: str) -> AsyncIterator[None]:
    """Profile this process (the client side) with pyinstrument when --profile is given."""
    if opts.profile_dir is None:
        yield
        return
    from pyinstrument import Profiler

    opts.profile_dir.mkdir(parents=True, exist_ok=True)
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        profiler.last_session.save(str(opts.profile_dir / f"{name}.client.pyisession"))


def render_profiles(directory: Path) -> list[Path]:
    """Render every saved pyinstrument session as a call tree and a flat self-time list."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    written = []
    for path in sorted(directory.glob("*.pyisession")):
        session = Session.load(str(path))
        for suffix, flat in ((".txt", False), (".flat.txt", True)):
            renderer = ConsoleRenderer(unicode=False, color=False, flat=flat, short_mode=False)
            out = path.with_suffix(suffix)
            out.write_text(renderer.render(session))
            written.append(out)
        out = path.with_suffix(".busy.txt")
        out.write_text(busy_summary(session))
        written.append(out)
    return written


IDLE_FUNCTIONS = {"poll", "epoll.poll", "EpollIOManager.get_events", "get_events"}


def busy_summary(session: Any, top: int = 25) -> str:
    """Self time per function as a share of the *busy* samples: time under the event
    loop's epoll wait (idle) is left out; synthetic ``[self]`` leaves count for their
    parent function."""
    totals: dict[str, float] = {}

    def key_of(frame: Any) -> str:
        name = f"{frame.class_name}.{frame.function}" if frame.class_name else frame.function
        return f"{name}  {frame.file_path_short}:{frame.line_no}"

    def walk(frame: Any) -> None:
        name = f"{frame.class_name}.{frame.function}" if frame.class_name else frame.function
        if name in IDLE_FUNCTIONS or frame.function in IDLE_FUNCTIONS:
            return
        for child in frame.children:
            if child.is_synthetic_leaf:
                totals[key_of(frame)] = totals.get(key_of(frame), 0.0) + child.time
            else:
                walk(child)
        if not frame.children:
            totals[key_of(frame)] = totals.get(key_of(frame), 0.0) + frame.time

    root = session.root_frame()
    if root is not None:
        walk(root)
    busy = sum(totals.values()) or 1.0
    lines = [f"busy seconds {busy:.3f} of {session.duration:.3f} s recorded", ""]
    for key, value in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * value / busy:5.1f}%  {value:7.3f} s  {key}")
    return "\n".join(lines) + "\n"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    elif abs(value) >= 10:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()
