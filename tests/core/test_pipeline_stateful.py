"""The whole event pipeline in pure core code: no I/O, no Trio, millions of interleavings.

    daemon: ProcessSequence (seqs + retention)
      → network: the current connection's frames in flight; delivered in any order,
        duplicated, lost; a disconnect loses them all and detaches the session
      → client: ReorderBuffer, gap reads and recovery reads merged with events_after,
        and a consumer that may lag and catch up from its own cursor.

Invariants, after every step:

- the client publishes exactly a prefix of the daemon's sequence, contiguous, once;
  the consumer sees exactly a prefix too; nothing after ``closed``;
- ``GapLost`` is reported only when retention really evicted an output the client
  had not received (not in flight to it, not held in its reorder buffer);
- ``ReorderOverflow`` only when the pending bounds are really exceeded;
- at the end (the process finishes, the network heals, every frame is delivered and
  every gap read), a process that did not fail has published the whole sequence.

``Pipeline`` is the model; a ``RuleBasedStateMachine`` drives it (shrinkable
counterexamples), and a seeded random walk drives it much longer per example for the
soak profile (``HYPOTHESIS_PROFILE=soak``: about ten million steps).
"""

from __future__ import annotations

import random

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
from exec_runtime._core.recovery import GapLost, ReadSnapshot, events_after
from exec_runtime._core.reorder import ReorderBuffer, ReorderOverflow
from exec_runtime._core.sequence import ProcessSequence, RetentionLimits

STREAMS: tuple[StreamName, ...] = ("stdout", "stderr")
KNOWN_HELD_GAP_BUG = False
"""Fixed: catch-up reads pass the reorder buffer's held events to events_after, so
outputs held past a missed exit are not counted as missing (regression:
test_recovery_read_counts_held_outputs_as_missing)."""
SOAK = settings.get_current_profile_name() == "soak"
WALK_STEPS = 5000 if SOAK else 300


