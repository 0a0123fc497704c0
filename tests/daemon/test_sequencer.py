"""The per-process sequencer (``exec_runtime/_daemon/sequencer.py``) on its own: what the
child task observed goes in through a memory channel, numbered events come out through
``publish``. No process, no connection: the unit between the pump and the session."""

from __future__ import annotations

import trio
import trio.testing

from exec_runtime._core.events import Closed, Exited, Output, SeqEvent
from exec_runtime._core.sandbox_denial import DenialScanner
from exec_runtime._core.sequence import ProcessSequence, RetentionLimits
from exec_runtime._daemon.budget import ByteBudget
from exec_runtime._daemon.child import ChildExited, ChildMessage, ChunkRead, StreamEnded
from exec_runtime._daemon.sequencer import Sequencer


class Published:
    """A connection's side of ``publish``: every batch, in order; can hold the outbox."""

    def __init__(self) -> None:
        self.batches: list[list[SeqEvent]] = []
        self.open = trio.Event()
        self.open.set()
        self.arrived = trio.Event()

    async def __call__(self, events: list[SeqEvent]) -> None:
        await self.open.wait()
        self.batches.append(list(events))
        self.arrived.set()
        self.arrived = trio.Event()

    @property
    def events(self) -> list[SeqEvent]:
        return [e for batch in self.batches for e in batch]

    async def until(self, count: int) -> None:
        while len(self.events) < count:
            await self.arrived.wait()


async def run_sequencer(
    sequencer: Sequencer, batches: list[list[ChildMessage]]
) -> None:
    send, receive = trio.open_memory_channel[list[ChildMessage]](len(batches) or 1)
    async with send:
        for batch in batches:
            send.send_nowait(batch)
    await sequencer.run(receive)


async def test_one_sequence_over_output_eof_exit_and_close() -> None:
    publish = Published()
    sequencer = Sequencer(ProcessSequence(("stdout", "stderr")), publish)
    exits: list[int] = []
    sequencer.on_exit = exits.append
    with trio.fail_after(5):
        await run_sequencer(
            sequencer,
            [
                [ChunkRead("stdout", b"a"), ChunkRead("stderr", b"b")],
                [StreamEnded("stdout"), ChildExited(3)],
                [ChunkRead("stderr", b"c"), StreamEnded("stderr")],
            ],
        )
    assert publish.events == [
        Output(1, "stdout", b"a"),
        Output(2, "stderr", b"b"),
        Exited(3, 3),
        Output(4, "stderr", b"c"),  # output may follow the exit (a grandchild's)
        Closed(5),
    ]
    # One batch in, one publish out: the connection writes a step's events at once.
    assert [len(b) for b in publish.batches] == [2, 1, 2]
    assert exits == [3]
    assert sequencer.sequence.closed


async def test_a_sandbox_denial_is_decided_before_the_exit_is_published() -> None:
    publish = Published()
    sequencer = Sequencer(
        ProcessSequence(("stdout", "stderr")), publish, denial_scanner=DenialScanner()
    )
    with trio.fail_after(5):
        await run_sequencer(
            sequencer,
            [
                [ChunkRead("stderr", b"sh: 1: cannot create /x: Read-only file system\n")],
                [StreamEnded("stdout"), StreamEnded("stderr"), ChildExited(2)],
            ],
        )
    exited = [e for e in publish.events if isinstance(e, Exited)]
    assert exited == [Exited(2, 2, sandbox_denied=True)]


async def test_a_full_ack_window_pauses_recording_until_an_ack() -> None:
    """With acknowledgements on, nothing past the window is recorded (so nothing is
    evicted unseen) until the client acknowledges; then the rest follows in order."""
    publish = Published()
    flow = [True]
    sequencer = Sequencer(
        ProcessSequence(("stdout",), RetentionLimits(max_bytes=1 << 20)),
        publish,
        flow_controlled=lambda: flow[0],
        ack_window=RetentionLimits(max_bytes=8, max_chunks=100),
    )
    chunks: list[ChildMessage] = [ChunkRead("stdout", bytes([65 + i]) * 4) for i in range(4)]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                run_sequencer, sequencer, [chunks, [StreamEnded("stdout"), ChildExited(0)]]
            )
            await publish.until(2)
            await trio.testing.wait_all_tasks_blocked()
            # Two 4-byte chunks fill the 8-byte window: the third waits.
            assert [e.seq for e in publish.events] == [1, 2]
            assert sequencer.sequence.last_seq == 2
            sequencer.ack(2)
            # The rest fits now; the exit and the close take no window room.
            await publish.until(6)
    data = b"".join(e.data for e in publish.events if isinstance(e, Output))
    assert data == b"AAAABBBBCCCCDDDD"
    assert isinstance(publish.events[-1], Closed)
    assert [e.seq for e in publish.events] == list(range(1, len(publish.events) + 1))


async def test_without_acknowledgements_the_window_does_not_apply() -> None:
    publish = Published()
    sequencer = Sequencer(
        ProcessSequence(("stdout",)),
        publish,
        flow_controlled=lambda: False,
        ack_window=RetentionLimits(max_bytes=8, max_chunks=1),
    )
    with trio.fail_after(5):
        await run_sequencer(
            sequencer,
            [[ChunkRead("stdout", b"x" * 100) for _ in range(5)], [StreamEnded("stdout")]],
        )
    assert [e.seq for e in publish.events] == [1, 2, 3, 4, 5]


async def test_a_slow_connection_stops_the_sequencer_from_draining_its_channel() -> None:
    """Backpressure: while ``publish`` waits (a full outbox), the sequencer takes no
    more from the channel, so the pump's sends block and the child's pipe fills."""
    publish = Published()
    publish.open = trio.Event()  # the outbox is full
    sequencer = Sequencer(ProcessSequence(("stdout",)), publish)
    send, receive = trio.open_memory_channel[list[ChildMessage]](0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sequencer.run, receive)
            await send.send([ChunkRead("stdout", b"one")])
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0) as blocked:  # an unbuffered channel: no taker
                await send.send([ChunkRead("stdout", b"two")])
            assert blocked.cancelled_caught
            assert publish.events == []
            publish.open.set()
            await send.send([ChunkRead("stdout", b"two")])
            await send.aclose()
    assert [e.data for e in publish.events if isinstance(e, Output)] == [b"one", b"two"]


async def test_retention_is_charged_to_the_output_budget_and_released_on_forget() -> None:
    budget = ByteBudget(1 << 20, "output")
    publish = Published()
    sequencer = Sequencer(ProcessSequence(("stdout",)), publish, output_budget=budget)
    with trio.fail_after(5):
        await run_sequencer(sequencer, [[ChunkRead("stdout", b"z" * 1000)]])
    assert sequencer.retained.held == sequencer.sequence.retention.cost > 0
    assert budget.used == sequencer.retained.held
    sequencer.release_all()
    assert budget.used == 0


async def test_a_long_poll_wakes_on_new_output_and_times_out_otherwise() -> None:
    publish = Published()
    sequencer = Sequencer(ProcessSequence(("stdout",)), publish)
    checks: list[int] = []
    with trio.fail_after(5):
        # Nothing to read: returns at the deadline, having checked after each wake-up.
        await sequencer.wait_readable(0, trio.current_time() + 0.05, lambda: checks.append(1))
        assert checks
        send, receive = trio.open_memory_channel[list[ChildMessage]](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sequencer.run, receive)
            nursery.start_soon(send.send, [ChunkRead("stdout", b"now")])
            await sequencer.wait_readable(0, trio.current_time() + 60, lambda: None)
            assert sequencer.sequence.read_ready(0)
            await send.aclose()
