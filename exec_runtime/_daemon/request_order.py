"""Wire order for the requests of one connection that act on the same process or on
the same file handle.

Each request runs in its own task, and Trio starts tasks in no set order, so two
requests read back to back may act in either order. For most that is fine (JSON-RPC
lets replies come in any order), but not where one request's effect decides another's:

- a request right behind a ``process/start`` for the same id must find the process
  (a ``process/terminate`` then cancels the start instead of answering "not running"
  while the process starts anyway);
- a ``process/start`` right behind a ``process/terminate`` of the same id must come
  after it (the terminate frees the id of a start it cancels, and the new start
  must not be refused "already exists", nor be the one the terminate kills);
- writes to one process must reach its stdin in the order they were sent (a
  ``closeStdin`` must not overtake the writes before it).

- requests for one file handle (ids are the client's): a ``fs/close`` right behind its
  ``fs/open`` must close it, not find nothing and leave it open for the connection's
  life; a ``fs/readBlock`` right behind it must find it; an id reused after its close
  must open anew.

So a request may wait, before it acts, for the start of its process to have registered
it, and writes wait for the write before them to have been accepted. On a handle,
reads wait for the open or close before them, and an open or close waits for that
and for the reads sent since (reads among themselves run in any order, as positional
reads may). Nothing else waits: a write held up by a full stdin queue delays only the
writes behind it.
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
        """(lane, process or handle id) -> the event of the last request dispatched in
        that lane."""
        self._reads: dict[str, set[trio.Event]] = {}
        """handle id -> the reads dispatched since its last open or close, not yet done."""

    def take(self, method: str, params: object) -> Turn:
        """Called by the reader, in wire order, for each request as it is dispatched."""
        process_id = getattr(params, "process_id", None)
        if isinstance(process_id, str):
            return self._process_turn(method, process_id)
        handle_id = getattr(params, "handle_id", None)
        if isinstance(handle_id, str):
            return self._handle_turn(method, handle_id)
        return NO_TURN

    def _handle_turn(self, method: str, handle_id: str) -> Turn:
        key = ("handle", handle_id)
        previous = self._last.get(key)
        waits = [] if previous is None else [previous]
        acted = trio.Event()
        if method in ("fs/open", "fs/close"):
            waits += self._reads.pop(handle_id, set())  # the reads sent before it, too
            self._last[key] = acted
            return Turn(tuple(waits), acted, key)
        self._reads.setdefault(handle_id, set()).add(acted)
        return Turn(tuple(waits), acted, ("read", handle_id))

    def _process_turn(self, method: str, process_id: str) -> Turn:
        waits = []
        start = self._last.get(("start", process_id))
        if start is not None:  # every request waits for its process's start
            waits.append(start)
        if method in ("process/start", "process/terminate"):
            # A terminate joins its start's lane: what follows it (a start of the same
            # id above all) acts after it, so start, terminate, start in one pipeline
            # cancels the first and starts the second.
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
        lane, name = turn.key
        if lane == "read":
            reads = self._reads.get(name)
            if reads is not None:
                reads.discard(turn.acted)
                if not reads:
                    del self._reads[name]
        elif self._last.get(turn.key) is turn.acted:
            del self._last[turn.key]