class Pipeline:
    """One process, from the daemon's sequencer to the client's consumer."""

    def __init__(
        self,
        retain_bytes: int,
        retain_chunks: int,
        max_pending_events: int = 256,
        max_pending_bytes: int = 1 << 20,
        *,
        strict_gaps: bool = not KNOWN_HELD_GAP_BUG,
    ) -> None:
        self.strict_gaps = strict_gaps
        # --- daemon ---
        self.sequence = ProcessSequence(STREAMS, RetentionLimits(retain_bytes, retain_chunks))
        self.log: list[SeqEvent] = []  # every event the daemon assigned, by seq
        self.attached = True
        # --- network: frames on the current connection, not yet delivered ---
        self.wire: list[SeqEvent] = []
        # --- client ---
        self.buffer = ReorderBuffer(
            max_pending_events=max_pending_events, max_pending_bytes=max_pending_bytes
        )
        self.published: list[SeqEvent] = []
        self.exit_seq: int | None = None  # the published exit's seq (the client knows it)
        self.recovering = False  # re-attached; the recovery read has not happened yet
        self.failed: str | None = None  # the process failed (terminal Failed)
        # --- consumer: a bounded queue fed from publication, or its own catch-up reads ---
        self.queue: list[SeqEvent] = []
        self.queued_seq = 0
        self.room = True  # the queue has room (the real one is bounded by count and bytes)
        self.lagging = False
        self.consumed: list[SeqEvent] = []
        self.consumer_failed: str | None = None
        self.false_gap = False
        self.steps = 0
        self._checked_published = 0
        self._checked_consumed = 0

    # --- the daemon ---------------------------------------------------------------------

    def _emit(self, events: list[SeqEvent]) -> None:
        self.log.extend(events)
        if self.attached:
            self.wire.extend(events)

    def output(self, stream_index: int, size: int) -> None:
        if self.sequence.closed:
            return
        open_streams = [s for s in STREAMS if s in self.sequence._open_streams]
        if not open_streams:
            return
        stream = open_streams[stream_index % len(open_streams)]
        data = bytes([len(self.log) % 251]) * size
        self._emit([self.sequence.record_output(stream, data)])

    def eof(self, stream_index: int) -> None:
        open_streams = [s for s in STREAMS if s in self.sequence._open_streams]
        if open_streams:
            self._emit(self.sequence.record_eof(open_streams[stream_index % len(open_streams)]))

    def exit(self, code: int) -> None:
        if not self.sequence.exited:
            self._emit(self.sequence.record_exit(code))

    def evicted_seqs(self) -> set[int]:
        retained = {c.seq for c in self.sequence.retention.after(0)}
        return {e.seq for e in self.log if isinstance(e, Output) and e.seq not in retained}

    # --- the network --------------------------------------------------------------------

    def deliver(self, index: int) -> None:
        if self.wire:
            self._push([self.wire.pop(index % len(self.wire))])

    def duplicate(self, index: int) -> None:
        if self.wire:
            self._push([self.wire[index % len(self.wire)]])

    def lose(self, index: int) -> None:
        """A frame that never arrives (only a gap read can fill it)."""
        if self.wire:
            self.wire.pop(index % len(self.wire))

    def disconnect(self) -> None:
        self.attached = False
        self.recovering = False
        self.wire.clear()

    def reattach(self) -> None:
        """``initialize{resumeSessionId}``: pushes flow again; the recovery read follows."""
        if not self.attached:
            self.attached = True
            self.recovering = True

    # --- the client -----------------------------------------------------------------------

    def _snapshot(self, cursor: int) -> ReadSnapshot:
        result = self.sequence.read(cursor)
        return ReadSnapshot(
            chunks=result.chunks,
            next_seq=result.next_seq,
            exited=result.exited,
            exit_code=result.exit_code,
            closed=result.closed,
            sandbox_denied=result.sandbox_denied,
        )

    def _held_gap(self, cursor: int) -> bool:
        """The known false GapLost: the exit right after the cursor was not received,
        and outputs after it are held in the reorder buffer but already evicted."""
        held_evicted = {s for s in self.evicted_seqs() if s > cursor} & set(self.buffer._pending)
        return bool(held_evicted) and self.exit_seq is None and any(
            isinstance(e, Exited) and e.seq == cursor + 1 for e in self.log
        )

    def _unseen_evicted(self, cursor: int) -> set[int]:
        """Evicted outputs after ``cursor`` the client has not received. (One still in
        flight counts as unseen: the client cannot know it will arrive.)"""
        held = set(self.buffer._pending)
        return {s for s in self.evicted_seqs() if s > cursor} - held

    def _push(self, events: list[SeqEvent]) -> None:
        for event in events:
            if self.failed is not None:
                return
            try:
                published = self.buffer.push(event)
            except ReorderOverflow as exc:
                if not isinstance(event, Closed):
                    size = len(event.data) if isinstance(event, Output) else 0
                    assert (
                        self.buffer.pending_count + 1 > self.buffer._max_pending_events
                        or self.buffer.pending_bytes + size > self.buffer._max_pending_bytes
                    ), f"overflow within bounds: {exc}"
                self.failed = f"overflow: {exc}"
                return
            self._publish(published)

    def _publish(self, events: list[SeqEvent]) -> None:
        for event in events:
            self.published.append(event)
            if isinstance(event, Exited):
                self.exit_seq = event.seq
            if event.seq <= self.queued_seq:
                continue
            if self.lagging or event.seq != self.queued_seq + 1 or not self.room:
                self.lagging = True
            else:
                self.queue.append(event)
                self.queued_seq = event.seq

    def catch_up(self) -> None:
        """A gap read, or the recovery read: ``process/read{afterSeq: lastPublishedSeq}``."""
        if not self.attached or self.failed is not None or self.buffer.closed:
            return
        cursor = self.buffer.last_published_seq
        try:
            events = events_after(
                cursor, self._snapshot(cursor), self.exit_seq, self.buffer.held()
            )
        except GapLost as exc:
            unseen = self._unseen_evicted(cursor)
            if not unseen and not self.strict_gaps and self._held_gap(cursor):
                self.failed = f"gap lost (known bug: held outputs count as missing): {exc}"
                self.false_gap = True
                return
            assert unseen, f"GapLost at cursor {cursor}, but every evicted output was seen: {exc}"
            self.failed = f"gap lost: {exc}"
            return
        self._push(events)
        self.recovering = False

    def gap_read(self) -> None:
        if self.buffer.first_missing_seq() is not None:
            self.catch_up()

    # --- the consumer -------------------------------------------------------------------

    def take(self) -> None:
        if self.queue:
            self.consumed.append(self.queue.pop(0))
            self.room = True

    def fill(self) -> None:
        """The consumer's queue is full: the next event published makes it lag."""
        self.room = False

    def consumer_catch_up(self) -> None:
        """The consumer's own read from ``queued_seq`` once its queue is empty."""
        if not (self.lagging and not self.queue and self.attached):
            return
        if self.failed is not None or self.consumer_failed is not None:
            return
        cursor = self.queued_seq
        try:
            events = events_after(cursor, self._snapshot(cursor), self.exit_seq)
        except GapLost as exc:
            evicted = {s for s in self.evicted_seqs() if s > cursor}
            assert evicted, f"consumer GapLost at {cursor} with nothing evicted: {exc}"
            if self.buffer.closed:
                self.consumer_failed = str(exc)  # finished: only events() fails
            else:
                self.failed = f"consumer gap lost: {exc}"
            return
        for event in events:
            if event.seq == self.queued_seq + 1:
                self.queue.append(event)
                self.queued_seq = event.seq
        if self.queued_seq >= self.buffer.last_published_seq:
            self.lagging = False

    # --- invariants -----------------------------------------------------------------------

    def check(self) -> None:
        """Incremental (published and consumed only grow), so a step costs O(1)."""
        self.steps += 1
        n, m = len(self.published), len(self.consumed)
        assert n <= len(self.log), "published more events than the daemon assigned"
        for i in range(self._checked_published, n):
            assert self.published[i] == self.log[i], (
                f"published {self.published[i]!r} as the event at seq {i + 1}, "
                f"the daemon's is {self.log[i]!r}"
            )
        self._checked_published = n
        for i in range(self._checked_consumed, m):
            assert self.consumed[i] == self.log[i], (
                f"the consumer got {self.consumed[i]!r} at seq {i + 1}, "
                f"the daemon's is {self.log[i]!r}"
            )
        self._checked_consumed = m
        assert self.buffer.last_published_seq == n
        assert self.buffer.closed == (n > 0 and isinstance(self.published[-1], Closed))
        assert self.queued_seq == m + len(self.queue)
        assert not self.queue or self.queue[0].seq == m + 1

    def finish(self) -> None:
        """Let the process end and the network heal; then everything must arrive."""
        if not self.sequence.exited:
            self.exit(3)
        for stream in STREAMS:
            if stream in self.sequence._open_streams:
                self._emit(self.sequence.record_eof(stream))
        assert self.sequence.closed
        self.reattach()
        self.catch_up()
        self.check()
        while self.wire:
            self.deliver(0)
            self.check()
        self.gap_read()
        self.check()
        for _ in range(2 * len(self.log) + 4):
            self.take()
            self.room = True
            self.consumer_catch_up()
            self.check()
        if self.failed is None:
            assert self.published == self.log, "a live process did not publish everything"
            if self.consumer_failed is None:
                assert self.consumed == self.log, "the consumer did not get everything"
        else:
            # A failure stops publication, and only evictions may cause it.
            assert self.evicted_seqs() or "overflow" in self.failed, self.failed


