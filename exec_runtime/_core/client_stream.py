"""The client's view of one process's sequence, without I/O (PROTOCOL §9).

Two readers take events from it, each with its own cursor:

    the network   reorder buffer → ``published`` = ``reorder.last_published_seq``:
                  pushes (and catch-up reads) publish 1..published, each once, in order.
    the consumer  bounded queue → ``queued_seq``: ``events()`` has taken or queued
                  1..queued_seq (a catch-up read may take it past ``published``).

The network appends to the queue only while it is level with the consumer and the
queue has room. Otherwise the stream *lags*: the network goes on publishing, and the
consumer, once it emptied its queue, catches up itself with a ``process/read`` from
``queued_seq`` (so a slow consumer never blocks the reader task, and never loses what
the daemon retains).

One catch-up merge serves both readers (:meth:`ClientStream.catch_up`): a read
``afterSeq`` = :meth:`~ClientStream.read_after`, whose answer is turned back into seq
events after the reader's cursor *at merge time* by :func:`~.recovery.events_after`:

=============  =========================  ===========================  ====================
reader         afterSeq sent              cursor at merge              explains seqs too
=============  =========================  ===========================  ====================
``NETWORK``    min(published, ackable)    published (pushes may have   events held past a
(gap, resume)                             advanced it during the read) gap; the exit, even
                                                                       a legacy one
``CONSUMER``   queued_seq                 queued_seq                   the published exit
(lag)
=============  =========================  ===========================  ====================

The network's events then go through :meth:`~ClientStream.push_many` (reorder, publish,
queue), the consumer's through :meth:`~ClientStream.accept_caught_up` (queue only).
A seq neither returned, held nor explained by the exit or the close was evicted:
:class:`~.recovery.GapLost`.

Acknowledgement (``process/ack``): :attr:`~ClientStream.ackable_seq` is what the daemon
may forget. All that was published, except what a lagging consumer has still to read
back, or, with ``hold_output``, what no consumer has taken yet (the daemon keeps it,
and pauses the process when its window is full).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from typing import Final

from .events import Closed, Event, Exited, Failed, SeqEvent, event_size
from .recovery import ReadSnapshot, events_after
from .reorder import ReorderBuffer, ReorderOverflow

__all__ = ["QUEUE_MAX_BYTES", "QUEUE_MAX_EVENTS", "ClientStream", "Reader"]

QUEUE_MAX_EVENTS: Final = 1024
QUEUE_MAX_BYTES: Final = 4 << 20


class Reader(enum.Enum):
    """Whose cursor a catch-up read serves."""

    NETWORK = "network"
    """A gap the live stream did not fill, or the resume after a reconnect."""
    CONSUMER = "consumer"
    """A consumer that fell behind its bounded queue (lag)."""


class ClientStream:
    """Cursors, queue, lag and ack state of one process on the client; pure logic.

    The I/O shell (``_client/process.py``) subclasses it to wake waiting tasks: every
    change a waiter may care about calls :meth:`_changed`.
    """

    def __init__(
        self,
        process_id: str,
        *,
        max_queue_events: int = QUEUE_MAX_EVENTS,
        max_queue_bytes: int = QUEUE_MAX_BYTES,
        hold_output: bool = False,
        reorder: ReorderBuffer | None = None,
    ) -> None:
        self.process_id = process_id
        self.reorder = reorder if reorder is not None else ReorderBuffer()
        self.max_queue_events = max_queue_events
        self.max_queue_bytes = max_queue_bytes
        self.hold_output = hold_output
        """Acknowledge only what a consumer took (``start(hold_output=True)``)."""
        self.exit_event: Exited | None = None
        self.legacy_exit: Exited | None = None
        """A pushed exit without ``sandboxDenied``, held back until a read completes it."""
        self.closed_event: Closed | None = None
        self.failure: Failed | None = None
        # The consumer fell behind what the daemon retains: only the events() stream
        # fails (the process runs on, and wait() has the exit code).
        self.consumer_failure: Failed | None = None
        self.queue: deque[SeqEvent] = deque()
        self.queue_bytes = 0
        self.queued_seq = 0
        self.taken_seq = 0  # the last seq the consumer took from the queue
        self.lagging = False
        self.consumed = False  # events() was iterated (one consumer per process)
        self.consumer_active = False  # an events() iteration is in progress
        self.acked_seq = 0  # the last seq acknowledged to the daemon
        self.unacked_bytes = 0  # published since the last process/ack
        self.unacked_events = 0

    def _changed(self) -> None:
        """Hook: the queue, the lag or the failure changed (the shell wakes waiters)."""

    @property
    def finished(self) -> bool:
        """Closed or failed: nothing more is published."""
        return self.closed_event is not None or self.failure is not None

    # --- the network ------------------------------------------------------------------

    def push_many(self, events: Iterable[SeqEvent]) -> list[SeqEvent]:
        """Insert pushed or rebuilt events; return what became contiguous (published).

        Raises :class:`~.reorder.ReorderOverflow` when too much is held past a gap; what
        was published before it (``exc.published``) is published here all the same.
        """
        if self.failure is not None:
            return []
        try:
            published = self.reorder.push_many(events)
        except ReorderOverflow as exc:
            self._publish(exc.published)
            raise
        self._publish(published)
        return published

    def _publish(self, events: list[SeqEvent]) -> None:
        for event in events:
            if isinstance(event, Exited):
                self.exit_event = event
            elif isinstance(event, Closed):
                self.closed_event = event
            self._enqueue(event)
        if events:
            self._changed()

    def _enqueue(self, event: SeqEvent) -> None:
        if event.seq <= self.queued_seq:
            return
        size = event_size(event)
        room = (
            len(self.queue) < self.max_queue_events
            and self.queue_bytes + size <= self.max_queue_bytes
        )
        if self.lagging or event.seq != self.queued_seq + 1 or not room:
            self.lagging = True
        else:
            self.queue.append(event)
            self.queue_bytes += size
            self.queued_seq = event.seq

    # --- the one catch-up merge ---------------------------------------------------------

    def read_after(self, reader: Reader) -> int:
        """The ``afterSeq`` of a catch-up read for ``reader``.

        A read's ``afterSeq`` acknowledges everything up to it, so the network reads
        from no later than what may be forgotten (a lagging consumer, or with
        ``hold_output`` a slow one, still needs the rest from the daemon).
        """
        if reader is Reader.CONSUMER:
            return self.queued_seq
        return min(self.reorder.last_published_seq, self.ackable_seq)

    def catch_up(self, reader: Reader, snapshot: ReadSnapshot) -> list[SeqEvent]:
        """Every event after ``reader``'s cursor, rebuilt from a read's ``snapshot``.

        The cursor is taken now, not when the read was sent: pushes may have advanced
        the network's cursor meanwhile (what they published or hold is explained, even
        if the daemon evicted it since). Pure: apply the result with :meth:`push_many`
        (``NETWORK``) or :meth:`accept_caught_up` (``CONSUMER``).
        Raises :class:`~.recovery.GapLost` when a seq after the cursor was evicted.
        """
        if reader is Reader.CONSUMER:
            known = self.exit_event
            return events_after(self.queued_seq, snapshot, known.seq if known else None)
        known = self.exit_event or self.legacy_exit
        return events_after(
            self.reorder.last_published_seq,
            snapshot,
            known.seq if known else None,
            self.reorder.held(),
        )

    def accept_caught_up(self, events: list[SeqEvent]) -> None:
        """Queue the events a consumer's catch-up rebuilt; leave lag once level with the
        network."""
        for event in events:
            if isinstance(event, Exited) and self.exit_event is None:
                self.exit_event = event  # rebuilt by the read: later catch-ups need its seq
            if event.seq == self.queued_seq + 1:
                self.queue.append(event)
                self.queue_bytes += event_size(event)
                self.queued_seq = event.seq
        if self.queued_seq >= self.reorder.last_published_seq:
            self.lagging = False
        self._changed()

    # --- the consumer -------------------------------------------------------------------

    def take(self) -> Event | None:
        """The consumer's next event, if one is ready: queued output first, then a
        failure. None: wait for a change, or (:attr:`lagging`) catch up first."""
        if self.queue:
            event = self.queue.popleft()
            self.queue_bytes -= event_size(event)
            self.taken_seq = event.seq
            return event
        if self.failure is not None:
            return self.failure
        return self.consumer_failure

    def fail(self, message: str) -> bool:
        """Fail the sequence (a terminal ``Failed``); False if it already ended."""
        if self.finished:
            return False
        self.failure = Failed(message)
        self._changed()
        return True

    def fail_consumer(self, message: str) -> bool:
        """Fail only the consumer (what it missed is gone); False if already failed."""
        if self.consumer_failure is not None or self.failure is not None:
            return False
        self.consumer_failure = Failed(message)
        self.lagging = False
        self._changed()
        return True

    # --- acknowledgement ----------------------------------------------------------------

    @property
    def ackable_seq(self) -> int:
        """What the daemon may forget: all that was published, except what a consumer
        still needs from the daemon: a lagging one reads back from ``queued_seq``, and
        with ``hold_output`` nothing past what a consumer took is let go (the daemon
        pauses the process once its window is full). A consumer that left holds back
        nothing."""
        published = self.reorder.last_published_seq
        if self.hold_output and not (self.consumed and not self.consumer_active):
            return min(self.taken_seq, published)
        if self.lagging and self.consumer_active:
            return self.queued_seq
        return published

    def note_received(self, published: list[SeqEvent]) -> int | None:
        """Count what was published for the next ``process/ack``; the seq to
        acknowledge, or None while a consumer holds the acks back."""
        self.unacked_bytes += sum(event_size(e) for e in published)
        self.unacked_events += len(published)
        ackable = self.ackable_seq
        return ackable if ackable > self.acked_seq else None

    def acked(self, seq: int) -> None:
        """A ``process/ack`` up to ``seq`` was sent."""
        self.unacked_bytes = self.unacked_events = 0
        self.acked_seq = max(self.acked_seq, seq)
