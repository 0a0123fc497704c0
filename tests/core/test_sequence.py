"""ProcessSequence: seq assignment, retention and read rules (PROTOCOL §4 process/read, §5, §6).

A state machine drives one sequence with random output, EOFs, the exit and reads, and
checks every step against an oracle: the list of every event ever assigned plus the
retention bound. Explicit examples pin the canonical sequences from the protocol text.
"""

from __future__ import annotations

import sys
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from exec_runtime._core.events import Closed, Exited, Output, SeqEvent, StreamName
from exec_runtime._core.sequence import (
    CHUNK_COST,
    DEFAULT_RETAIN_BYTES,
    DEFAULT_RETAIN_CHUNKS,
    OWN_SEGMENT_BYTES,
    SEGMENT_BYTES,
    ProcessSequence,
    ReadResult,
    Retention,
    RetentionLimits,
    SequenceError,
)

PIPES: tuple[StreamName, ...] = ("stdout", "stderr")
PTY: tuple[StreamName, ...] = ("pty",)
ALL_STREAMS: tuple[StreamName, ...] = ("stdout", "stderr", "pty")


def retained_suffix(outputs: list[Output], limits: RetentionLimits) -> list[Output]:
    """The oracle's retention: the longest suffix of all outputs within both bounds."""
    kept: list[Output] = []
    total = 0
    for chunk in reversed(outputs):
        if len(kept) + 1 > limits.max_chunks or total + len(chunk.data) > limits.max_bytes:
            break
        kept.append(chunk)
        total += len(chunk.data)
    kept.reverse()
    return kept


limits_strategy = st.one_of(
    st.none(),
    st.builds(
        RetentionLimits,
        max_bytes=st.integers(0, 24),
        max_chunks=st.integers(1, 4),
    ),
)


