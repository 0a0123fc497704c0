"""Helpers for the hardening tests: a real ``exec-runtime serve`` subprocess, and what
/proc says about it (children, zombies, fds, RSS)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

ROOT = Path(__file__).resolve().parents[2]


async def eventually(predicate: Callable[[], object], interval: float = 0.005) -> None:
    while not predicate():  # noqa: ASYNC110 - polls plain state a reader task updates
        await trio.sleep(interval)


def proc_state(pid: int) -> str | None:
    """The /proc state letter (R, S, Z, ...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def process_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for a parent that is not us."""
    return proc_state(pid) in (None, "Z")


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


def _is_orphan_watchdog(pid: int) -> bool:
    from exec_runtime._daemon.orphans import REAPER_SCRIPT

    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return str(REAPER_SCRIPT).encode() in cmdline.split(b"\0")


def watchdogs_of(pid: int) -> list[int]:
    """The orphan watchdog a daemon started (``exec_runtime/_daemon/orphans.py``), if any."""
    return [child for child, _ in children_of(pid) if _is_orphan_watchdog(child)]


def spawned_children_of(pid: int) -> list[tuple[int, str]]:
    """``children_of`` but the daemon's orphan watchdog: the processes it ran."""
    return [(child, state) for child, state in children_of(pid) if not _is_orphan_watchdog(child)]


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_kib(pid: int | str, field: str) -> int:
    """A ``/proc/PID/status`` field in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def io_field(pid: int, field: str) -> int:
    """A ``/proc/PID/io`` counter (wchar, rchar)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value)
    raise KeyError(field)


@attrs.define
class Daemon:
    process: trio.Process
    stdout: bytearray = attrs.field(factory=bytearray)
    stderr: bytearray = attrs.field(factory=bytearray)
    stdout_closed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return self.stdout.decode().splitlines()[0]

    async def wait(self) -> int:
        code = await self.process.wait()
        await self.stdout_closed.wait()
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray, done: trio.Event) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            into += data
    done.set()


async def spawn_daemon(
    nursery: trio.Nursery,
    *args: str,
    env: dict[str, str] | None = None,
    wait_for_url: bool = True,
    nofile: tuple[int, int] | None = None,
    stdin: bool = False,
) -> Daemon:
    """``python -m exec_runtime serve ARGS`` with stdout/stderr collected. With
    ``wait_for_url``, returns once the URL line is out (or fails with stderr).
    ``nofile``: the daemon's (soft, hard) RLIMIT_NOFILE; ``stdin``: a pipe to its stdin."""

    def limit_fds() -> None:  # pragma: no cover - runs in the child
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "exec_runtime", "serve", *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
        preexec_fn=limit_fds if nofile is not None else None,
    )
    daemon = Daemon(process)
    assert process.stdout is not None and process.stderr is not None
    nursery.start_soon(_drain, process.stdout, daemon.stdout, daemon.stdout_closed)
    nursery.start_soon(_drain, process.stderr, daemon.stderr, trio.Event())
    if wait_for_url:
        await eventually(lambda: b"\n" in daemon.stdout or process.returncode is not None)
        assert process.returncode is None, daemon.stderr.decode()
    return daemon
