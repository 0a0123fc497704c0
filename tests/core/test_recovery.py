"""events_after (rebuilding events from a process/read result) against an oracle, and
the client's stream (``ClientStream``: reorder buffer, queue, and its one catch-up
merge) together: live pushes and one recovery read publish 1..n, and a consumer that
lagged through them catches up to the same sequence."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exec_runtime._core.client_stream import ClientStream, Reader
from exec_runtime._core.events import Closed, Exited, Failed, Output, SeqEvent, StreamName
from exec_runtime._core.recovery import GapLost, ReadSnapshot, events_after
from exec_runtime._core.sequence import ProcessSequence, RetentionLimits


@attrs.frozen
class Daemon:
    """A process's full sequence as the daemon assigned it, up to some moment."""

    events: list[SeqEvent]
    exit_code: int
    sandbox_denied: bool

    @property
    def exit_seq(self) -> int | None:
        return next((e.seq for e in self.events if isinstance(e, Exited)), None)

    @property
    def outputs(self) -> list[Output]:
        return [e for e in self.events if isinstance(e, Output)]

    def prefix(self, count: int) -> Daemon:
        return attrs.evolve(self, events=self.events[:count])

    def snapshot(self, cursor: int, first_retained: int) -> ReadSnapshot:
        """``process/read{afterSeq: cursor}``: retention holds outputs from seq
        ``first_retained`` on (an evicted prefix), exit and close are state."""
        exit_seq = self.exit_seq
        return ReadSnapshot(
            chunks=[c for c in self.outputs if c.seq > cursor and c.seq >= first_retained],
            next_seq=len(self.events) + 1,
            exited=exit_seq is not None,
            exit_code=self.exit_code if exit_seq is not None else None,
            closed=bool(self.events) and isinstance(self.events[-1], Closed),
            sandbox_denied=self.sandbox_denied if exit_seq is not None else False,
        )


@st.composite
def daemons(draw: st.DrawFn, *, closed: bool | None = None) -> Daemon:
    """outputs, then (maybe) the exit, late outputs and the close, seqs 1..n."""
    stream_names: list[StreamName] = ["stdout", "stderr"]
    streams = st.sampled_from(stream_names)
    outputs = st.lists(st.tuples(streams, st.binary(min_size=1, max_size=6)), max_size=12)
    stage = (
        draw(st.sampled_from(["running", "exited", "closed"]))
        if closed is None
        else ("closed" if closed else draw(st.sampled_from(["running", "exited"])))
    )
    events: list[SeqEvent] = []
    for stream, data in draw(outputs):
        events.append(Output(len(events) + 1, stream, data))
    exit_code = draw(st.integers(0, 255))
    sandbox_denied = draw(st.booleans())
    if stage != "running":
        events.append(Exited(len(events) + 1, exit_code, sandbox_denied))
        # A grandchild holding the pipe writes after the exit.
        for stream, data in draw(st.lists(st.tuples(streams, st.binary(min_size=1)), max_size=4)):
            events.append(Output(len(events) + 1, stream, data))
    if stage == "closed":
        events.append(Closed(len(events) + 1))
    return Daemon(events, exit_code, sandbox_denied)


@st.composite
def recovery_cases(draw: st.DrawFn) -> tuple[Daemon, int, int, int | None]:
    daemon = draw(daemons())
    cursor = draw(st.integers(0, len(daemon.events)))
    # Retention evicted every output below ``first_retained`` (possibly none, possibly all).
    first_retained = draw(st.integers(1, len(daemon.events) + 1))
    exit_seq = daemon.exit_seq
    # The caller always knows an exit at or below its cursor; one above it may be known
    # (the consumer lags the network) or not (a recovery read).
    if exit_seq is None:
        known_exit = None
    elif exit_seq <= cursor:
        known_exit = exit_seq
    else:
        known_exit = draw(st.sampled_from([None, exit_seq]))
    return daemon, cursor, first_retained, known_exit


@given(recovery_cases())
def test_events_after_matches_the_oracle(case: tuple[Daemon, int, int, int | None]) -> None:
    daemon, cursor, first_retained, known_exit = case
    snapshot = daemon.snapshot(cursor, first_retained)
    lost = [c.seq for c in daemon.outputs if cursor < c.seq < first_retained]
    if lost:
        with pytest.raises(GapLost):
            events_after(cursor, snapshot, known_exit)
    else:
        assert events_after(cursor, snapshot, known_exit) == [
            e for e in daemon.events if e.seq > cursor
        ]


