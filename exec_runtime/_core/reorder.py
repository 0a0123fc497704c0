"""The client-side reorder buffer for one process (PROTOCOL §9 "Reorder").

Notifications may arrive out of seq order, twice (a push and a recovery read overlap),
or with gaps; this turns them into the exact sequence 1..closed, each seq once.
"""

from __future__ import annotations

from collections.abc import Iterable

from .events import Closed, SeqEvent, event_size

__all__ = [
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_MAX_PENDING_EVENTS",
    "ReorderBuffer",
    "ReorderOverflow",
]

DEFAULT_MAX_PENDING_EVENTS = 256
DEFAULT_MAX_PENDING_BYTES = 1 << 20


class ReorderOverflow(Exception):
    """Holding one more out-of-order event would exceed the bounds; the process fails.

    ``published`` holds what ``push_many`` had already made contiguous before the
    overflow (empty from ``push``), so the caller can still deliver it first.
    """

    def __init__(self, message: str, published: list[SeqEvent] | None = None) -> None:
        super().__init__(message)
        self.published: list[SeqEvent] = published if published is not None else []


class ReorderBuffer:
    """Per-process reorder state: the published cursor plus the events held past a gap.

    Pending events live in a dict keyed by seq, so a push and each event it releases
    are O(1); a Closed prunes pending seqs above it, which is O(pending) but happens
    at most a few times per process. A rejected push (overflow) leaves the state as it
    was.
    """

    __slots__ = (
        "_closed",
        "_closed_seq",
        "_last_published_seq",
        "_max_pending_bytes",
        "_max_pending_events",
        "_pending",
        "_pending_bytes",
    )

    def __init__(
        self,
        *,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        last_published_seq: int = 0,
    ) -> None:
        if max_pending_events < 0 or max_pending_bytes < 0:
            raise ValueError("pending bounds must be >= 0")
        if last_published_seq < 0:
            raise ValueError("last_published_seq must be >= 0")
        self._max_pending_events = max_pending_events
        self._max_pending_bytes = max_pending_bytes
        self._last_published_seq = last_published_seq
        self._pending: dict[int, SeqEvent] = {}
        self._pending_bytes = 0
        # The seq of the Closed seen (pending or published); nothing may follow it.
        self._closed_seq: int | None = None
        self._closed = False

    @property
    def last_published_seq(self) -> int:
        return self._last_published_seq

    @property
    def closed(self) -> bool:
        """Closed has been published: the sequence is complete."""
        return self._closed

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def held(self) -> dict[int, SeqEvent]:
        """A copy of the events held past a gap, by seq."""
        return dict(self._pending)

    def first_missing_seq(self) -> int | None:
        """The seq blocking publication when something is held past a gap, else None.

        The client reads ``afterSeq = this - 1`` to fill the gap.
        """
        return self._last_published_seq + 1 if self._pending else None

    def discard_pending(self) -> None:
        """Forget every event held past the gap (a read from ``last_published_seq``
        brings them back); the published cursor stays."""
        self._pending.clear()
        self._pending_bytes = 0
        if not self._closed:
            self._closed_seq = None

    def push(self, event: SeqEvent) -> list[SeqEvent]:
        """Insert one event; return the newly contiguous events, in seq order, to publish.

        Drops seq <= last_published_seq and duplicates of pending seqs (the first copy
        wins). Events with a seq greater than a published or pending Closed's seq are
        dropped (nothing follows closed), and a Closed prunes pending seqs above it.
        Raises ReorderOverflow, without changing anything, if holding the event would
        exceed the pending bounds (events or bytes).
        """
        seq = event.seq
        if self._closed or seq <= self._last_published_seq or seq in self._pending:
            return []
        if self._closed_seq is not None and seq > self._closed_seq:
            return []

        if seq != self._last_published_seq + 1:
            self._hold(event)
            return []

        if isinstance(event, Closed):
            self._set_closed_seq(seq)
        published: list[SeqEvent] = [event]
        self._last_published_seq = seq
        while (nxt := self._pending.pop(self._last_published_seq + 1, None)) is not None:
            self._pending_bytes -= event_size(nxt)
            published.append(nxt)
            self._last_published_seq = nxt.seq
        if isinstance(published[-1], Closed):
            self._closed = True
        return published

    def push_many(self, events: Iterable[SeqEvent]) -> list[SeqEvent]:
        """``push`` each event in turn; the concatenation of what each released."""
        published: list[SeqEvent] = []
        for event in events:
            try:
                published.extend(self.push(event))
            except ReorderOverflow as exc:
                raise ReorderOverflow(str(exc), published) from None
        return published

    def _hold(self, event: SeqEvent) -> None:
        """Keep an event past a gap, checking the bounds first."""
        size = event_size(event)
        if isinstance(event, Closed):
            # The pruned events free room, so count what would remain.
            doomed = [s for s in self._pending if s > event.seq]
            count = len(self._pending) - len(doomed) + 1
            nbytes = self._pending_bytes - sum(event_size(self._pending[s]) for s in doomed)
        else:
            count = len(self._pending) + 1
            nbytes = self._pending_bytes + size
        if count > self._max_pending_events or nbytes > self._max_pending_bytes:
            raise ReorderOverflow(
                f"reorder buffer overflow at seq {event.seq}: {count} events / {nbytes} "
                f"bytes pending (bounds {self._max_pending_events} / "
                f"{self._max_pending_bytes}), waiting for seq {self._last_published_seq + 1}"
            )
        if isinstance(event, Closed):
            self._set_closed_seq(event.seq)
        self._pending[event.seq] = event
        self._pending_bytes += size

    def _set_closed_seq(self, seq: int) -> None:
        """Record the Closed seq and drop pending events that cannot follow it."""
        self._closed_seq = seq
        for s in [s for s in self._pending if s > seq]:
            self._pending_bytes -= event_size(self._pending.pop(s))
