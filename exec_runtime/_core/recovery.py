"""Turning a ``process/read`` result back into seq events (PROTOCOL §9 "Recover").

A read returns output chunks plus state (``exited``, ``exitCode``, ``closed``,
``nextSeq``) but no seq for the exit and the close. Every seq after the cursor must be
accounted for: a returned chunk, the exit, or the close. If more seqs are missing than
the exit and close can explain, output was evicted and the gap cannot be filled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from .events import Closed, Exited, Output, SeqEvent


@attrs.frozen
class ReadSnapshot:
    """The parts of a ``process/read`` result (read without ``maxBytes``) we need."""

    chunks: Sequence[Output]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    sandbox_denied: bool = False


class GapLost(Exception):
    """Output after the cursor is no longer retained by the daemon."""


def events_after(
    cursor: int,
    snapshot: ReadSnapshot,
    known_exit_seq: int | None = None,
    held: Mapping[int, SeqEvent] | None = None,
) -> list[SeqEvent]:
    """Every event with seq > ``cursor``, in seq order, rebuilt from ``snapshot``.

    ``known_exit_seq`` is the exit's seq if the caller already saw it; it locates the
    exit, which is rebuilt like any other event when it lies after ``cursor`` (a
    consumer lagging behind the network knows the exit's seq but has not queued it).
    ``held`` are events the caller already holds past a gap (its reorder buffer): they
    explain their seqs even if the daemon has since evicted them.
    Raises :class:`GapLost` if a seq cannot be accounted for.
    """
    last_seq = snapshot.next_seq - 1
    by_seq: dict[int, SeqEvent] = {
        seq: event for seq, event in (held or {}).items() if seq > cursor
    }
    by_seq.update((c.seq, c) for c in snapshot.chunks if c.seq > cursor)
    for event in by_seq.values():
        if isinstance(event, Exited):
            known_exit_seq = event.seq
    last_seq = max([last_seq, *by_seq])
    closed_seq = last_seq if snapshot.closed else None
    unexplained = [
        seq
        for seq in range(cursor + 1, last_seq + 1)
        if seq not in by_seq and seq != closed_seq and seq != known_exit_seq
    ]
    # An exit the caller has not seen yet lies after the cursor and explains one seq.
    exit_pending = snapshot.exited and known_exit_seq is None
    if len(unexplained) != (1 if exit_pending else 0):
        missing = (
            f"seqs {unexplained[0]}..{unexplained[-1]} missing" if unexplained else "no exit seq"
        )
        raise GapLost(f"output after seq {cursor} is no longer retained ({missing})")
    exit_seq = unexplained[0] if unexplained else known_exit_seq
    # A held exit is the daemon's own event; it may have been pushed after the daemon
    # answered this read (which then does not have it yet).
    if exit_seq is not None and cursor < exit_seq <= last_seq and exit_seq not in by_seq:
        if snapshot.exit_code is None:
            raise GapLost(f"the exit at seq {exit_seq} is not in the read result")
        by_seq[exit_seq] = Exited(exit_seq, snapshot.exit_code, snapshot.sandbox_denied)
    if closed_seq is None:
        closed_seq = next((s for s, e in by_seq.items() if isinstance(e, Closed)), None)
    if closed_seq is not None and closed_seq > cursor:
        by_seq[closed_seq] = Closed(closed_seq)
    return [by_seq[seq] for seq in sorted(by_seq)]