class SequenceMachine(RuleBasedStateMachine):
    """Drives a ProcessSequence; ``events`` is every event ever assigned, in seq order."""

    seq: ProcessSequence

    @initialize(streams=st.sampled_from([PIPES, PTY]), limits=limits_strategy)
    def start(self, streams: tuple[StreamName, ...], limits: RetentionLimits | None) -> None:
        self.streams = streams
        self.limits = limits or RetentionLimits()
        self.seq = ProcessSequence(streams, limits)
        self.events: list[SeqEvent] = []
        self.open: set[StreamName] = set(streams)
        self.exit: Exited | None = None

    # --- oracle helpers ---------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return len(self.events) + 1

    @property
    def closed(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], Closed)

    @property
    def outputs(self) -> list[Output]:
        return [e for e in self.events if isinstance(e, Output)]

    @property
    def retained(self) -> list[Output]:
        return retained_suffix(self.outputs, self.limits)

    def expect_close(self) -> list[SeqEvent]:
        """What the oracle says a state change assigns next: closed, when it is due."""
        if not self.open and self.exit is not None and not self.closed:
            return [Closed(self.next_seq)]
        return []

    def check_unchanged(self, before: int) -> None:
        assert self.seq.next_seq == before == self.next_seq

    # --- rules ------------------------------------------------------------------------

    @precondition(lambda self: bool(self.open))
    @rule(
        data=st.data(), chunks=st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=6)
    )
    def output(self, data: st.DataObject, chunks: list[bytes]) -> None:
        for chunk in chunks:
            stream = data.draw(st.sampled_from(sorted(self.open)), label="stream")
            event = self.seq.record_output(stream, chunk)
            assert event == Output(self.next_seq, stream, chunk)
            self.events.append(event)

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def eof(self, data: st.DataObject) -> None:
        stream = data.draw(st.sampled_from(sorted(self.open)), label="stream")
        self.open.discard(stream)
        expected = self.expect_close()
        assert self.seq.record_eof(stream) == expected
        self.events += expected

    @precondition(lambda self: self.exit is None)
    @rule(code=st.integers(0, 255), sandbox_denied=st.booleans())
    def exit_(self, code: int, sandbox_denied: bool) -> None:
        self.exit = Exited(self.next_seq, code, sandbox_denied)
        self.events.append(self.exit)
        expected = [self.exit, *self.expect_close()]
        assert self.seq.record_exit(code, sandbox_denied) == expected
        self.events += expected[1:]

    @rule(stream=st.sampled_from(ALL_STREAMS), chunk=st.binary(max_size=4))
    def misuse(self, stream: StreamName, chunk: bytes) -> None:
        """Output on an ended or foreign stream, an empty chunk, a second EOF or an EOF of
        a stream this process does not have: refused, and nothing changes."""
        before = self.seq.next_seq
        if stream not in self.open or not chunk:
            with pytest.raises(SequenceError):
                self.seq.record_output(stream, chunk)
        if stream not in self.open:
            with pytest.raises(SequenceError):
                self.seq.record_eof(stream)
        self.check_unchanged(before)

    @precondition(lambda self: self.exit is not None)
    @rule(code=st.integers(0, 255))
    def exit_twice(self, code: int) -> None:
        before = self.seq.next_seq
        with pytest.raises(SequenceError):
            self.seq.record_exit(code)
        self.check_unchanged(before)
        assert self.seq.exit_code == self.exit.exit_code  # type: ignore[union-attr]

    @precondition(lambda self: self.closed)
    @rule(chunk=st.binary(min_size=1, max_size=4), code=st.integers(0, 255))
    def nothing_after_closed(self, chunk: bytes, code: int) -> None:
        before = self.seq.next_seq
        for stream in (*self.streams, *ALL_STREAMS):
            with pytest.raises(SequenceError):
                self.seq.record_output(stream, chunk)
            with pytest.raises(SequenceError):
                self.seq.record_eof(stream)
        with pytest.raises(SequenceError):
            self.seq.record_exit(code)
        self.check_unchanged(before)
        assert self.seq.closed_seq == self.events[-1].seq == before - 1

    @rule(data=st.data(), max_bytes=st.one_of(st.none(), st.integers(0, 30)))
    def read(self, data: st.DataObject, max_bytes: int | None) -> None:
        after = data.draw(st.integers(-1, self.next_seq + 1), label="after_seq")
        self.check_read(self.seq.read(after, max_bytes), after, max_bytes)
        self.check_read(self.seq.read(), 0, None)

    def check_read(self, result: ReadResult, after: int, max_bytes: int | None) -> None:
        candidates = [c for c in self.retained if c.seq > after]
        chunks = result.chunks
        assert chunks == candidates[: len(chunks)], "a prefix of the retained chunks > afterSeq"
        if max_bytes is None:
            assert chunks == candidates
            assert result.next_seq == self.next_seq
        else:
            if candidates:
                assert chunks, "the first chunk is always included"
            total = sum(len(c.data) for c in chunks)
            if len(chunks) > 1:
                assert total <= max_bytes
            if len(chunks) < len(candidates):
                # It stopped only because the next chunk would break the bound.
                assert total + len(candidates[len(chunks)].data) > max_bytes
            assert result.next_seq == (chunks[-1].seq + 1 if chunks else self.next_seq)
        assert result.exited == (self.exit is not None)
        assert result.exit_code == (self.exit.exit_code if self.exit else None)
        assert result.sandbox_denied == (self.exit.sandbox_denied if self.exit else False)
        assert result.closed == self.closed
        assert result.earliest_retained_seq == self.seq.earliest_retained_seq

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def seqs_are_contiguous_from_one(self) -> None:
        assert [e.seq for e in self.events] == list(range(1, self.next_seq))
        assert self.seq.next_seq == self.next_seq
        assert self.seq.last_seq == self.next_seq - 1

    @invariant()
    def closed_exactly_when_due_and_last(self) -> None:
        due = not self.open and self.exit is not None
        assert self.seq.closed == due == self.closed
        closes = [e for e in self.events if isinstance(e, Closed)]
        assert len(closes) == (1 if due else 0)
        if due:
            assert self.seq.closed_seq == self.events[-1].seq == closes[0].seq
        else:
            assert self.seq.closed_seq is None
        assert self.seq.exited == (self.exit is not None)
        assert self.seq.exit_code == (self.exit.exit_code if self.exit else None)

    @invariant()
    def retention_is_a_bounded_suffix(self) -> None:
        retention = self.seq.retention
        kept = list(retention.after(0))
        assert kept == self.retained
        assert len(retention) == len(kept) <= self.limits.max_chunks
        assert retention.bytes == sum(len(c.data) for c in kept) <= self.limits.max_bytes
        outputs = self.outputs
        assert kept == outputs[len(outputs) - len(kept) :]
        expected_earliest = kept[0].seq if kept else self.next_seq
        assert self.seq.earliest_retained_seq == expected_earliest
        assert retention.first_seq() == (kept[0].seq if kept else None)

    @invariant()
    def read_ready_rule(self) -> None:
        kept = self.retained
        for after in range(-1, self.next_seq + 2):
            expected = (
                any(c.seq > after for c in kept)
                or self.closed
                or (self.exit is not None and after < self.next_seq - 1)
            )
            assert self.seq.read_ready(after) == expected, after


