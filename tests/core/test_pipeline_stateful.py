"""The whole event pipeline in pure core code: no I/O, no Trio, millions of interleavings.

    daemon: ProcessSequence (seqs + retention)
      → network: the current connection's frames in flight; delivered reordered or
        duplicated, never lost (a live link is reliable); a disconnect loses them all
        and detaches the session
      → client: the real ``ClientStream`` (``_core/client_stream.py``): its reorder
        buffer, bounded queue and lag; gap reads, recovery reads and a lagging
        consumer's reads all merged by its one ``catch_up``, each from its own cursor.

A read is three steps, so pushes, evictions and disconnects interleave with it: the
client sends it (with its cursor then), the daemon answers (a snapshot of the sequence
then), the client merges the answer (with its state then). The answer travels on the
connection like a push, and is a barrier: notifications may be reordered among
themselves (as ``FaultPlan.reorder_window`` does), never across a response, because
the daemon takes the snapshot and queues the response in one step, in order with its
pushes, and the client reads a connection in order. (Without that barrier a stale
answer merged after newer pushes explains too little and fails the process: the
model found it, see test_stale_answer_needs_the_response_barrier.) A disconnect loses
every frame in flight; the client re-sends its reads after it re-attaches. The model
drives ``ClientStream`` as ``ExecClient._catch_up`` (``Reader.NETWORK``) and the
consumer's ``_catch_up`` in ``_client/process.py`` (``Reader.CONSUMER``) do.

Invariants, after every step:

- the client publishes exactly a prefix of the daemon's sequence, contiguous, once;
  the consumer sees exactly a prefix too; nothing after ``closed``;
- ``GapLost`` is reported only when the answer really lacks an output the client has
  not received (evicted by retention, neither published nor held);
- ``ReorderOverflow`` only when the pending bounds are really exceeded;
- at the end (the process finishes, the network heals, every frame is delivered and
  every read answered), a process that did not fail has published the whole sequence,
  and a consumer that did not fail has seen it.

``Pipeline`` is the model; a ``RuleBasedStateMachine`` drives it (shrinkable
counterexamples), and a seeded random walk drives it much longer per example (the
soak profile, ``HYPOTHESIS_PROFILE=soak``, walks some fifty million steps in five minutes).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from exec_runtime._core.client_stream import ClientStream, Reader
from exec_runtime._core.events import Closed, Exited, Failed, Output, SeqEvent, StreamName
from exec_runtime._core.recovery import GapLost, ReadSnapshot, events_after
from exec_runtime._core.reorder import ReorderBuffer, ReorderOverflow
from exec_runtime._core.sequence import ProcessSequence, RetentionLimits

STREAMS: tuple[StreamName, ...] = ("stdout", "stderr")
QUEUE_ROOM = 1 << 30  # the consumer's queue bound, but while ``fill`` says it is full
SOAK = settings.get_current_profile_name() == "soak"
WALK_STEPS = 20_000 if SOAK else 2000


@attrs.define
class Read:
    """One ``process/read{afterSeq: cursor}`` in flight."""

    kind: str  # "network" (gap fill, recovery) or "consumer" (a lagging consumer)
    cursor: int
    answer: ReadSnapshot | None = None  # set when the daemon answered (it is in the wire)

    def __eq__(self, other: object) -> bool:
        return self is other  # each read is its own request

    def __hash__(self) -> int:
        return id(self)


class Pipeline:
    """One process, from the daemon's sequencer to the client's consumer."""

    def __init__(
        self,
        retain_bytes: int,
        retain_chunks: int,
        max_pending_events: int = 256,
        max_pending_bytes: int = 1 << 20,
    ) -> None:
        # --- daemon ---
        self.sequence = ProcessSequence(STREAMS, RetentionLimits(retain_bytes, retain_chunks))
        self.log: list[SeqEvent] = []  # every event the daemon assigned, by seq
        self.attached = True
        # --- network: frames on the current connection, not yet delivered: pushes, and
        # answers to reads (barriers) ---
        self.wire: list[SeqEvent | Read] = []
        self.reads: list[Read] = []  # sent and not merged yet
        # --- client: the real stream; its consumer iterates from the start ---
        self.stream = ClientStream(
            "p",
            max_queue_events=QUEUE_ROOM,
            reorder=ReorderBuffer(
                max_pending_events=max_pending_events, max_pending_bytes=max_pending_bytes
            ),
        )
        self.stream.consumed = self.stream.consumer_active = True
        self.buffer = self.stream.reorder
        self.published: list[SeqEvent] = []
        self.recovering = False  # re-attached; the recovery read is not sent yet
        self.failed: str | None = None  # the process failed (terminal Failed)
        # --- consumer: the stream's bounded queue fed from publication, or its own
        # catch-up reads; ``fill`` makes the queue full until the next ``take`` ---
        self.consumed: list[SeqEvent] = []
        self.consumer_failed: str | None = None
        self.steps = 0
        self._checked_published = 0
        self._checked_consumed = 0

    # --- the daemon ---------------------------------------------------------------------

    def _emit(self, events: list[SeqEvent]) -> None:
        self.log.extend(events)
        if self.attached:
            self.wire.extend(events)

    def _open_streams(self) -> list[StreamName]:
        return [s for s in STREAMS if s in self.sequence._open_streams]

    def output(self, stream_index: int, size: int) -> None:
        open_streams = self._open_streams()
        if open_streams and not self.sequence.closed:
            stream = open_streams[stream_index % len(open_streams)]
            data = bytes([len(self.log) % 251]) * size
            self._emit([self.sequence.record_output(stream, data)])

    def eof(self, stream_index: int) -> None:
        open_streams = self._open_streams()
        if open_streams:
            self._emit(self.sequence.record_eof(open_streams[stream_index % len(open_streams)]))

    def exit(self, code: int) -> None:
        if not self.sequence.exited:
            self._emit(self.sequence.record_exit(code))

    def answer(self, index: int) -> None:
        """The daemon answers a read it received: a snapshot of the sequence now, sent
        after every push so far and before every later one."""
        waiting = [r for r in self.reads if r.answer is None]
        if waiting and self.attached:
            read = waiting[index % len(waiting)]
            result = self.sequence.read(read.cursor)
            read.answer = ReadSnapshot(
                chunks=result.chunks,
                next_seq=result.next_seq,
                exited=result.exited,
                exit_code=result.exit_code,
                closed=result.closed,
                sandbox_denied=result.sandbox_denied,
            )
            self.wire.append(read)

    # --- the network --------------------------------------------------------------------

    def _head(self) -> list[SeqEvent]:
        """The pushes ahead of the first answer: only these can be delivered next."""
        head: list[SeqEvent] = []
        for item in self.wire:
            if isinstance(item, Read):
                break
            head.append(item)
        return head

    def deliver(self, index: int) -> None:
        """Deliver one of the pushes ahead of the first answer, in any order, or that
        answer once none is left."""
        head = self._head()
        if head:
            event = head[index % len(head)]
            self.wire.remove(event)
            self._push([event])
        elif self.wire:
            read = self.wire.pop(0)
            assert isinstance(read, Read)
            self._merge(read)

    def respond(self) -> None:
        """Deliver everything up to and including the first answer."""
        while self.wire:
            first = self.wire[0]
            self.deliver(0)
            if isinstance(first, Read):
                return

    def duplicate(self, index: int) -> None:
        head = self._head()
        if head:
            self._push([head[index % len(head)]])

    def disconnect(self) -> None:
        """Frames and answers in flight are lost; the reads will be re-sent."""
        self.attached = False
        self.recovering = False
        self.wire.clear()
        for read in self.reads:
            read.answer = None

    def reattach(self) -> None:
        """``initialize{resumeSessionId}``: pushes flow again; the recovery read follows."""
        if not self.attached:
            self.attached = True
            self.recovering = True

    # --- the client: network side ---------------------------------------------------------

    def _push(self, events: list[SeqEvent]) -> None:
        for event in events:
            if self.failed is not None:
                return
            try:
                published = self.stream.push_many([event])
            except ReorderOverflow as exc:
                if not isinstance(event, Closed):
                    size = len(event.data) if isinstance(event, Output) else 0
                    assert (
                        self.buffer.pending_count + 1 > self.buffer._max_pending_events
                        or self.buffer.pending_bytes + size > self.buffer._max_pending_bytes
                    ), f"overflow within bounds: {exc}"
                self.failed = f"overflow: {exc}"
                return
            self.published.extend(published)

    def gap_read(self) -> None:
        """_fill_gaps: something is held past a gap the live stream did not fill."""
        if self.attached and self.failed is None and self.buffer.first_missing_seq():
            self.reads.append(Read("network", self.stream.read_after(Reader.NETWORK)))

    def recovery_read(self) -> None:
        """After re-attaching: read from the published cursor (PROTOCOL §9 Recover)."""
        if self.recovering and self.failed is None and not self.buffer.closed:
            self.reads.append(Read("network", self.stream.read_after(Reader.NETWORK)))
        self.recovering = False

    def _merge(self, read: Read) -> None:
        """The client receives an answer and merges it."""
        self.reads.remove(read)
        assert read.answer is not None
        if read.kind == "network":
            self._merge_network(read.cursor, read.answer)
        else:
            self._merge_consumer(read.cursor, read.answer)

    def _missing_unseen(self, cursor: int, answer: ReadSnapshot, held: set[int]) -> set[int]:
        """Outputs after ``cursor`` the answer lacks and the client does not have."""
        in_answer = {c.seq for c in answer.chunks}
        return {
            e.seq
            for e in self.log[cursor : answer.next_seq - 1]
            if isinstance(e, Output) and e.seq not in in_answer and e.seq not in held
        }

    def _merge_network(self, sent_cursor: int, answer: ReadSnapshot) -> None:
        """ExecClient._catch_up."""
        if self.failed is not None or self.buffer.closed:
            return
        # Pushes may have advanced the cursor during the read: the merge takes it now.
        assert sent_cursor <= self.buffer.last_published_seq
        cursor = self.buffer.last_published_seq
        held = self.buffer.held()
        try:
            events = self.stream.catch_up(Reader.NETWORK, answer)
        except GapLost as exc:
            missing = self._missing_unseen(cursor, answer, set(held))
            assert missing, f"GapLost at cursor {cursor}, but nothing unseen is missing: {exc}"
            self.failed = f"gap lost: {exc}"
            return
        self._push(events)

    # --- the client: the consumer ---------------------------------------------------------

    def take(self) -> None:
        stream = self.stream
        if stream.queue:
            event = stream.take()
            assert event is not None and not isinstance(event, Failed)
            self.consumed.append(event)
            stream.max_queue_events = QUEUE_ROOM

    def fill(self) -> None:
        """The consumer's queue is full: the next event published makes it lag."""
        self.stream.max_queue_events = len(self.stream.queue)

    def consumer_read(self) -> None:
        """The consumer's _catch_up, sent once the lagging consumer emptied its queue."""
        stream = self.stream
        if not (stream.lagging and not stream.queue):
            return
        if self.failed is not None or self.consumer_failed is not None:
            return
        if not any(r.kind == "consumer" for r in self.reads):
            self.reads.append(Read("consumer", stream.read_after(Reader.CONSUMER)))

    def _merge_consumer(self, sent_cursor: int, answer: ReadSnapshot) -> None:
        if self.failed is not None or self.consumer_failed is not None:
            return
        stream = self.stream
        assert sent_cursor == stream.queued_seq, "the queue moved while the consumer read"
        try:
            events = stream.catch_up(Reader.CONSUMER, answer)
        except GapLost as exc:
            missing = self._missing_unseen(stream.queued_seq, answer, set())
            assert missing, f"consumer GapLost at {stream.queued_seq}, nothing missing: {exc}"
            if self.buffer.closed:
                stream.fail_consumer(str(exc))  # finished: only events() fails
                self.consumer_failed = str(exc)
            else:
                self.failed = f"consumer gap lost: {exc}"
            return
        stream.accept_caught_up(events)

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
        queue = self.stream.queue
        assert self.stream.queued_seq == m + len(queue)
        assert not queue or queue[0].seq == m + 1

    def settle(self) -> None:
        """Deliver, answer and merge everything in flight."""
        self.reattach()
        self.recovery_read()
        while self.wire or self.reads:
            while self.wire:
                self.deliver(0)
                self.check()
            while self.reads:
                self.answer(0)
                self.respond()
                self.check()

    def finish(self) -> None:
        """Let the process end and the network heal; then everything must arrive."""
        if not self.sequence.exited:
            self.exit(3)
        for stream in self._open_streams():
            self._emit(self.sequence.record_eof(stream))
        assert self.sequence.closed
        self.settle()
        self.gap_read()
        self.settle()
        for _ in range(2 * len(self.log) + 4):
            self.take()
            self.stream.max_queue_events = QUEUE_ROOM
            self.consumer_read()
            self.settle()
        if self.failed is None:
            assert self.published == self.log, "a live process did not publish everything"
            if self.consumer_failed is None:
                assert self.consumed == self.log, "the consumer did not get everything"
        else:
            # A failure stops publication, and only evictions may cause it.
            assert self.evicted() or "overflow" in self.failed, self.failed

    def evicted(self) -> set[int]:
        retained = {c.seq for c in self.sequence.retention.after(0)}
        return {e.seq for e in self.log if isinstance(e, Output) and e.seq not in retained}


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

    @rule()
    def disconnect(self) -> None:
        self.pipeline.disconnect()

    @rule()
    def reattach(self) -> None:
        self.pipeline.reattach()

    @rule()
    def recovery_read(self) -> None:
        self.pipeline.recovery_read()

    @rule()
    def gap_read(self) -> None:
        self.pipeline.gap_read()

    @rule(index=st.integers(0, 3))
    def answer(self, index: int) -> None:
        self.pipeline.answer(index)

    @rule()
    def respond(self) -> None:
        self.pipeline.respond()

    @rule()
    def take(self) -> None:
        self.pipeline.take()

    @rule()
    def fill(self) -> None:
        self.pipeline.fill()

    @rule()
    def consumer_read(self) -> None:
        self.pipeline.consumer_read()

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

    def sometimes(p: float, action: Callable[[], None]) -> Callable[[], None]:
        return lambda: action() if rng.random() < p else None

    actions: list[Callable[[], None]] = [
        lambda: pipeline.output(rng.randint(0, 1), rng.randint(1, 8)),
        sometimes(0.1, lambda: pipeline.eof(rng.randint(0, 1))),
        sometimes(0.1, lambda: pipeline.exit(rng.randint(0, 255))),
        lambda: pipeline.deliver(rng.randrange(4)),  # mostly in order
        lambda: pipeline.deliver(rng.randrange(64)),
        lambda: pipeline.duplicate(rng.randrange(64)),
        sometimes(0.1, pipeline.disconnect),
        pipeline.reattach,
        pipeline.recovery_read,
        pipeline.gap_read,
        lambda: pipeline.answer(rng.randrange(4)),
        pipeline.respond,
        pipeline.take,
        sometimes(0.3, pipeline.fill),
        pipeline.consumer_read,
    ]
    # Each walk has its own mix, so some are mostly output, some mostly faults.
    weights = [rng.randint(0, 10) for _ in actions]
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
        failed = pipeline.failed or ""
        outcomes.add("gap lost" if failed.startswith("gap lost") else None)
        outcomes.add("consumer gap lost" if failed.startswith("consumer gap") else None)
        outcomes.add("overflow" if failed.startswith("overflow") else None)
        outcomes.add("complete" if not failed else None)
        outcomes.add("consumer failed" if pipeline.consumer_failed else None)
        outcomes.add("late output" if _output_after_exit(pipeline.log) else None)
    assert {
        "gap lost",
        "consumer gap lost",
        "overflow",
        "complete",
        "consumer failed",
        "late output",
    } <= outcomes