@given(daemons(), st.data())
def test_events_after_unfiltered_chunks_and_a_cursor_past_the_end(
    daemon: Daemon, data: st.DataObject
) -> None:
    """Chunks at or below the cursor are ignored; a cursor at the end yields nothing."""
    cursor = data.draw(st.integers(0, len(daemon.events)))
    exit_seq = daemon.exit_seq
    known_exit = exit_seq if exit_seq is not None and exit_seq <= cursor else None
    full = daemon.snapshot(0, 1)
    assert events_after(cursor, full, known_exit) == [e for e in daemon.events if e.seq > cursor]
    end = len(daemon.events)
    assert events_after(end, full, exit_seq) == []


def test_events_after_examples() -> None:
    # printf out; printf err >&2; exit 7 -> output(1), output(2), exited(3), closed(4)
    out, err = Output(1, "stdout", b"out"), Output(2, "stderr", b"err")
    snapshot = ReadSnapshot([out, err], next_seq=5, exited=True, exit_code=7, closed=True)
    assert events_after(0, snapshot) == [out, err, Exited(3, 7), Closed(4)]
    assert events_after(2, snapshot) == [Exited(3, 7), Closed(4)]
    assert events_after(3, snapshot, known_exit_seq=3) == [Closed(4)]
    # A consumer behind the network already saw the exit (seq 3) but not what precedes it.
    assert events_after(1, snapshot, known_exit_seq=3) == [err, Exited(3, 7), Closed(4)]
    # Output 1 was evicted.
    with pytest.raises(GapLost):
        events_after(0, ReadSnapshot([err], 5, True, 7, True))
    # Running, nothing new.
    assert events_after(2, ReadSnapshot([], 3, False, None, False)) == []


@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=30),
    st.lists(st.binary(min_size=1, max_size=40), max_size=3),
    st.integers(1, 200),
    st.data(),
)
def test_events_after_against_the_daemon_sequence(
    before: list[bytes], after: list[bytes], retain_bytes: int, data: st.DataObject
) -> None:
    """The real ProcessSequence's read (with real eviction) rebuilds what it assigned."""
    sequence = ProcessSequence(("stdout",), RetentionLimits(max_bytes=retain_bytes))
    assigned: list[SeqEvent] = [sequence.record_output("stdout", chunk) for chunk in before]
    assigned += sequence.record_exit(3)
    assigned += [sequence.record_output("stdout", chunk) for chunk in after]
    assigned += sequence.record_eof("stdout")
    cursor = data.draw(st.integers(0, len(assigned)))
    known_exit = len(before) + 1 if len(before) + 1 <= cursor else None
    result = sequence.read(cursor)
    snapshot = ReadSnapshot(
        result.chunks, result.next_seq, result.exited, result.exit_code, result.closed
    )
    evicted = [e.seq for e in assigned if isinstance(e, Output) and e not in result.chunks]
    if any(seq > cursor for seq in evicted):
        with pytest.raises(GapLost):
            events_after(cursor, snapshot, known_exit)
    else:
        assert events_after(cursor, snapshot, known_exit) == [e for e in assigned if e.seq > cursor]


# --- reorder + recovery ---------------------------------------------------------------


@st.composite
def outage_cases(
    draw: st.DrawFn,
) -> tuple[Daemon, int, list[SeqEvent], list[SeqEvent], int]:
    """A closed process; pushes lost in an outage, the rest delivered in any order with
    duplicates, and a recovery read at some moment in between."""
    daemon = draw(daemons(closed=True))
    n = len(daemon.events)
    read_at = draw(st.integers(0, n))  # the daemon had assigned seqs 1..read_at by the read
    lost = draw(st.sets(st.integers(1, read_at))) if read_at else set()
    delivered = [e for e in daemon.events if e.seq not in lost]
    delivered += draw(st.lists(st.sampled_from(delivered), max_size=10)) if delivered else []
    # Before the read only what already existed can have arrived.
    early_pool = [e for e in delivered if e.seq <= read_at]
    early_count = draw(st.integers(0, len(early_pool)))
    early = draw(st.permutations(early_pool))[:early_count]
    rest = list(delivered)
    for event in early:
        rest.remove(event)
    late = draw(st.permutations(rest))
    # Retention may have evicted outputs, but only what the client already published
    # (otherwise the read fails; see test_events_after_matches_the_oracle).
    evict_below = draw(st.integers(1, n + 1))
    return daemon, read_at, early, late, evict_below