# --- a rule-based state machine (shrinks to a minimal interleaving) -----------------------


class PipelineMachine(RuleBasedStateMachine):
    pipeline: Pipeline

    @initialize(
        retain_bytes=st.integers(1, 48),
        retain_chunks=st.integers(1, 8),
        max_pending_events=st.sampled_from([3, 8, 256]),
    )
    def setup(self, retain_bytes: int, retain_chunks: int, max_pending_events: int) -> None:
        self.pipeline = Pipeline(retain_bytes, retain_chunks, max_pending_events)

    @rule(stream=st.integers(0, 1), size=st.integers(1, 8))
    def output(self, stream: int, size: int) -> None:
        self.pipeline.output(stream, size)

    @rule(stream=st.integers(0, 1))
    def eof(self, stream: int) -> None:
        self.pipeline.eof(stream)

    @rule(code=st.integers(0, 255))
    def exit(self, code: int) -> None:
        self.pipeline.exit(code)

    @rule(index=st.integers(0, 16))
    def deliver(self, index: int) -> None:
        self.pipeline.deliver(index)

    @rule(index=st.integers(0, 16))
    def deliver_again(self, index: int) -> None:
        self.pipeline.deliver(index)

    @rule(index=st.integers(0, 16))
    def duplicate(self, index: int) -> None:
        self.pipeline.duplicate(index)

    @rule(index=st.integers(0, 16))
    def lose(self, index: int) -> None:
        self.pipeline.lose(index)

    @rule()
    def disconnect(self) -> None:
        self.pipeline.disconnect()

    @rule()
    def reattach(self) -> None:
        self.pipeline.reattach()

    @precondition(lambda self: self.pipeline.recovering)
    @rule()
    def recovery_read(self) -> None:
        self.pipeline.catch_up()

    @rule()
    def gap_read(self) -> None:
        self.pipeline.gap_read()

    @rule()
    def take(self) -> None:
        self.pipeline.take()

    @rule()
    def fill(self) -> None:
        self.pipeline.fill()

    @rule()
    def consumer_catch_up(self) -> None:
        self.pipeline.consumer_catch_up()

    @invariant()
    def consistent(self) -> None:
        if hasattr(self, "pipeline"):
            self.pipeline.check()

    def teardown(self) -> None:
        if hasattr(self, "pipeline"):
            self.pipeline.finish()