# No max_examples here: the active profile (dev/ci/soak in tests/conftest.py) sets it.
SequenceMachine.TestCase.settings = settings(stateful_step_count=50, deadline=None)
TestSequenceMachine = SequenceMachine.TestCase


# --- explicit examples (PROTOCOL §5, §6) ------------------------------------------------


def test_canonical_out_err_exit_7() -> None:
    """``printf out; printf err >&2; exit 7`` → output 1, output 2, exited 3, closed 4."""
    seq = ProcessSequence(PIPES)
    assert seq.record_output("stdout", b"out") == Output(1, "stdout", b"out")
    assert seq.record_output("stderr", b"err") == Output(2, "stderr", b"err")
    assert seq.record_exit(7) == [Exited(3, 7)]
    assert seq.record_eof("stdout") == []
    assert not seq.closed
    assert seq.record_eof("stderr") == [Closed(4)]
    result = seq.read()
    assert result.chunks == [Output(1, "stdout", b"out"), Output(2, "stderr", b"err")]
    assert (result.next_seq, result.exited, result.exit_code, result.closed) == (5, True, 7, True)
    assert result.earliest_retained_seq == 1
    with pytest.raises(SequenceError):
        seq.record_output("stdout", b"late")


def test_exit_after_both_eofs_closes_at_once() -> None:
    seq = ProcessSequence(PIPES)
    seq.record_output("stdout", b"out")
    seq.record_output("stderr", b"err")
    seq.record_eof("stdout")
    seq.record_eof("stderr")
    assert seq.record_exit(7) == [Exited(3, 7), Closed(4)]
    assert seq.closed_seq == 4
    assert seq.read().next_seq == 5


def test_late_output_after_exit() -> None:
    """A grandchild holding the pipe: exited 1, output 2, closed 3."""
    seq = ProcessSequence(PIPES)
    assert seq.record_exit(0) == [Exited(1, 0)]
    assert seq.record_eof("stderr") == []
    assert seq.record_output("stdout", b"late") == Output(2, "stdout", b"late")
    assert seq.read_ready(1)
    assert seq.record_eof("stdout") == [Closed(3)]
    result = seq.read(after_seq=1)
    assert result.chunks == [Output(2, "stdout", b"late")]
    assert (result.next_seq, result.closed) == (4, True)


def test_pty_has_one_stream() -> None:
    seq = ProcessSequence(PTY)
    assert seq.record_output("pty", b"$ ") == Output(1, "pty", b"$ ")
    with pytest.raises(SequenceError):
        seq.record_output("stdout", b"x")
    assert seq.record_exit(130) == [Exited(2, 130)]
    assert seq.record_eof("pty") == [Closed(3)]