@given(outage_cases())
def test_pushes_and_a_recovery_read_publish_each_seq_once_in_order(
    case: tuple[Daemon, int, list[SeqEvent], list[SeqEvent], int],
) -> None:
    daemon, read_at, early, late, evict_below = case
    stream = ClientStream("p")
    published: list[SeqEvent] = []
    for event in early:
        published += stream.push_many([event])
    cursor = stream.read_after(Reader.NETWORK)
    assert cursor == stream.reorder.last_published_seq
    snapshot = daemon.prefix(read_at).snapshot(cursor, min(evict_below, cursor + 1))
    published += stream.push_many(stream.catch_up(Reader.NETWORK, snapshot))
    for event in late:
        published += stream.push_many([event])
    assert published == daemon.events
    assert stream.reorder.closed and stream.closed_event is not None
    assert stream.reorder.pending_count == 0
    # Nobody consumed: the queue holds it all, in order, each once.
    assert list(stream.queue) == daemon.events and not stream.lagging


@given(outage_cases(), st.integers(0, 8))
def test_a_consumer_lagging_through_an_outage_catches_up_with_the_same_merge(
    case: tuple[Daemon, int, list[SeqEvent], list[SeqEvent], int], room: int
) -> None:
    """The same outage with a consumer whose queue holds only ``room`` events: it lags,
    and its own catch-up reads (Reader.CONSUMER, from queued_seq) rebuild the rest.
    Nothing is evicted here (the daemon retains it all), so it gets every event."""
    daemon, read_at, early, late, _evict_below = case
    stream = ClientStream("p", max_queue_events=room)
    consumed: list[SeqEvent] = []

    def consume() -> None:
        while stream.queue or stream.lagging:
            if not stream.queue:  # lagging: read from its own cursor, merge, queue
                after = stream.read_after(Reader.CONSUMER)
                assert after == stream.queued_seq
                snapshot = daemon.snapshot(after, 1)
                stream.accept_caught_up(stream.catch_up(Reader.CONSUMER, snapshot))
                if not stream.queue:
                    return  # level with the daemon: nothing more to read
            event = stream.take()
            assert event is not None and not isinstance(event, Failed)
            consumed.append(event)

    for event in early:
        stream.push_many([event])
    snapshot = daemon.prefix(read_at).snapshot(stream.read_after(Reader.NETWORK), 1)
    stream.push_many(stream.catch_up(Reader.NETWORK, snapshot))
    for event in late:
        stream.push_many([event])
    consume()
    assert consumed == daemon.events
    assert not stream.lagging


@given(outage_cases())
def test_a_read_that_lost_output_fails_instead_of_skipping(
    case: tuple[Daemon, int, list[SeqEvent], list[SeqEvent], int],
) -> None:
    """Whenever retention dropped an output the client never published, the read says so."""
    daemon, read_at, early, _late, evict_below = case
    stream = ClientStream("p")
    for event in early:
        stream.push_many([event])
    cursor = stream.reorder.last_published_seq
    prefix = daemon.prefix(read_at)
    snapshot = prefix.snapshot(cursor, evict_below)
    held = stream.reorder.held()
    if any(cursor < c.seq < evict_below and c.seq not in held for c in prefix.outputs):
        with pytest.raises(GapLost):
            stream.catch_up(Reader.NETWORK, snapshot)
    else:
        rebuilt = stream.catch_up(Reader.NETWORK, snapshot)
        assert rebuilt == [e for e in prefix.events if e.seq > cursor]


# --- the gap rules, one by one -----------------------------------------------------------


def test_an_exit_with_no_seq_left_for_it_is_a_gap() -> None:
    """The read says exited, but every seq up to nextSeq is an output: the exit's seq
    was lost with the output before it (it cannot be placed), so the read fails."""
    out = Output(1, "stdout", b"a")
    snapshot = ReadSnapshot([out], next_seq=2, exited=True, exit_code=3, closed=False)
    with pytest.raises(GapLost, match=r"^output after seq 0 is no .* \(no exit seq\)$"):
        events_after(0, snapshot)
    # The same read with the exit's seq known explains it (it lies at or below the
    # cursor, or the caller saw it): nothing is missing.
    assert events_after(1, snapshot, known_exit_seq=1) == []


