"""Memory budgets in bytes: what clients make the daemon hold, and backpressure past it.

A :class:`ByteBudget` counts bytes held (``charge`` / ``release``); a producer that
would add to them first waits for room (``reserve``, ``wait_room``). Room means the
bytes fit under the limit; an item bigger than half the budget needs half of it free,
so no request or chunk can be stuck forever.

Three budgets exist (``ServerConfig``, defaults derived from the machine's memory by
:func:`default_budgets`):

- per connection, ``connection_buffer_bytes``: request payloads read and not yet
  handled, and replies produced and not yet written to the peer; past it the
  connection stops reading (TCP backpressure) and big replies wait before they are
  produced;
- per daemon, ``daemon_buffer_bytes``: the same, over every connection;
- per daemon, ``daemon_output_bytes``: process output read from the children and not
  yet delivered, retained output (payload plus its per-chunk cost) and unacknowledged
  output; past it the pumps stop reading (the children block on their full pipes).
"""

from __future__ import annotations

import os
from typing import Final

import trio

from .._core.sequence import CHUNK_COST

__all__ = ["CHUNK_COST", "ByteBudget", "default_budgets", "machine_memory", "reserve_both"]

MIB: Final = 1 << 20


def machine_memory() -> int:
    """Physical memory in bytes (``MemTotal``); 4 GiB when the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - every Linux answers
        return 4 << 30


def default_budgets(memory: int | None = None) -> tuple[int, int, int]:
    """(``daemon_output_bytes``, ``daemon_buffer_bytes``, ``connection_buffer_bytes``)
    for a machine with ``memory`` bytes: an eighth of it for output and an eighth for
    requests and replies (so the daemon holds at most about a quarter of the machine for
    its clients), and for one connection a sixteenth of the daemon's buffers, between
    64 MiB (one big request or reply, with room to spare) and 512 MiB."""
    memory = machine_memory() if memory is None else memory
    output = max(memory // 8, 64 * MIB)
    buffers = max(memory // 8, 128 * MIB)
    connection = min(max(buffers // 16, 64 * MIB), 512 * MIB)
    return output, buffers, connection


class ByteBudget:
    """Bytes held against a limit, with waiters woken as bytes are released."""

    def __init__(self, limit: int, name: str) -> None:
        self.limit = limit
        self.name = name
        self.used = 0
        self.peak = 0
        self.waiting = 0
        """Tasks waiting for room right now (for the state summary)."""
        self._freed = trio.Event()

    def fits(self, size: int) -> bool:
        """Room for ``size`` more bytes: an item bigger than half the budget needs only
        half of it free (small requests in flight must not hold it up forever)."""
        return self.used == 0 or self.used + min(size, self.limit // 2) <= self.limit

    @property
    def full(self) -> bool:
        return self.used >= self.limit

    def charge(self, size: int) -> None:
        """Count bytes that are held already (or about to be, with no await between)."""
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def release(self, size: int) -> None:
        if size <= 0:
            return
        self.used -= size
        freed, self._freed = self._freed, trio.Event()
        freed.set()

    async def wait_freed(self, *, counted: bool = True) -> None:
        """Until bytes are released. ``counted``: in ``waiting``."""
        if not counted:
            await self._freed.wait()
            return
        self.waiting += 1
        try:
            await self._freed.wait()
        finally:
            self.waiting -= 1

    async def reserve(self, size: int) -> None:
        """Wait for room for ``size`` bytes, then charge them."""
        while not self.fits(size):
            await self.wait_freed()
        self.charge(size)

    async def wait_room(self) -> None:
        """Wait until the budget is not full (before taking in more of unknown size)."""
        while self.full:
            await self.wait_freed()


async def reserve_both(local: ByteBudget, shared: ByteBudget, size: int) -> None:
    """Charge ``size`` to both once it fits in both (never holding one while waiting
    for the other, so two reservers cannot hold each other up)."""
    while not (local.fits(size) and shared.fits(size)):
        shared.waiting += 1  # the daemon's count covers every connection's waiters
        try:
            await (local if not local.fits(size) else shared).wait_freed(counted=False)
        finally:
            shared.waiting -= 1
    local.charge(size)
    shared.charge(size)


class Account:
    """One holder's share of a budget (a process's output), so whatever it still holds
    is given back at once when it goes (``close``), however it ended."""

    def __init__(self, budget: ByteBudget | None) -> None:
        self.budget = budget
        self.held = 0

    def charge(self, size: int) -> None:
        if self.budget is not None and size > 0:
            self.held += size
            self.budget.charge(size)

    def release(self, size: int) -> None:
        size = min(size, self.held)
        if self.budget is not None and size > 0:
            self.held -= size
            self.budget.release(size)

    def close(self) -> None:
        self.release(self.held)

    async def wait_room(self) -> None:
        if self.budget is not None:
            await self.budget.wait_room()