def test_retention_evicts_oldest_whole_chunks() -> None:
    seq = ProcessSequence(PIPES, RetentionLimits(max_bytes=10))
    seq.record_output("stdout", b"aaaa")  # 1
    seq.record_output("stderr", b"bbbb")  # 2
    assert [c.seq for c in seq.read().chunks] == [1, 2]
    seq.record_output("stdout", b"ccc")  # 3: 11 bytes, so chunk 1 goes, whole
    result = seq.read()
    assert result.chunks == [Output(2, "stderr", b"bbbb"), Output(3, "stdout", b"ccc")]
    assert result.earliest_retained_seq == 2
    assert seq.retention.bytes == 7
    seq.record_output("stdout", b"0123456789")  # 4: exactly the bound, alone
    assert seq.read().chunks == [Output(4, "stdout", b"0123456789")]
    assert seq.earliest_retained_seq == 4
    seq.record_output("stdout", b"01234567890")  # 5: over the bound, kept by nobody
    result = seq.read()
    assert result.chunks == []
    assert result.earliest_retained_seq == result.next_seq == 6
    # Exit and close are state, never evicted.
    seq.record_exit(0)
    seq.record_eof("stdout")
    seq.record_eof("stderr")
    result = seq.read()
    assert (result.exited, result.closed, result.next_seq) == (True, True, 8)


def test_retention_chunk_bound() -> None:
    seq = ProcessSequence(PTY, RetentionLimits(max_chunks=2))
    for i in range(5):
        seq.record_output("pty", bytes([65 + i]))
    assert [c.seq for c in seq.read().chunks] == [4, 5]
    assert seq.read(after_seq=4).chunks == [Output(5, "pty", b"E")]
    assert seq.earliest_retained_seq == 4


def test_default_limits_match_protocol() -> None:
    assert RetentionLimits() == RetentionLimits(1 << 20, 50_000)
    assert (DEFAULT_RETAIN_BYTES, DEFAULT_RETAIN_CHUNKS) == (1_048_576, 50_000)


def test_retention_compaction_keeps_reads_right() -> None:
    """Many evictions compact the backing list; bisecting by seq must still work."""
    retention = Retention(RetentionLimits(max_bytes=1 << 20, max_chunks=3))
    for seq in range(1, 5001):
        retention.append(Output(seq, "stdout", b"x"))
        assert retention.first_seq() == max(1, seq - 2)
    assert [c.seq for c in retention.after(0)] == [4998, 4999, 5000]
    assert [c.seq for c in retention.after(4998)] == [4999, 5000]
    assert list(retention.after(5000)) == []
    assert retention.has_after(4999) and not retention.has_after(5000)
    assert (len(retention), retention.bytes) == (3, 3)


def test_max_bytes() -> None:
    seq = ProcessSequence(PIPES)
    for data in (b"12345", b"678", b"9", b"abcdef"):
        seq.record_output("stdout", data)
    seq.record_exit(0)  # seq 5
    assert seq.read(max_bytes=0).chunks == [Output(1, "stdout", b"12345")]
    assert seq.read(max_bytes=0).next_seq == 2
    result = seq.read(max_bytes=9)
    assert [c.seq for c in result.chunks] == [1, 2, 3]
    assert result.next_seq == 4
    result = seq.read(after_seq=3, max_bytes=2)
    assert [c.seq for c in result.chunks] == [4]  # alone over the bound: still returned
    assert result.next_seq == 5
    result = seq.read(after_seq=4, max_bytes=100)
    assert result.chunks == []
    assert result.next_seq == 6  # none returned: the next unassigned seq
    assert seq.read().next_seq == 6


def test_read_ready_long_poll_rules() -> None:
    seq = ProcessSequence(PIPES)
    assert not seq.read_ready(0)
    seq.record_output("stdout", b"x")  # 1
    assert seq.read_ready(0) and not seq.read_ready(1)
    seq.record_exit(0)  # 2
    assert seq.read_ready(1), "exited and the cursor is before the exit"
    assert not seq.read_ready(2), "the cursor covers the exit: wait for closed"
    seq.record_eof("stdout")
    seq.record_eof("stderr")  # closed 3
    assert seq.read_ready(3) and seq.read_ready(100)


def test_unknown_stream_and_empty_chunk() -> None:
    seq = ProcessSequence(PIPES)
    with pytest.raises(SequenceError):
        seq.record_output("pty", b"x")
    with pytest.raises(SequenceError):
        seq.record_eof("pty")
    with pytest.raises(SequenceError):
        seq.record_output("stdout", b"")
    assert seq.next_seq == 1