def test_two_unexplained_seqs_and_a_pending_exit_is_a_gap() -> None:
    """One missing seq is the exit's; a second one is lost output."""
    snapshot = ReadSnapshot([], next_seq=3, exited=True, exit_code=0, closed=False)
    with pytest.raises(GapLost, match=r"seqs 1\.\.2 missing"):
        events_after(0, snapshot)
    snapshot = ReadSnapshot([], next_seq=2, exited=True, exit_code=0, closed=False)
    assert events_after(0, snapshot) == [Exited(1, 0)]


def test_an_exit_the_caller_knows_but_the_read_lacks_is_a_gap() -> None:
    """The caller saw the exit (seq 2) but its consumer is behind it (cursor 1): the exit
    must be rebuilt from the read, and a read without an exit code cannot."""
    snapshot = ReadSnapshot([], next_seq=3, exited=False, exit_code=None, closed=False)
    with pytest.raises(GapLost, match="exit at seq 2 is not in the read result"):
        events_after(1, snapshot, known_exit_seq=2)
    with_code = attrs.evolve(snapshot, exited=True, exit_code=9)
    assert events_after(1, with_code, known_exit_seq=2) == [Exited(2, 9)]


# --- held events (the caller's reorder buffer past a gap) -------------------------------


def test_held_outputs_explain_seqs_the_daemon_evicted() -> None:
    """Exit at seq 1 missed; outputs 2..4 held; the daemon retains only 4: the held
    ones explain 2 and 3, the exit explains 1."""
    held: dict[int, SeqEvent] = {s: Output(s, "stdout", b"%d" % s) for s in (2, 3, 4)}
    snapshot = ReadSnapshot([held[4]], next_seq=6, exited=True, exit_code=6, closed=True)
    assert events_after(0, snapshot, held=held) == [
        Exited(1, 6),
        held[2],
        held[3],
        held[4],
        Closed(5),
    ]
    # Without them the same read cannot explain 2 and 3.
    with pytest.raises(GapLost):
        events_after(0, snapshot)


def test_held_events_at_or_below_the_cursor_are_ignored() -> None:
    held: dict[int, SeqEvent] = {1: Output(1, "stdout", b"old"), 3: Output(3, "stdout", b"c")}
    snapshot = ReadSnapshot(
        [Output(2, "stdout", b"b")], next_seq=4, exited=False, exit_code=None, closed=False
    )
    assert events_after(1, snapshot, held=held) == [Output(2, "stdout", b"b"), held[3]]


def test_held_events_past_the_read_extend_it() -> None:
    """Pushes that arrived after the read was answered (seqs past its nextSeq) are
    explained by themselves: a held close, and a held output before it."""
    held: dict[int, SeqEvent] = {3: Output(3, "stderr", b"late"), 4: Closed(4)}
    snapshot = ReadSnapshot([], next_seq=3, exited=True, exit_code=0, closed=False)
    out = events_after(1, snapshot, known_exit_seq=2, held=held)
    assert out == [Exited(2, 0), held[3], Closed(4)]


def test_a_held_exit_past_the_read_is_kept() -> None:
    """The exit was pushed (and held: seq 1 is missing) after the daemon answered a read
    that did not have it yet: the held exit explains its seq, the read need not."""
    held: dict[int, SeqEvent] = {2: Exited(2, 4, True)}
    snapshot = ReadSnapshot(
        [Output(1, "stdout", b"a")], next_seq=2, exited=False, exit_code=None, closed=False
    )
    assert events_after(0, snapshot, held=held) == [Output(1, "stdout", b"a"), Exited(2, 4, True)]


@given(recovery_cases(), st.data())
def test_events_after_with_held_events_matches_the_oracle(
    case: tuple[Daemon, int, int, int | None], data: st.DataObject
) -> None:
    """Any subset of the events after the cursor may be held: they explain their seqs
    even where the daemon evicted them; what is neither held nor retained is lost."""
    daemon, cursor, first_retained, known_exit = case
    after = [e for e in daemon.events if e.seq > cursor]
    held_list = data.draw(st.lists(st.sampled_from(after), unique=True)) if after else []
    held = {e.seq: e for e in held_list}
    snapshot = daemon.snapshot(cursor, first_retained)
    lost = [c.seq for c in daemon.outputs if cursor < c.seq < first_retained and c.seq not in held]
    if lost:
        with pytest.raises(GapLost):
            events_after(cursor, snapshot, known_exit, held)
    else:
        assert events_after(cursor, snapshot, known_exit, held) == after
