"""One process's event sequence: seq assignment, retention, and read rules (PROTOCOL §4-§6).

Pure and synchronous. The daemon's sequencer task feeds it what the process task
observed (a chunk, a stream EOF, the exit) and publishes the events it returns.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable
from typing import Final

import attrs

from .events import Closed, Exited, Output, SeqEvent, StreamName

DEFAULT_RETAIN_BYTES = 1 << 20
DEFAULT_RETAIN_CHUNKS = 50_000
CHUNK_COST: Final = 24
"""What one retained chunk holds beyond its payload: its seq and offset (8 bytes each
in an array) and its stream code, with the arrays' slack."""
SEGMENT_BYTES: Final = 64 * 1024
"""Small chunks are copied into shared payload segments of up to this size."""
OWN_SEGMENT_BYTES: Final = 4096
"""A chunk this big or bigger is kept as its own segment, as is (its ``bytes``)."""
_STREAMS: Final[tuple[StreamName, ...]] = ("stdout", "stderr", "pty")
_STREAM_CODES: Final = {name: code for code, name in enumerate(_STREAMS)}


class SequenceError(Exception):
    """The caller broke the sequence's contract (a bug in the I/O shell, not bad input)."""


@attrs.frozen
class RetentionLimits:
    max_bytes: int = DEFAULT_RETAIN_BYTES
    max_chunks: int = DEFAULT_RETAIN_CHUNKS


@attrs.frozen
class ReadResult:
    chunks: list[Output]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    sandbox_denied: bool
    earliest_retained_seq: int