def test_evicted_chunks_release_their_data_at_once() -> None:
    """Evicted output must not stay referenced until the next compaction (daemon RSS)."""
    retention = Retention(RetentionLimits(max_bytes=3 * 1000, max_chunks=1000))
    for seq in range(1, 11):
        retention.append(Output(seq, "stdout", bytes([seq]) * 1000))
    assert retention.payload_held == 3000  # only the three retained payloads
    assert [chunk.seq for chunk in retention.after(0)] == [8, 9, 10]
    assert retention.bytes == 3000


@given(
    retain=st.integers(min_value=1, max_value=64),
    window=st.integers(min_value=1, max_value=64),
    max_chunks=st.integers(min_value=1, max_value=6),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("out"), st.integers(min_value=1, max_value=40)),
            st.tuples(st.just("ack"), st.integers(min_value=0, max_value=3)),
        ),
        max_size=60,
    ),
)
def test_the_ack_window_never_lets_unacknowledged_output_be_evicted(
    retain: int, window: int, max_chunks: int, steps: list[tuple[str, int]]
) -> None:
    """The sequencer's rule (append a chunk only when ``fits_unacked``, keeping what is
    after the acknowledged seq) against an oracle: every unacknowledged chunk stays
    retained, and what is acknowledged is bounded by the usual retention limits."""
    retention = Retention(RetentionLimits(max_bytes=retain, max_chunks=max_chunks))
    ack_window = RetentionLimits(max_bytes=window, max_chunks=max_chunks)
    acked, next_seq, appended = 0, 1, []
    for kind, value in steps:
        if kind == "ack":
            acked = min(next_seq - 1, acked + value)  # the client acks a prefix of what came
            continue
        size = min(value, window)  # the sequencer cuts a chunk to the window
        if not retention.fits_unacked(acked, size, ack_window):
            acked = next_seq - 1  # waiting: only an ack opens the window
            assert retention.fits_unacked(acked, size, ack_window)
        chunk = Output(next_seq, "stdout", b"x" * size)
        retention.append(chunk, keep_after=acked)
        appended.append(chunk)
        next_seq += 1
        unacked = [c for c in appended if c.seq > acked]
        retained = list(retention.after(0))
        assert [c.seq for c in retained if c.seq > acked] == [c.seq for c in unacked]
        assert sum(len(c.data) for c in unacked) <= max(window, size)
        assert len(unacked) <= max_chunks  # the window bounds the chunk count too
        # Acknowledged output goes first, down to the limits: retention is over them
        # only while its oldest chunk is unacknowledged.
        if sum(len(c.data) for c in retained) > retain or len(retained) > max_chunks:
            assert retained[0].seq > acked


@given(
    retain=st.integers(min_value=1, max_value=64),
    max_chunks=st.integers(min_value=1, max_value=40),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("out"), st.integers(min_value=1, max_value=20), st.booleans()),
            st.tuples(st.just("fits"), st.integers(min_value=0, max_value=80), st.booleans()),
        ),
        min_size=80,  # long enough for 32 evictions, then a compaction
        max_size=240,
    ),
)
def test_fits_unacked_counts_exactly_the_retained_chunks_after_the_ack(
    retain: int, max_chunks: int, steps: list[tuple[str, int, bool]]
) -> None:
    """``fits_unacked`` (running offsets and a bisect) against a walk over what is
    retained, through evictions with and without ``keep_after`` and compactions."""
    retention = Retention(RetentionLimits(max_bytes=retain, max_chunks=max_chunks))
    window = RetentionLimits(max_bytes=30, max_chunks=5)
    next_seq = 1
    for kind, value, flag in steps:
        if kind == "out":
            keep_after = next_seq - 3 if flag else None  # an acking client, or not
            retention.append(Output(next_seq, "stdout", b"x" * value), keep_after)
            next_seq += 1
            continue
        acked, size = value % next_seq, 1 + value % 17
        held = [chunk for chunk in retention.after(acked)]
        assert all(chunk.data for chunk in held)  # after() yields retained chunks only
        expected = not held or (
            sum(len(chunk.data) for chunk in held) + size <= window.max_bytes
            and len(held) + 1 <= window.max_chunks
        )
        assert retention.fits_unacked(acked, size, window) == expected


