"""ReorderBuffer: permutations publish 1..n exactly once; a state machine against an oracle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from exec_runtime._core.events import Closed, Exited, Output, SeqEvent, event_size
from exec_runtime._core.reorder import ReorderBuffer, ReorderOverflow


def make_sequence(before: list[bytes], after: list[bytes]) -> list[SeqEvent]:
    """outputs, exited, more outputs (a grandchild holding the pipe), closed; seqs 1..n."""
    events: list[SeqEvent] = []
    for data in before:
        events.append(Output(len(events) + 1, "stdout", data))
    events.append(Exited(len(events) + 1, 7))
    for data in after:
        events.append(Output(len(events) + 1, "stderr", data))
    events.append(Closed(len(events) + 1))
    return events


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn) -> tuple[list[SeqEvent], list[SeqEvent]]:
    chunks = st.lists(st.binary(max_size=8), max_size=20)
    sequence = make_sequence(draw(chunks), draw(chunks))
    extra = draw(st.lists(st.sampled_from(sequence), max_size=15))
    pushed = draw(st.permutations(sequence + extra))
    return sequence, pushed


@given(shuffled_with_duplicates())
def test_any_order_publishes_each_seq_once_in_order(
    case: tuple[list[SeqEvent], list[SeqEvent]],
) -> None:
    sequence, pushed = case
    buf = ReorderBuffer()
    published: list[SeqEvent] = []
    for event in pushed:
        published.extend(buf.push(event))
    assert published == sequence
    assert buf.closed
    assert buf.last_published_seq == len(sequence)
    assert (buf.pending_count, buf.pending_bytes, buf.first_missing_seq()) == (0, 0, None)


@given(shuffled_with_duplicates(), st.integers(0, 40))
def test_push_many_equals_pushes_and_nothing_after_closed(
    case: tuple[list[SeqEvent], list[SeqEvent]], later_seq: int
) -> None:
    sequence, pushed = case
    buf = ReorderBuffer()
    assert buf.push_many(pushed) == sequence
    assert buf.push(Output(later_seq, "stdout", b"late")) == []
    assert buf.push(Closed(later_seq)) == []
    assert buf.pending_count == 0


def test_output_after_pending_closed_is_dropped() -> None:
    buf = ReorderBuffer()
    assert buf.push(Output(3, "stdout", b"xx")) == []
    assert buf.push(Closed(2)) == []  # prunes seq 3: nothing follows closed
    assert (buf.pending_count, buf.pending_bytes) == (1, 0)
    assert buf.push(Output(4, "stdout", b"x")) == []
    assert buf.pending_count == 1
    assert buf.push(Output(1, "stdout", b"a")) == [Output(1, "stdout", b"a"), Closed(2)]
    assert buf.closed


def test_overflow_on_event_count() -> None:
    buf = ReorderBuffer(max_pending_events=3)
    for seq in (2, 3, 4):
        assert buf.push(Output(seq, "stdout", b"")) == []
    assert buf.first_missing_seq() == 1
    with pytest.raises(ReorderOverflow):
        buf.push(Output(5, "stdout", b""))
    assert buf.pending_count == 3  # unchanged by the rejected push
    # A contiguous event is never held, so it never overflows.
    assert [e.seq for e in buf.push(Output(1, "stdout", b""))] == [1, 2, 3, 4]


def test_overflow_on_bytes_and_push_many_keeps_published() -> None:
    buf = ReorderBuffer(max_pending_bytes=10)
    assert buf.push(Output(3, "stdout", b"x" * 10)) == []
    with pytest.raises(ReorderOverflow) as info:
        buf.push_many([Output(1, "stdout", b"a"), Output(4, "stdout", b"b")])
    assert info.value.published == [Output(1, "stdout", b"a")]
    assert buf.last_published_seq == 1
    # One contiguous event larger than the bound is fine.
    big = Output(2, "stdout", b"y" * 100)
    assert buf.push(big) == [big, Output(3, "stdout", b"x" * 10)]


def test_resume_from_last_published_seq() -> None:
    buf = ReorderBuffer(last_published_seq=5)
    assert buf.push(Output(5, "stdout", b"old")) == []
    assert buf.push(Exited(6, 0)) == [Exited(6, 0)]


MAX_EVENTS = 4
MAX_BYTES = 12
UNIVERSE = 14


class ReorderMachine(RuleBasedStateMachine):
    """One fixed true sequence (Closed at ``closed_seq``); pushes of any seq in any order,
    including bogus ones past Closed. Tight bounds make overflows common."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = ReorderBuffer(max_pending_events=MAX_EVENTS, max_pending_bytes=MAX_BYTES)
        self.closed_seq = 0
        self.exit_seq = 0
        self.last = 0
        self.held: set[int] = set()  # oracle: seqs ever accepted past a gap
        self.closed_seen = False
        self.published: list[SeqEvent] = []

    @initialize(closed_seq=st.integers(1, UNIVERSE - 2), data=st.data())
    def setup(self, closed_seq: int, data: st.DataObject) -> None:
        self.closed_seq = closed_seq
        self.exit_seq = data.draw(st.integers(0, closed_seq - 1))  # 0: no exit in range

    def event(self, seq: int) -> SeqEvent:
        if seq == self.closed_seq:
            return Closed(seq)
        if seq == self.exit_seq:
            return Exited(seq, 1)
        return Output(seq, "stdout", b"z" * (seq % 6))

    def pending(self) -> set[int]:
        return {
            s for s in self.held if s > self.last and not (self.closed_seen and s > self.closed_seq)
        }

    @rule(seq=st.integers(1, UNIVERSE))
    def push(self, seq: int) -> None:
        event = self.event(seq)
        pending = self.pending()
        dropped = seq <= self.last or seq in pending or (self.closed_seen and seq > self.closed_seq)
        held = not dropped and seq != self.last + 1
        if held:
            after = {s for s in pending if not (seq == self.closed_seq and s > seq)} | {seq}
            nbytes = sum(event_size(self.event(s)) for s in after)
            if len(after) > MAX_EVENTS or nbytes > MAX_BYTES:
                with pytest.raises(ReorderOverflow):
                    self.buf.push(event)
                return
        result = self.buf.push(event)
        if dropped:
            assert result == []
            return
        if seq == self.closed_seq:
            self.closed_seen = True
        if held:
            assert result == []
            self.held.add(seq)
            return
        expected = [event]
        self.last = seq
        while self.last + 1 in self.pending():
            self.last += 1
            expected.append(self.event(self.last))
        assert result == expected
        self.published.extend(result)

    @rule()
    def discard_pending(self) -> None:
        """What the client does on an overflow when the daemon holds everything
        unacknowledged: forget what is held; a read brings it back."""
        self.buf.discard_pending()
        self.held = {s for s in self.held if s <= self.last}
        self.closed_seen = self.last == self.closed_seq

    @invariant()
    def state(self) -> None:
        pending = self.pending()
        assert self.buf.last_published_seq == self.last
        assert self.buf.pending_count == len(pending)
        assert self.buf.pending_bytes == sum(event_size(self.event(s)) for s in pending)
        assert self.buf.first_missing_seq() == (self.last + 1 if pending else None)
        assert self.buf.closed == (self.last == self.closed_seq)
        assert [e.seq for e in self.published] == list(range(1, self.last + 1))
        assert self.last <= self.closed_seq


