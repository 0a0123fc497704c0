"""File descriptors: the daemon's limit, and a reserve clients cannot take.

Every process start and every ``fs/open`` holds descriptors for as long as the process
or the handle lives, and clients decide how many there are. Were they let take the
last ones, accepting a connection, a log line to a file or the orphan watchdog's
registration would fail. So ``--fd-reserve`` descriptors are kept free: a start or an
open that would eat into them is refused (``-32600``) before it takes anything, while
accepting a connection may still use them.

The check is cheap while the descriptor table is far below the limit (the kernel's
table size, ``FDSize`` in ``/proc/self/status``, bounds how many are open), and only
near the limit counts the open ones (``/proc/self/fd``, in a worker thread once that
is big). What checks have let through and not yet taken is counted as taken.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from .rpc_error import RpcError

log = logging.getLogger("exec_runtime.fds")

DEFAULT_FD_RESERVE: Final = 64
"""Descriptors kept free for accepting, logging and the watchdog (at most an eighth of
the limit, so a tiny limit still leaves clients most of it)."""
START_FDS: Final = 10
"""The most a process start holds at once: PTY or pipes, their dups, exec's error
pipe, two pidfds, the wake-up epoll."""
_COUNT_IN_THREAD_ABOVE: Final = 4096
"""Counting a bigger table takes milliseconds: off the event loop then."""
START_SLOTS: Final = 16
"""Starts that may hold their ``START_FDS`` promise at once (the spawn runs in a worker
thread, and two cores spawn no faster with more in flight). The others wait for a slot
before their check: a burst of 10,000 starts was refused with -32600 while only 8,200 of
20,000 descriptors were open, the rest promised by starts still queued for a thread."""
_start_slots: Final[trio.lowlevel.RunVar[trio.CapacityLimiter]] = trio.lowlevel.RunVar(
    "exec_runtime_start_slots"
)


@asynccontextmanager
async def start_slot() -> AsyncIterator[None]:
    """One of the run's ``START_SLOTS`` for the block (taken without a yield when free)."""
    try:
        slots = _start_slots.get()
    except LookupError:
        slots = trio.CapacityLimiter(START_SLOTS)
        _start_slots.set(slots)
    try:
        slots.acquire_nowait()
    except trio.WouldBlock:
        await slots.acquire()
    try:
        yield
    finally:
        slots.release()


def raise_nofile_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (logged). Children inherit it."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel's own cap then
        try:
            with open("/proc/sys/fs/nr_open", encoding="ascii") as file:
                target = int(file.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open file limit from %d to %d: %s", soft, target, exc)
        return
    log.info("open file limit raised from %d to %d", soft, target)


def _soft_limit() -> int | None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _table_size() -> int | None:
    """The slots in this process's descriptor table: no more can be open."""
    try:
        with open("/proc/self/status", "rb") as file:
            for line in file:
                if line.startswith(b"FDSize:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _open_count() -> int:
    # listdir's own descriptor is open while it reads: not counted.
    return len(os.listdir("/proc/self/fd")) - 1


class DescriptorBudget:
    """One per process (descriptors are a process's): every daemon in it shares it."""

    def __init__(self) -> None:
        self._reserves: list[int] = []
        self._promised = 0
        """Descriptors let through by a check and not yet taken."""

    def keep(self, reserve: int) -> None:
        """A daemon that keeps ``reserve`` free started (the largest one counts)."""
        self._reserves.append(reserve)

    def release(self, reserve: int) -> None:
        self._reserves.remove(reserve)

    def reserve(self, limit: int) -> int:
        return min(max(self._reserves, default=0), limit // 8)

    @asynccontextmanager
    async def claim(self, cost: int, what: str) -> AsyncIterator[None]:
        """Refuse (``-32600``) if taking ``cost`` more descriptors would leave fewer than
        the reserve free; else count them as taken until the block ends (by when they
        are really open, or given back)."""
        await self.check(cost, what)
        self._promised += cost
        try:
            yield
        finally:
            self._promised -= cost

    async def check(self, cost: int, what: str) -> None:
        limit = _soft_limit()
        if limit is None or not self._reserves:
            return
        reserve = self.reserve(limit)
        if reserve == 0:
            return  # --fd-reserve 0: clients may take every descriptor
        needed = reserve + cost + self._promised
        size = _table_size()
        if size is not None and limit - size >= needed:
            return  # fewer than ``size`` are open
        if size is not None and size > _COUNT_IN_THREAD_ABOVE:
            count = await trio.to_thread.run_sync(_open_count)
        else:
            count = _open_count()
        if limit - count < needed:
            raise RpcError.invalid_request(
                f"{what} refused: the daemon is short of file descriptors ({count} of "
                f"{limit} open, {reserve} kept in reserve, --fd-reserve); close file "
                "handles or wait for processes to close"
            )


FD_BUDGET: Final = DescriptorBudget()