TestPipelineMachine = PipelineMachine.TestCase
TestPipelineMachine.settings = settings(
    settings.default, stateful_step_count=200 if SOAK else 50
)


# --- a seeded random walk (cheap: the soak profile runs millions of steps) -------------


def random_walk(seed: int, steps: int) -> Pipeline:
    rng = random.Random(seed)
    tight = rng.random() < 0.5  # half the walks evict, half retain everything
    pipeline = Pipeline(
        retain_bytes=rng.randint(1, 64) if tight else 1 << 20,
        retain_chunks=rng.randint(1, 10) if tight else 1 << 20,
        max_pending_events=rng.choice([3, 8, 256, 256]),
    )
    # Each walk has its own mix, so some are mostly output, some mostly faults.
    weights = [rng.randint(0, 10) for _ in range(14)]
    actions = [
        lambda: pipeline.output(rng.randint(0, 1), rng.randint(1, 8)),
        lambda: pipeline.eof(rng.randint(0, 1)) if rng.random() < 0.1 else None,
        lambda: pipeline.exit(rng.randint(0, 255)) if rng.random() < 0.1 else None,
        lambda: pipeline.deliver(rng.randrange(4)),  # mostly in order
        lambda: pipeline.deliver(rng.randrange(64)),
        lambda: pipeline.duplicate(rng.randrange(64)),
        lambda: pipeline.lose(rng.randrange(64)) if rng.random() < 0.2 else None,
        lambda: pipeline.disconnect() if rng.random() < 0.1 else None,
        pipeline.reattach,
        pipeline.catch_up,
        pipeline.gap_read,
        pipeline.take,
        lambda: pipeline.fill() if rng.random() < 0.3 else None,
        pipeline.consumer_catch_up,
    ]
    weights[0] += 5  # keep the process talking
    for action in rng.choices(actions, weights=weights, k=steps):
        action()
        pipeline.check()
        if pipeline.failed is not None and rng.random() < 0.5:
            break
    pipeline.finish()
    return pipeline


@given(seed=st.integers(0, 2**64 - 1))
def test_random_walk(seed: int) -> None:
    random_walk(seed, WALK_STEPS)


def test_random_walk_reaches_every_outcome() -> None:
    """The walk is not vacuous: over a few seeds it completes, loses gaps, lags."""
    outcomes = set()
    for seed in range(300):
        pipeline = random_walk(seed, 300)
        outcomes.add("gap lost" if pipeline.failed and "gap" in pipeline.failed else None)
        outcomes.add("overflow" if pipeline.failed and "overflow" in pipeline.failed else None)
        outcomes.add("complete" if pipeline.failed is None else None)
        outcomes.add("consumer failed" if pipeline.consumer_failed else None)
        outcomes.add("late output" if _output_after_exit(pipeline.log) else None)
    assert {"gap lost", "overflow", "complete", "consumer failed", "late output"} <= outcomes


def test_recovery_read_counts_held_outputs_as_missing() -> None:
    """Minimal: exit (seq 1) missed; output seq 2 arrives and is held; the daemon has
    evicted seq 2 (retention 2 bytes, seqs 3 and 4 kept). The client has everything it
    needs (the exit is state, seq 2 is held), yet the read fails the process."""
    pipeline = Pipeline(retain_bytes=2, retain_chunks=2, strict_gaps=True)
    pipeline.exit(0)  # seq 1
    pipeline.lose(0)  # never arrives: pushed on a link that died, or while detached
    for _ in range(3):
        pipeline.output(0, 1)  # seqs 2, 3, 4: seq 2 is evicted
    pipeline.deliver(0)  # seq 2 arrives and is held behind the missing seq 1
    pipeline.gap_read()
    pipeline.finish()
    assert pipeline.failed is None
    assert pipeline.published == pipeline.log


def _output_after_exit(log: list[SeqEvent]) -> bool:
    exit_seq = next((e.seq for e in log if isinstance(e, Exited)), None)
    return exit_seq is not None and any(
        isinstance(e, Output) and e.seq > exit_seq for e in log
    )