def test_fits_unacked_bounds_the_chunk_count() -> None:
    """The window's chunk bound on its own: tiny chunks, far below its byte bound."""
    retention = Retention(RetentionLimits(max_bytes=1 << 20, max_chunks=100))
    window = RetentionLimits(max_bytes=1 << 20, max_chunks=3)
    for seq in (1, 2, 3):
        assert retention.fits_unacked(0, 1, window)
        retention.append(Output(seq, "stdout", b"x"), keep_after=0)
    # Three held chunks fill a three-chunk window: a fourth must wait for an ack.
    assert not retention.fits_unacked(0, 1, window)
    assert retention.fits_unacked(1, 1, window)  # one acknowledged: room for one more
    assert not retention.fits_unacked(0, 1, RetentionLimits(max_bytes=1 << 20, max_chunks=2))


def test_finish_ends_a_sequence_whose_task_failed() -> None:
    """finish(): the exit unless recorded, every open stream's end, then closed."""
    seq = ProcessSequence(("stdout", "stderr"))
    seq.record_output("stdout", b"x")
    events = seq.finish(137)
    assert [type(e).__name__ for e in events] == ["Exited", "Closed"]
    assert [e.seq for e in events] == [2, 3]
    assert seq.exit_code == 137 and seq.closed

    seq = ProcessSequence(("stdout", "stderr"))
    seq.record_exit(3)
    seq.record_eof("stdout")
    events = seq.finish(137)
    assert [type(e).__name__ for e in events] == ["Closed"]
    assert seq.exit_code == 3  # the recorded exit stands


def test_a_cleared_retention_holds_nothing_and_appends_anew() -> None:
    """clear() (the process is forgotten) empties it; what is appended after reads back
    exactly, its bytes counted from zero."""
    retention = Retention(RetentionLimits(max_bytes=1 << 20, max_chunks=100))
    retention.append(Output(1, "stdout", b"abc"))
    retention.append(Output(2, "stderr", b"de"))
    retention.clear()
    assert (len(retention), retention.bytes, retention.cost) == (0, 0, 0)
    assert list(retention.after(0)) == [] and retention.first_seq() is None
    retention.append(Output(3, "stdout", b"xyz"))
    assert list(retention.after(0)) == [Output(3, "stdout", b"xyz")]
    assert (len(retention), retention.bytes) == (1, 3)


def test_a_misuse_of_the_sequence_says_what_it_was() -> None:
    """The daemon's own invariants: a SequenceError names the broken one."""
    seq = ProcessSequence(PIPES)
    with pytest.raises(SequenceError, match=r"^unknown stream pty$"):
        seq.record_eof("pty")
    seq.record_eof("stdout")
    with pytest.raises(SequenceError, match=r"^stream stdout already ended$"):
        seq.record_eof("stdout")
    with pytest.raises(SequenceError, match=r"^stream stdout is not open$"):
        seq.record_output("stdout", b"x")
    with pytest.raises(SequenceError, match=r"^an output chunk is never empty$"):
        seq.record_output("stderr", b"")
    seq.record_exit(0)
    with pytest.raises(SequenceError, match=r"^the exit is recorded once$"):
        seq.record_exit(0)


def test_recorded_output_after_keep_after_is_held_past_the_limits() -> None:
    """The sequencer passes the client's acknowledged seq: what follows it is kept
    whatever the retention limits say (evicted once acknowledged)."""
    seq = ProcessSequence(PIPES, RetentionLimits(max_bytes=4, max_chunks=1))
    seq.record_output("stdout", b"abc", keep_after=0)
    seq.record_output("stdout", b"def", keep_after=0)
    assert [c.seq for c in seq.read().chunks] == [1, 2]  # nothing acknowledged
    seq.record_output("stdout", b"ghi", keep_after=2)
    assert [c.seq for c in seq.read().chunks] == [3]  # 1 and 2 acknowledged: evicted
    seq.record_output("stdout", b"jkl")
    assert [c.seq for c in seq.read().chunks] == [4]