class Retention:
    """A FIFO of output chunks bounded by bytes and by count; the oldest whole chunks go first.

    Stored flat so a chunk costs little beyond its payload (``CHUNK_COST``): the seqs
    and the running byte offsets in two arrays, the streams in a bytearray (an object
    per chunk cost ~240 bytes: at the 50,000-chunk cap, 12 MB for 100 KB of 2-byte
    writes). Reads bisect the seqs; "how much is held after seq N" is a bisect too,
    since the offsets run on: the sequencer asks it for every chunk it records.
    ``Output`` objects are made when read.

    The payloads sit in segments, each holding whole chunks: a chunk of
    ``OWN_SEGMENT_BYTES`` or more is its own segment, kept as the ``bytes`` it came in
    (never copied); smaller ones are copied into a shared segment of up to
    ``SEGMENT_BYTES``. (One flat buffer, as before, was copied whole every few appends
    as it grew: at a 4 MiB window, 88 µs per 256 KiB chunk, a tenth of the daemon's
    time per streamed MB.) Eviction drops whole segments, and cuts the front of a
    shared one, so what is held stays the retained payload.
    """

    def __init__(self, limits: RetentionLimits) -> None:
        self.limits = limits
        self._seqs = array("q")
        self._offsets = array("q")
        """``_offsets[i]``: the bytes appended before chunk ``i`` (ever, evicted too)."""
        self._streams = bytearray()
        self._segments: list[bytes | bytearray] = []
        self._segment_starts = array("q")
        """``_segment_starts[j]``: the offset (as in ``_offsets``) of the first byte
        ``_segments[j]`` holds."""
        self._segment_head = 0
        self._appended = 0
        self._head = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._seqs) - self._head

    @property
    def cost(self) -> int:
        """What the retained chunks hold in memory: payload plus ``CHUNK_COST`` each."""
        return self.bytes + CHUNK_COST * len(self)

    @property
    def payload_held(self) -> int:
        """The payload bytes the segments hold: the retained chunks' and nothing else."""
        return sum(len(segment) for segment in self._segments[self._segment_head :])

    def _end(self, index: int) -> int:
        return self._offsets[index + 1] if index + 1 < len(self._offsets) else self._appended

    def append(self, chunk: Output, keep_after: int | None = None) -> None:
        """Append, then evict the oldest chunks past the limits, except any after
        ``keep_after`` (output an acknowledging client has not acknowledged yet)."""
        data = chunk.data
        self._seqs.append(chunk.seq)
        self._offsets.append(self._appended)
        self._streams.append(_STREAM_CODES[chunk.stream])
        segments = self._segments
        last = segments[-1] if len(segments) > self._segment_head else None
        if len(data) >= OWN_SEGMENT_BYTES:
            segments.append(bytes(data))  # no copy of a bytes object
            self._segment_starts.append(self._appended)
        elif isinstance(last, bytearray) and len(last) + len(data) <= SEGMENT_BYTES:
            last += data
        else:
            segments.append(bytearray(data))
            self._segment_starts.append(self._appended)
        self._appended += len(data)
        self.bytes += len(data)
        self.trim(keep_after)

    def trim(self, keep_after: int | None = None) -> None:
        """Evict the oldest chunks past the limits, except any after ``keep_after``.

        ``append`` does it; an acknowledgement does it too, since what an acknowledging
        client holds back is only held until it acknowledges (a closed process gets no
        more appends, and would otherwise keep its unacknowledged tail for its TTL).
        """
        head = self._head
        while len(self._seqs) > head and (
            self.bytes > self.limits.max_bytes or len(self._seqs) - head > self.limits.max_chunks
        ):
            if keep_after is not None and self._seqs[head] > keep_after:
                break
            self.bytes -= self._end(head) - self._offsets[head]
            head += 1
        if head == self._head:
            return
        self._head = head
        self._drop_payloads_before(
            self._offsets[head] if head < len(self._seqs) else self._appended
        )
        if head >= 32 and head * 2 > len(self._seqs):
            del self._seqs[:head]
            del self._offsets[:head]
            del self._streams[:head]
            self._head = 0

    def _drop_payloads_before(self, start: int) -> None:
        """Release every payload byte before offset ``start`` now (daemon RSS)."""
        segments, starts = self._segments, self._segment_starts
        first = self._segment_head
        while first < len(segments):
            end = starts[first + 1] if first + 1 < len(segments) else self._appended
            if end > start:
                break
            segments[first] = b""
            first += 1
        if first < len(segments) and starts[first] < start:
            # A shared segment's front: chunks end inside it, never a chunk of its own.
            segment = segments[first]
            assert isinstance(segment, bytearray)
            del segment[: start - starts[first]]
            starts[first] = start
        self._segment_head = first
        if first >= 32 and first * 2 > len(segments):
            del segments[:first]
            del starts[:first]
            self._segment_head = 0

    def clear(self) -> None:
        """Forget every chunk (the process is forgotten)."""
        self._head = len(self._seqs)
        self.bytes = 0
        self._segments = []
        self._segment_starts = array("q")
        self._segment_head = 0

    def first_seq(self) -> int | None:
        return self._seqs[self._head] if len(self) else None

    def _index_after(self, after_seq: int) -> int:
        """The index of the first retained chunk with a seq after ``after_seq``."""
        return bisect_right(self._seqs, after_seq, lo=self._head)

    def _chunk(self, index: int) -> Output:
        start, end = self._offsets[index], self._end(index)
        found = bisect_right(self._segment_starts, start, lo=self._segment_head) - 1
        segment = self._segments[found]
        if isinstance(segment, bytes):  # the chunk's own: the bytes it came in
            data = segment
        else:
            offset = start - self._segment_starts[found]
            data = bytes(segment[offset : offset + end - start])
        return Output(self._seqs[index], _STREAMS[self._streams[index]], data)

    def after(self, after_seq: int) -> Iterable[Output]:
        start = self._index_after(after_seq)
        return (self._chunk(i) for i in range(start, len(self._seqs)))

    def fits_unacked(self, acked_seq: int, size: int, window: RetentionLimits) -> bool:
        """Whether a chunk of ``size`` bytes keeps the output held after ``acked_seq``
        (retained, not acknowledged yet) within ``window``. With nothing held, any
        chunk fits."""
        start = self._index_after(acked_seq)
        held_chunks = len(self._seqs) - start
        if not held_chunks:
            return True
        held_bytes = self._appended - self._offsets[start]
        return held_bytes + size <= window.max_bytes and held_chunks + 1 <= window.max_chunks

    def has_after(self, after_seq: int) -> bool:
        return len(self) > 0 and self._seqs[-1] > after_seq


