"""Killing what a daemon started, from /proc: a tty child's session, and the orphan
watchdog's last act.

Standard library only, and no imports from the package: besides being imported by
``_daemon/child.py``, this file runs as a script (``python -S -E -s reaper.py``), the
watchdog that ``_daemon/orphans.py`` starts. The watchdog reads ``+ <pgid> <p|t>`` and
``- <pgid>`` lines on stdin, the process groups (``t``: tty sessions) its owner has
running. Its stdin is the one pipe the owner writes; at EOF the owner is gone, for
whatever reason, and every group still registered is SIGKILLed (for a tty, every
process of its session), so nothing the owner started outlives it. An owner that ends
normally has killed and unregistered everything by then, so nothing is left to kill.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from typing import Final

DRAIN_INTERVAL: Final = 0.02
"""While the owner's lines keep coming, the watchdog reads them this often, not as each
is written (``owner_lines``)."""
KILL_SWEEPS: Final = 3
"""A session kill scans /proc at most this many times: again while a scan found a
process the ones before had not (one forked while the last was being killed)."""


def read_stat(pid: int) -> tuple[bytes, int, int] | None:
    """``(state, pgrp, session)`` from ``/proc/<pid>/stat``; None if it is gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = text.rpartition(b")")[2].split()
    try:
        return fields[0], int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


def session_members(session: int) -> list[tuple[int, int]]:
    """``(pid, pgrp)`` of each live (not zombie) process in ``session`` but us.

    One pass over /proc: one small read per process on the host (some 15 us each
    where measured), so it runs on a kill or a rare signal, never per output.
    Empty where there is no /proc.
    """
    return [(pid, pgrp) for pid, pgrp, _ in _members_of({session})]


def _members_of(sessions: Collection[int]) -> list[tuple[int, int, int]]:
    """``(pid, pgrp, session)`` of each live process in one of ``sessions`` but us:
    one pass over /proc, however many sessions."""
    own = os.getpid()
    members: list[tuple[int, int, int]] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if not name.isdigit() or int(name) == own:
            continue
        stat = read_stat(int(name))
        if stat is not None and stat[2] in sessions and stat[0] != b"Z":
            members.append((int(name), stat[1], stat[2]))
    return members


def kill_session(session: int) -> bool:
    """SIGKILL every process of ``session``. True if any was."""
    return bool(kill_sessions({session}))


def kill_sessions(sessions: Collection[int]) -> set[int]:
    """SIGKILL every process of each of ``sessions``, with one /proc scan per sweep
    for all of them (killing a thousand tty sessions costs three scans, not three
    thousand). The sessions of which a process was killed."""
    killed: set[int] = set()
    hit: set[int] = set()
    for _ in range(KILL_SWEEPS):
        new = [(pid, sid) for pid, _, sid in _members_of(sessions) if pid not in killed]
        if not new:
            break
        for pid, sid in new:
            if _kill_member(pid, sid):
                killed.add(pid)
                hit.add(sid)
    return hit


def _kill_member(pid: int, session: int) -> bool:
    """SIGKILL ``pid`` if it is (still) in ``session``. Through a pidfd, checked after
    it is opened: a pid that ended since the scan and was recycled is not signalled."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:
        pidfd = -1  # no pidfd (an old kernel): the plain kill, racing a recycle
    try:
        stat = read_stat(pid)
        if stat is None or stat[2] != session:
            return False
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return True


# --- the watchdog ---------------------------------------------------------------------


def owner_lines(fd: int, interval: float = DRAIN_INTERVAL) -> Iterator[bytes]:
    """The owner's lines on ``fd``, until EOF.

    Idle, this blocks on the pipe; once lines come, it reads what arrived every
    ``interval`` rather than as each is written. A reader blocked on a pipe is woken by
    every write, and the writer pays for the wake-up: 20-25 µs per line on the VMs
    measured, two lines per process the owner runs, where a write nobody waits for
    costs a few µs. The owner's death is seen at most ``interval`` late.
    """
    os.set_blocking(fd, False)
    tail = b""
    while True:
        select.select([fd], [], [])  # the first line after a quiet spell, or EOF
        while True:
            data, eof = _read_available(fd)
            if data:
                *lines, tail = (tail + data).split(b"\n")
                yield from lines
            if eof:
                if tail:
                    yield tail
                return
            if not data:
                break  # quiet again: block
            time.sleep(interval)


def _read_available(fd: int) -> tuple[bytes, bool]:
    """What the pipe holds now, and whether it is at EOF (every writer gone)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return b"".join(chunks), False
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def registered_at_eof(lines: Iterable[bytes]) -> dict[int, bool]:
    """Follow the owner's ``+``/``-`` lines to their end: ``{pgid: is_tty}`` still
    running when the owner went away. A malformed line is skipped."""
    running: dict[int, bool] = {}
    for line in lines:
        parts = line.split()
        try:
            if parts[0] == b"+" and len(parts) == 3:
                running[int(parts[1])] = parts[2] == b"t"
            elif parts[0] == b"-" and len(parts) == 2:
                running.pop(int(parts[1]), None)
        except (IndexError, ValueError):
            continue
    return running


def kill_leftovers(running: dict[int, bool]) -> None:
    kill_sessions({pgid for pgid, tty in running.items() if tty})
    for pgid in running:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass  # gone


def main() -> None:
    # In a session of its own already (no terminal's signals); a hangup or an
    # interrupt meant for the owner must not end the watch either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    kill_leftovers(registered_at_eof(owner_lines(sys.stdin.fileno())))


if __name__ == "__main__":
    main()
