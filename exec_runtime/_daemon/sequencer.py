"""The per-process sequencer task: the only place a process's seqs are decided.

It consumes what the child task observed, records it in the pure
:class:`ProcessSequence`, wakes long-poll readers, then publishes the events of one
step together to the attached connection (if any). Publishing waits for the
connection's bounded outbox, so a slow client slows this task, which stops draining
the channel, which stops the pump, which lets the child's pipe fill: backpressure all
the way to the child.

When the session's client acknowledges what it received (``process/ack``), retention
never evicts what it has not acknowledged, and the sequencer keeps that within the
ack window (``ServerConfig.ack_window_bytes``): once the window is full it waits for
acknowledgements (or the session to change) instead of recording more. A connection
that drops then loses nothing: all it has not acknowledged is still retained when it
resumes and reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from .._core.events import SeqEvent
from .._core.sandbox_denial import DenialScanner
from .._core.sequence import ProcessSequence, RetentionLimits
from .budget import Account, ByteBudget
from .child import ChildExited, ChildMessage, ChunkRead, StreamEnded

Publish = Callable[[list[SeqEvent]], Awaitable[None]]


class Sequencer:
    def __init__(
        self,
        sequence: ProcessSequence,
        publish: Publish,
        flow_controlled: Callable[[], bool] = lambda: False,
        ack_window: RetentionLimits | None = None,
        denial_scanner: DenialScanner | None = None,
        in_flight: Account | None = None,
        output_budget: ByteBudget | None = None,
    ) -> None:
        self.sequence = sequence
        self._in_flight = in_flight or Account(None)
        """The pump's charge for what it read: released once it is published."""
        self.retained = Account(output_budget)
        """Retention's ``cost``, charged to the daemon's output budget."""
        self._denial_scanner = denial_scanner
        """For a sandboxed process: sees every chunk, so ``sandboxDenied`` is decided
        when the exit is recorded, before it is published (PROTOCOL §11)."""
        self._publish = publish
        self._flow_controlled = flow_controlled
        self._ack_window = ack_window or RetentionLimits()
        self.acked_seq = 0
        """Everything up to here reached the client (``process/ack``, or a read's
        ``afterSeq``)."""
        self._changed = trio.Event()
        self.on_exit: Callable[[int], None] | None = None
        """Told the exit code as the exit is recorded (the daemon's metrics)."""

    def ack(self, seq: int) -> None:
        if seq > self.acked_seq:
            self.acked_seq = seq
            if self._flow_controlled():
                self.sequence.retention.trim(keep_after=seq)
                self._account_retention()
            self.wake_readers()

    def _account_retention(self) -> None:
        change = self.sequence.retention.cost - self.retained.held
        if change > 0:
            self.retained.charge(change)
        else:
            self.retained.release(-change)

    def release_all(self) -> None:
        """The process is forgotten: give back everything it held."""
        self.retained.close()
        self._in_flight.close()

    def wake_readers(self) -> None:
        """Wake every waiting long poll so it re-checks (new state or a session change)."""
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def run(self, receive: trio.MemoryReceiveChannel[list[ChildMessage]]) -> None:
        async with receive:
            async for batch in receive:
                events: list[SeqEvent] = []
                recorded = 0  # bytes of the pump's that ``events`` now hold
                for message in (part for item in batch for part in self._window_sized(item)):
                    if isinstance(message, ChunkRead) and not self._fits(message):
                        # Publish what is recorded (the client acks only what it got),
                        # then wait for the window to open.
                        await self._flush(events, recorded)
                        events, recorded = [], 0
                        await self._wait_window(message)
                    events += self._record(message)
                    if isinstance(message, ChunkRead):
                        recorded += len(message.data)
                await self._flush(events, recorded)

    def _window_sized(self, message: ChildMessage) -> list[ChildMessage]:
        """A chunk bigger than the whole window, cut to fit it (only with a window
        smaller than one read, e.g. in tests)."""
        limit = self._ack_window.max_bytes
        if (
            not isinstance(message, ChunkRead)
            or limit <= 0
            or len(message.data) <= limit
            or not self._flow_controlled()
        ):
            return [message]
        data = message.data
        return [ChunkRead(message.stream, data[i : i + limit]) for i in range(0, len(data), limit)]

    async def _flush(self, events: list[SeqEvent], recorded: int = 0) -> None:
        self._account_retention()
        self.wake_readers()
        if events:
            # One step's events together: the connection writes them at once.
            await self._publish(events)
        # Published (or detached): retention holds its own copy, counted above.
        self._in_flight.release(recorded)

    def _fits(self, chunk: ChunkRead) -> bool:
        return not self._flow_controlled() or self.sequence.retention.fits_unacked(
            self.acked_seq, len(chunk.data), self._ack_window
        )

    async def _wait_window(self, chunk: ChunkRead) -> None:
        # Acks, a resume by a client that does not ack, and the session's end all
        # wake this (wake_readers); until then the child's pipe fills: backpressure.
        while not self._fits(chunk):
            await self._changed.wait()

    def _record(self, message: ChildMessage) -> list[SeqEvent]:
        if isinstance(message, ChunkRead):
            if self._denial_scanner is not None:
                self._denial_scanner.feed(message.stream, message.data)
            keep_after = self.acked_seq if self._flow_controlled() else None
            return [self.sequence.record_output(message.stream, message.data, keep_after)]
        if isinstance(message, StreamEnded):
            return self.sequence.record_eof(message.stream)
        assert isinstance(message, ChildExited)
        scanner = self._denial_scanner
        denied = scanner is not None and scanner.denied(message.exit_code)
        if self.on_exit is not None:
            self.on_exit(message.exit_code)
        return self.sequence.record_exit(message.exit_code, denied)

    async def wait_readable(
        self, after_seq: int, deadline: float, check: Callable[[], None]
    ) -> None:
        """Long poll: return when a read from ``after_seq`` is ready or at ``deadline``.

        ``check`` runs after every wake-up and may raise (e.g. the session moved).
        """
        while not self.sequence.read_ready(after_seq) and trio.current_time() < deadline:
            with trio.move_on_at(deadline):
                await self._changed.wait()
            check()