class ProcessSequence:
    """The single source of truth for one process's seqs.

    ``streams`` names the output streams that must reach EOF before ``closed``:
    ``("stdout", "stderr")`` for pipes, ``("pty",)`` for a terminal.
    """

    def __init__(
        self, streams: Iterable[StreamName], limits: RetentionLimits | None = None
    ) -> None:
        self._open_streams: set[StreamName] = set(streams)
        self._all_streams = frozenset(self._open_streams)
        self.retention = Retention(limits or RetentionLimits())
        self.next_seq = 1
        self.exit_code: int | None = None
        self.sandbox_denied = False
        self.closed_seq: int | None = None

    @property
    def exited(self) -> bool:
        return self.exit_code is not None

    @property
    def closed(self) -> bool:
        return self.closed_seq is not None

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def _take_seq(self) -> int:
        if self.closed:
            raise SequenceError("nothing may follow closed")
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def record_output(
        self, stream: StreamName, data: bytes, keep_after: int | None = None
    ) -> Output:
        """``keep_after``: retention evicts nothing after this seq (see Retention.append)."""
        if stream not in self._open_streams:
            raise SequenceError(f"stream {stream} is not open")
        if not data:
            raise SequenceError("an output chunk is never empty")
        event = Output(self._take_seq(), stream, data)
        self.retention.append(event, keep_after)
        return event

    def record_eof(self, stream: StreamName) -> list[SeqEvent]:
        if stream not in self._all_streams:
            raise SequenceError(f"unknown stream {stream}")
        if stream not in self._open_streams:
            # Each stream ends once; this also keeps anything from following closed.
            raise SequenceError(f"stream {stream} already ended")
        self._open_streams.discard(stream)
        return self._maybe_close()

    def record_exit(self, exit_code: int, sandbox_denied: bool = False) -> list[SeqEvent]:
        if self.exited:
            raise SequenceError("the exit is recorded once")
        self.exit_code = exit_code
        self.sandbox_denied = sandbox_denied
        events: list[SeqEvent] = [Exited(self._take_seq(), exit_code, sandbox_denied)]
        return events + self._maybe_close()

    def finish(self, exit_code: int) -> list[SeqEvent]:
        """End the sequence for a process whose task failed (its group was killed): the
        exit, unless one is recorded, and every open stream's end, so ``closed``
        follows and a client completes instead of waiting for events that never come."""
        events = [] if self.exited else self.record_exit(exit_code)
        for stream in sorted(self._open_streams):
            events += self.record_eof(stream)
        return events

    def _maybe_close(self) -> list[SeqEvent]:
        if self.closed or self._open_streams or not self.exited:
            return []
        seq = self._take_seq()
        self.closed_seq = seq
        return [Closed(seq)]

    @property
    def earliest_retained_seq(self) -> int:
        first = self.retention.first_seq()
        return self.next_seq if first is None else first

    def read_ready(self, after_seq: int) -> bool:
        """Whether a long poll from ``after_seq`` returns now (PROTOCOL §4 process/read)."""
        if self.retention.has_after(after_seq) or self.closed:
            return True
        return self.exited and after_seq < self.last_seq

    def read(self, after_seq: int = 0, max_bytes: int | None = None) -> ReadResult:
        chunks: list[Output] = []
        if max_bytes is None:
            chunks = list(self.retention.after(after_seq))
            next_seq = self.next_seq
        else:
            total = 0
            for chunk in self.retention.after(after_seq):
                if chunks and total + len(chunk.data) > max_bytes:
                    break
                chunks.append(chunk)
                total += len(chunk.data)
            next_seq = chunks[-1].seq + 1 if chunks else self.next_seq
        return ReadResult(
            chunks=chunks,
            next_seq=next_seq,
            exited=self.exited,
            exit_code=self.exit_code,
            closed=self.closed,
            sandbox_denied=self.sandbox_denied,
            earliest_retained_seq=self.earliest_retained_seq,
        )
