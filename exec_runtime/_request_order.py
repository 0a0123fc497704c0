"""Wire order for the requests of one connection that act on the same process.

Each request runs in its own task, and Trio starts tasks in no set order, so two
requests read back to back may act in either order. For most that is fine (JSON-RPC
lets replies come in any order), but not where one request's effect decides another's:

- a request right behind a ``process/start`` for the same id must find the process
  (a ``process/terminate`` then cancels the start instead of answering "not running"
  while the process starts anyway);
- writes to one process must reach its stdin in the order they were sent (a
  ``closeStdin`` must not overtake the writes before it).

So a request may wait, before it acts, for the start of its process to have registered
it, and writes wait for the write before them to have been accepted. Nothing else
waits: a write held up by a full stdin queue delays only the writes behind it.
"""

from __future__ import annotations

import attrs
import trio


@attrs.frozen
class Turn:
    """What one request waits for before it acts, and what it signals once it has."""

    waits: tuple[trio.Event, ...] = ()
    acted: trio.Event | None = None
    key: tuple[str, str] | None = None


NO_TURN = Turn()


class RequestOrder:
    def __init__(self) -> None:
        self._last: dict[tuple[str, str], trio.Event] = {}
        """(lane, process id) -> the event of the last request dispatched in that lane."""

    def take(self, method: str, process_id: str | None) -> Turn:
        """Called by the reader, in wire order, for each request as it is dispatched."""
        if process_id is None:
            return NO_TURN
        waits = []
        start = self._last.get(("start", process_id))
        if start is not None:  # every request waits for its process's start
            waits.append(start)
        if method == "process/start":
            key = ("start", process_id)
        elif method == "process/write":
            key = ("write", process_id)
            previous = self._last.get(key)
            if previous is not None:  # ... and a write for the write before it
                waits.append(previous)
        else:
            return Turn(tuple(waits))
        acted = self._last[key] = trio.Event()
        return Turn(tuple(waits), acted, key)

    def acted(self, turn: Turn) -> None:
        """The request took effect (or never will): the ones behind it may go on."""
        if turn.acted is None or turn.key is None:
            return
        turn.acted.set()
        if self._last.get(turn.key) is turn.acted:
            del self._last[turn.key]