TestReorderMachine = ReorderMachine.TestCase


def test_an_overflow_names_its_seq_and_bounds_and_push_releases_nothing() -> None:
    """The message is what the client's Failed says; ``published`` is a list (empty
    from ``push``, what ``push_many`` released before the overflow), never None."""
    buf = ReorderBuffer(max_pending_events=1)
    assert buf.push(Output(3, "stdout", b"a")) == []
    with pytest.raises(ReorderOverflow, match=r"overflow at seq 4: 2 events / 2 bytes") as info:
        buf.push(Output(4, "stdout", b"b"))
    assert info.value.published == []
    with pytest.raises(ReorderOverflow, match=r"overflow at seq 5: .*waiting for seq 2") as info:
        buf.push_many([Output(1, "stdout", b"x"), Output(5, "stdout", b"c")])
    assert info.value.published == [Output(1, "stdout", b"x")]


def test_a_closed_held_past_a_gap_counts_against_the_bound() -> None:
    """A Closed past a gap frees the room of what it prunes, but takes one itself."""
    buf = ReorderBuffer(max_pending_events=1)
    assert buf.push(Output(3, "stdout", b"a")) == []
    with pytest.raises(ReorderOverflow, match="2 events"):
        buf.push(Closed(5))  # 3 stays below it: two events would be pending
    assert buf.push(Closed(3 - 1)) == []  # prunes 3: one event pending
    assert buf.pending_count == 1


def test_a_closed_past_a_gap_frees_the_bytes_of_what_it_prunes() -> None:
    buf = ReorderBuffer(max_pending_bytes=10)
    assert buf.push(Output(3, "stdout", b"x" * 10)) == []
    assert buf.push(Closed(2)) == []  # prunes seq 3: its 10 bytes no longer count
    assert buf.pending_bytes == 0
    assert buf.push(Output(1, "stdout", b"a")) == [Output(1, "stdout", b"a"), Closed(2)]


def test_the_pending_bounds_may_be_zero_but_not_negative() -> None:
    strict = ReorderBuffer(max_pending_events=0, max_pending_bytes=0)
    assert strict.push(Output(1, "stdout", b"a")) == [Output(1, "stdout", b"a")]
    with pytest.raises(ReorderOverflow):
        strict.push(Output(3, "stdout", b""))
    for bounds in ({"max_pending_events": -1}, {"max_pending_bytes": -1}):
        with pytest.raises(ValueError, match=r"^pending bounds must be >= 0$"):
            ReorderBuffer(**bounds)


def test_a_negative_published_cursor_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^last_published_seq must be >= 0$"):
        ReorderBuffer(last_published_seq=-1)
