"""The orphan watchdog: nothing a daemon started outlives it, even a daemon that dies
without cleaning up (SIGKILL, the OOM killer, a crash).

Every child runs in a session of its own, so a dead daemon's children would be
re-parented to init and run on. One watchdog per daemon process (``reaper.py`` run
as a script, in a session of its own) holds the read end of a pipe that only this
process writes: each process group is registered when spawned and unregistered once
released (its leader reaped, its outputs closed). At EOF, that is when this process
is gone, the watchdog SIGKILLs whatever is still registered. Started with the first
daemon (``SessionRegistry``), and shared by every daemon and ``open_local()`` in the
process, since what it watches for is the death of the process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Final

log = logging.getLogger("exec_runtime.process")

REAPER_SCRIPT: Final = Path(__file__).with_name("reaper.py")


class OrphanWatchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # more than one trio run may spawn at once
        self._fd: int | None = None
        self._backlog = bytearray()  # lines the pipe had no room for yet
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._unavailable = False

    @property
    def pid(self) -> int | None:
        """The watchdog's pid once started (tests look for it)."""
        return None if self._watchdog is None else self._watchdog.pid

    def start(self) -> None:
        """Start the watchdog unless it runs (or cannot run); registering starts it too."""
        with self._lock:
            if self._fd is None:
                self._start()

    def register(self, pgid: int, tty: bool) -> None:
        self._send(b"+ %d %s\n" % (pgid, b"t" if tty else b"p"))

    def unregister(self, pgid: int) -> None:
        self._send(b"- %d\n" % pgid)

    def _send(self, line: bytes) -> None:
        # One short line per spawn and per close, on a non-blocking pipe: a watchdog
        # that stopped reading (SIGSTOP) must not stall the event loop, so what does
        # not fit waits here and goes out with the next line.
        with self._lock:
            fd = self._fd if self._fd is not None else self._start()
            if fd is None:
                return
            self._backlog += line
            try:
                written = os.write(fd, self._backlog)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("the orphan watchdog is gone (%s): no longer watching", exc)
                self._stop()
                return
            del self._backlog[:written]

    def _start(self) -> int | None:
        if self._unavailable:
            return None
        if getattr(sys, "frozen", False) or not sys.executable:
            # A frozen host's executable is the host, not Python: never run it.
            self._unavailable = True
            return None
        read_end, write_end = os.pipe()  # not inherited by children (PEP 446)
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-S", "-E", "-s", str(REAPER_SCRIPT)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("cannot start the orphan watchdog (%s): not watching", exc)
            os.close(write_end)
            self._unavailable = True
            return None
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        self._fd = write_end
        return write_end

    def _stop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._watchdog is not None:
            self._watchdog.poll()  # reap it if it died
        self._unavailable = True


WATCHDOG: Final = OrphanWatchdog()
