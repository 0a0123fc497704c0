"""The orphan watchdog: a daemon that dies without cleaning up (SIGKILL here) leaves no
process behind, a daemon that ends normally leaves no watchdog behind, and the
watchdog kills only what is still registered."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from exec_runtime import ServerConfig, open_local
from exec_runtime._daemon import reaper
from exec_runtime._daemon.orphans import REAPER_SCRIPT, WATCHDOG, OrphanWatchdog
from tests.support.daemon_process import Daemon, eventually, process_gone, watchdogs_of


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.endswith("\n") else None


async def test_a_daemon_killed_outright_leaves_no_process_behind(
    daemons: Any, connect: Any, tmp_path: Path
) -> None:
    """SIGKILL gives the daemon no chance to kill its groups: the watchdog does, for a
    pipe child and its background grandchild, and for a tty child whose job-control
    shell put its job in a group of its own."""
    files = {name: tmp_path / name for name in ("leader", "grandchild", "tty", "job")}
    with trio.fail_after(15):
        daemon: Daemon = await daemons()
        client = await connect(url=daemon.url)
        pipe_script = (
            f"sleep 100 & echo $! > {files['grandchild']}; echo $$ > {files['leader']}; wait"
        )
        tty_script = f"set -m; sleep 100 & echo $! > {files['job']}; echo $$ > {files['tty']}; wait"
        await client.start("p", ["sh", "-c", pipe_script])
        await client.start("t", ["sh", "-c", tty_script], tty=True)
        pids: dict[str, int] = {}

        def all_written() -> bool:
            for name, path in files.items():
                pid = read_pid(path)
                if pid is None:
                    return False
                pids[name] = pid
            return True

        await eventually(all_written)
        try:
            assert os.getpgid(pids["job"]) != pids["tty"]  # a group of its own
            assert watchdogs_of(daemon.pid)
            daemon.process.kill()
            await daemon.process.wait()
            for pid in pids.values():
                await eventually(lambda pid=pid: process_gone(pid))  # type: ignore[misc]
        finally:
            for pid in pids.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


async def test_a_daemon_that_ends_normally_leaves_no_watchdog(daemons: Any, connect: Any) -> None:
    with trio.fail_after(15):
        daemon: Daemon = await daemons()
        client = await connect(url=daemon.url)
        await client.start("p", ["sleep", "100"])
        (watchdog,) = watchdogs_of(daemon.pid)
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0
        await eventually(lambda: process_gone(watchdog))
        # --no-orphan-watchdog: none is started.
        plain: Daemon = await daemons("--no-orphan-watchdog")
        client = await connect(url=plain.url)
        await client.start("p", ["true"])
        await client.wait_closed("p")
        assert watchdogs_of(plain.pid) == []


@pytest.mark.parametrize(
    "flags",
    [["-S", "-E", "-s"], []],
    # The second: with site, so nox -s coverage (coverage's subprocess patch, a .pth
    # file) measures the script, which the daemon's way of running it hides.
    ids=["as-the-daemon-runs-it", "with-site"],
)
def test_the_watchdog_kills_only_what_is_still_registered(flags: list[str]) -> None:
    released = subprocess.Popen(["sleep", "100"], start_new_session=True)
    running = subprocess.Popen(["sleep", "100"], start_new_session=True)
    try:
        watchdog = subprocess.Popen(
            [sys.executable, *flags, str(REAPER_SCRIPT)], stdin=subprocess.PIPE
        )
        assert watchdog.stdin is not None
        lines = [
            f"+ {released.pid} p",
            f"+ {running.pid} p",
            "garbage",
            "+ notanumber p",
            f"- {released.pid}",
        ]
        watchdog.stdin.write("".join(f"{line}\n" for line in lines).encode())
        watchdog.stdin.close()  # EOF: the owner is gone
        assert watchdog.wait(timeout=10) == 0
        assert running.wait(timeout=10) == -signal.SIGKILL
        assert released.poll() is None  # unregistered: left alone
    finally:
        for child in (released, running):
            child.kill()
            child.wait()


async def test_a_released_group_is_unregistered_and_the_opt_out_registers_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(WATCHDOG, "register", lambda pgid, tty: sent.append(("+", pgid)))
    monkeypatch.setattr(WATCHDOG, "unregister", lambda pgid: sent.append(("-", pgid)))
    with trio.fail_after(10):
        async with open_local() as client:
            proc = await client.start(["true"])
            assert await proc.wait() == 0
        assert [op for op, _ in sent] == ["+", "-"] and sent[0][1] == sent[1][1]
        sent.clear()
        async with open_local(ServerConfig(orphan_watchdog=False)) as client:
            assert (await client.run(["true"])).returncode == 0
        assert sent == []


def test_a_watchdog_that_stops_reading_never_blocks_the_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stopped watchdog (SIGSTOP) fills its pipe; registering must not block the
    event loop, and nothing is lost: what did not fit goes out once there is room."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    watchdog = OrphanWatchdog()

    def start() -> int:
        os.set_blocking(write_end, False)
        watchdog._fd = write_end
        return write_end

    monkeypatch.setattr(watchdog, "_start", start)
    try:
        for pgid in range(100_000, 101_000):  # ~16 KB of lines into a 4 KiB pipe
            watchdog.register(pgid, tty=False)
        assert len(watchdog._backlog) > 0
        received = bytearray()
        os.set_blocking(read_end, False)
        while True:
            try:
                received += os.read(read_end, 65536)
            except BlockingIOError:
                if not watchdog._backlog:
                    break
                watchdog.unregister(100_000)  # the next line flushes what waited
        expected = b"".join(b"+ %d p\n" % pgid for pgid in range(100_000, 101_000))
        assert bytes(received).startswith(expected)
        assert bytes(received).count(b"- 100000\n") >= 1
    finally:
        os.close(read_end)
        os.close(write_end)


def _read_lines_in_a_thread(
    fd: int, interval: float
) -> tuple[list[bytes], threading.Thread]:
    lines: list[bytes] = []

    def read() -> None:
        for line in reaper.owner_lines(fd, interval):
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_the_watchdog_reassembles_lines_split_across_writes_and_ends_at_eof() -> None:
    read_end, write_end = os.pipe()
    try:
        lines, reader = _read_lines_in_a_thread(read_end, interval=0.001)
        os.write(write_end, b"+ 11 p\n+ 12")
        _until(lambda: lines == [b"+ 11 p"])  # read while the rest of a line waits
        time.sleep(0)  # let it block on the quiet pipe
        os.write(write_end, b" t\n- 11\n+ 13 p")  # no newline before EOF
        os.close(write_end)
        write_end = -1
        reader.join(timeout=10)
        assert not reader.is_alive()
        assert lines == [b"+ 11 p", b"+ 12 t", b"- 11", b"+ 13 p"]
        assert reaper.registered_at_eof(lines) == {12: True, 13: False}
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_the_watchdog_reads_a_burst_of_lines_in_batches_not_line_by_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each write to a pipe with a blocked reader wakes it, and the daemon pays for the
    wake-up (twice per process): once lines come, the watchdog reads every ``interval``
    instead, so a burst costs a handful of reads, not one per line."""
    batches: list[int] = []
    read_available = reaper._read_available

    def counted(fd: int) -> tuple[bytes, bool]:
        data, eof = read_available(fd)
        if data:
            batches.append(data.count(b"\n"))
        return data, eof

    monkeypatch.setattr(reaper, "_read_available", counted)
    read_end, write_end = os.pipe()
    interval = 0.5
    try:
        lines, reader = _read_lines_in_a_thread(read_end, interval)
        os.write(write_end, b"+ 1 p\n")
        _until(lambda: lines == [b"+ 1 p"])  # the reader is now sleeping out its interval
        started = time.monotonic()
        for pgid in range(2, 202):
            os.write(write_end, b"+ %d p\n" % pgid)
        elapsed = time.monotonic() - started
        os.close(write_end)
        write_end = -1
        reader.join(timeout=10)
        assert lines == [b"+ %d p" % pgid for pgid in range(1, 202)]
        # The first line, then one read per interval the burst spanned (and the EOF's).
        assert len(batches) <= 3 + int(elapsed / interval), batches
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