def test_evicted_chunks_do_not_stay_in_the_retentions_arrays() -> None:
    """A long-lived process: its retention's bookkeeping (seqs, offsets, streams) is
    compacted as chunks are evicted, so it stays bounded by what is retained."""
    retention = Retention(RetentionLimits(max_bytes=1 << 20, max_chunks=2))
    for seq in range(1, 1001):
        retention.append(Output(seq, "stdout", b"x"))
    assert [c.seq for c in retention.after(0)] == [999, 1000]
    assert len(retention._seqs) <= 2 * 32  # compacted: not 1000 entries


_SIZES = st.one_of(
    st.integers(min_value=1, max_value=200),  # shared segments
    st.integers(min_value=OWN_SEGMENT_BYTES - 2, max_value=OWN_SEGMENT_BYTES + 2),
    st.integers(min_value=SEGMENT_BYTES - 300, max_value=SEGMENT_BYTES + 300),
)


@given(
    retain=st.integers(min_value=1, max_value=3 * SEGMENT_BYTES),
    max_chunks=st.integers(min_value=1, max_value=80),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("out"), _SIZES),
            st.tuples(st.just("ack"), st.integers(min_value=0, max_value=5)),
        ),
        max_size=120,
    ),
)
def test_segmented_payloads_read_back_exactly_and_hold_only_what_is_retained(
    retain: int, max_chunks: int, steps: list[tuple[str, int]]
) -> None:
    """Chunks small and big, on both sides of ``OWN_SEGMENT_BYTES`` and of a shared
    segment's room, evicted with and without ``keep_after`` (and through compactions
    of both index arrays): every read returns the retained chunks' exact bytes, in
    order, and the segments hold the retained payload, not a byte more."""
    retention = Retention(RetentionLimits(max_bytes=retain, max_chunks=max_chunks))
    model: list[Output] = []
    acked, next_seq = 0, 1
    for kind, value in steps:
        if kind == "ack":
            acked = min(next_seq - 1, acked + value)
            retention.trim(keep_after=acked)
        else:
            chunk = Output(
                next_seq, "stderr" if next_seq % 3 else "stdout", _payload(next_seq, value)
            )
            retention.append(chunk, keep_after=acked)
            model.append(chunk)
            next_seq += 1
        # The model's eviction: oldest first, past either limit, never after ``acked``.
        while (
            model
            and (sum(len(c.data) for c in model) > retain or len(model) > max_chunks)
            and model[0].seq <= acked
        ):
            model.pop(0)
        assert list(retention.after(0)) == model
        assert retention.bytes == sum(len(c.data) for c in model)
        assert retention.payload_held == retention.bytes
        for after in {0, acked, next_seq // 2, next_seq}:
            assert list(retention.after(after)) == [c for c in model if c.seq > after]


def _payload(seq: int, size: int) -> bytes:
    """Distinct bytes per chunk, so a read from the wrong offset shows."""
    return bytes((seq * 7 + i) % 251 for i in range(min(size, 512))) * (size // 512) + bytes(
        (seq * 7 + i) % 251 for i in range(size % 512)
    )


def test_a_big_chunk_is_kept_as_it_came_and_appending_copies_nothing_retained() -> None:
    """A chunk of ``OWN_SEGMENT_BYTES`` or more is retained as its own ``bytes`` (read
    back as the same object), and appending one to a 4 MiB retention allocates about
    its own bookkeeping, not the 4 MiB: one flat buffer was re-allocated and copied
    whole every few appends as it grew (88 µs per 256 KiB chunk at a 4 MiB window)."""
    chunk_bytes = 256 * 1024
    retention = Retention(RetentionLimits(max_bytes=4 << 20, max_chunks=1000))
    chunks = [Output(seq, "stdout", bytes([seq]) * chunk_bytes) for seq in range(1, 41)]
    unretained = [sys.getrefcount(chunk.data) for chunk in chunks]
    for chunk in chunks[:16]:
        retention.append(chunk)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        for chunk in chunks[16:]:  # 24 more, each evicting the oldest
            retention.append(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert peak - before < chunk_bytes // 4
    assert [c.seq for c in retention.after(0)] == list(range(25, 41))
    assert all(a.data is b.data for a, b in zip(retention.after(0), chunks[24:], strict=True))
    assert retention.payload_held == 16 * chunk_bytes
    # What was evicted is let go at once, not when the index is next compacted.
    assert [sys.getrefcount(c.data) for c in chunks[:24]] == unretained[:24]


def test_evicted_segments_do_not_stay_in_the_segment_list_and_reads_stay_exact() -> None:
    """Chunks with segments of their own, each evicting the one before: the segment list
    is compacted as they go (as the index arrays are), and every read and the payload
    held stay exact through the compactions."""
    retention = Retention(RetentionLimits(max_bytes=2 * OWN_SEGMENT_BYTES, max_chunks=1000))
    chunks = [
        Output(seq, "stdout", bytes([seq % 256]) * OWN_SEGMENT_BYTES) for seq in range(1, 301)
    ]
    for index, chunk in enumerate(chunks):
        retention.append(chunk)
        assert list(retention.after(0)) == chunks[max(0, index - 1) : index + 1]
        assert (
            retention.payload_held
            == retention.bytes
            == len(list(retention.after(0))) * (OWN_SEGMENT_BYTES)
        )
    assert len(retention._segments) <= 2 * 32  # compacted: not 300 entries


def test_a_chunk_of_exactly_own_segment_bytes_is_kept_as_it_came() -> None:
    retention = Retention(RetentionLimits())
    small, own = b"s" * (OWN_SEGMENT_BYTES - 1), b"o" * OWN_SEGMENT_BYTES
    retention.append(Output(1, "stdout", small))
    retention.append(Output(2, "stdout", own))
    first, second = retention.after(0)
    assert first.data == small and first.data is not small  # copied into a shared segment
    assert second.data is own


def test_tiny_chunks_share_segments_so_each_costs_about_chunk_cost() -> None:
    """The retention's promise to the output budget: a chunk costs ``CHUNK_COST``
    beyond its payload. 20,000 two-byte chunks (a line-at-a-time child) must not each
    get a buffer object of their own (some 60 bytes more apiece)."""
    count = 20_000
    retention = Retention(RetentionLimits(max_bytes=1 << 20, max_chunks=50_000))
    payloads = [b"%02d" % (seq % 100) for seq in range(count)]  # made before measuring
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for seq, payload in enumerate(payloads, start=1):
            retention.append(Output(seq, "stdout", payload))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert retention.cost == count * (2 + CHUNK_COST)
    # The arrays' growth slack on top; one object per chunk would be over 2x.
    assert after - before <= 1.5 * retention.cost, (after - before, retention.cost)


def test_clear_forgets_every_chunk_and_appending_after_it_works() -> None:
    retention = Retention(RetentionLimits())
    for seq in range(1, 4):
        retention.append(Output(seq, "stdout", bytes([seq]) * (seq * 3000)))
    retention.clear()
    assert list(retention.after(0)) == [] and len(retention) == 0
    assert retention.bytes == retention.payload_held == 0
    later = [Output(4, "stdout", b"x" * 10), Output(5, "stdout", b"y" * 5000)]
    for chunk in later:
        retention.append(chunk)
    assert list(retention.after(0)) == later
    assert retention.payload_held == retention.bytes == 5010


def test_no_append_of_a_small_chunk_re_allocates_more_than_a_segment() -> None:
    """Small chunks share segments of at most ``SEGMENT_BYTES``: a segment that grew
    with the window would be re-allocated and copied whole as it grows (the flat
    buffer's cost, which the segments replaced)."""
    retention = Retention(RetentionLimits(max_bytes=1 << 20, max_chunks=50_000))
    chunks = [Output(seq, "stdout", bytes([seq % 256]) * 3000) for seq in range(1, 1001)]
    for chunk in chunks[:400]:  # over 1 MiB: evicting from here on
        retention.append(chunk)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        most = 0  # the most one append had allocated at once beyond what it began with
        for chunk in chunks[400:]:
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            retention.append(chunk)
            most = max(most, tracemalloc.get_traced_memory()[1] - before)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert most <= 2 * SEGMENT_BYTES + 4096, most
    assert list(retention.after(0)) == chunks[-len(retention) :]
    assert retention.payload_held == retention.bytes