def test_recovery_read_counts_held_outputs_as_missing() -> None:
    """Regression (found by this model): the exit (seq 1) happens while detached; after
    re-attaching, output seq 2 is pushed and held behind it, then evicted on the daemon
    (retention 2 bytes keeps seqs 3 and 4) before the recovery read is answered. The
    client has everything it needs (the exit is state, seq 2 is held), so the read must
    not fail the process. Fixed by passing the held events to events_after."""
    pipeline = Pipeline(retain_bytes=2, retain_chunks=2)
    pipeline.disconnect()
    pipeline.exit(0)  # seq 1, while detached: never pushed
    pipeline.reattach()
    pipeline.recovery_read()
    pipeline.output(0, 1)  # seq 2: pushed on the new link
    pipeline.deliver(0)  # ... and held behind the missing seq 1
    for _ in range(2):
        pipeline.output(0, 1)  # seqs 3, 4: seq 2 is evicted
    pipeline.answer(0)
    assert 2 in pipeline.buffer.held() and 2 in pipeline.evicted()
    pipeline.respond()
    assert pipeline.failed is None
    pipeline.finish()
    assert pipeline.published == pipeline.log


def test_read_answer_overlapping_pushes() -> None:
    """Pushes the answer also holds arrive before it (they were sent first): the merge
    re-bases on the advanced cursor and publishes each seq once."""
    pipeline = Pipeline(retain_bytes=1 << 20, retain_chunks=1 << 20)
    pipeline.disconnect()
    pipeline.output(0, 1)  # seq 1, while detached
    pipeline.reattach()
    pipeline.recovery_read()
    pipeline.output(0, 1)  # seq 2
    pipeline.answer(0)  # holds 1 and 2; behind the push of seq 2
    pipeline.output(0, 1)  # seq 3, behind the answer
    pipeline.deliver(0)  # seq 2: held behind seq 1
    pipeline.deliver(0)  # the answer: 1 (and 2 again)
    assert [e.seq for e in pipeline.published] == [1, 2]
    pipeline.deliver(0)  # seq 3
    assert [e.seq for e in pipeline.published] == [1, 2, 3]
    pipeline.finish()


def test_stale_answer_needs_the_response_barrier() -> None:
    """Why answers are barriers in this model. An answer taken before the exit (seq 2),
    merged after a later push (seq 3) was held, cannot explain seq 2 and fails the
    process although nothing was evicted. The daemon never lets a push overtake an
    earlier response (it takes the snapshot and queues the response in one step, in
    order with its pushes), so the client never merges a stale answer; this pins what
    would break without that order."""
    pipeline = Pipeline(retain_bytes=1 << 20, retain_chunks=1 << 20)
    pipeline.disconnect()
    pipeline.output(0, 1)  # seq 1, while detached
    result = pipeline.sequence.read(0)  # the answer, taken now
    pipeline.exit(0)  # seq 2, while detached
    pipeline.reattach()
    pipeline.output(0, 1)  # seq 3 (a grandchild), pushed
    pipeline.deliver(0)  # held behind seq 1
    stale = ReadSnapshot(
        chunks=result.chunks,
        next_seq=result.next_seq,
        exited=result.exited,
        exit_code=result.exit_code,
        closed=result.closed,
    )
    with pytest.raises(GapLost):
        events_after(0, stale, None, pipeline.buffer.held())


def _output_after_exit(log: list[SeqEvent]) -> bool:
    exit_seq = next((e.seq for e in log if isinstance(e, Exited)), None)
    return exit_seq is not None and any(
        isinstance(e, Output) and e.seq > exit_seq for e in log
    )
