"""A process's stdin: write-id dedupe, a bounded queue, and one task that drains it."""

from __future__ import annotations

import os
from collections import deque
from typing import Final

import trio

from protocol_schema import WriteStatus

from .._core.write_ids import WriteIdMemory
from .budget import Account

MAX_PENDING_BYTES: Final = 1 << 20
INLINE_WRITE_BYTES: Final = 4096
"""A write this small to an idle stdin (typing, a short answer) is written in the
request's handler, before the reply: the echo of a typed key comes back a task hop
sooner (~15-20% of a PTY echo, docs/performance.md). Bigger writes go through the
writer task: written inline, 20 MB of input went 6% slower."""
_CLOSE: Final = object()


class StdinWriter:
    """Accepts writes from request handlers; :meth:`run` flushes them in order.

    Recording the write id and queueing the bytes happen in one synchronous step, so
    a handler cancelled while waiting for queue space has done nothing, and one that
    got past the wait has done everything: a retry can never double-write.
    """

    def __init__(
        self,
        stream: trio.abc.SendStream | None,
        *,
        eof_bytes: bytes | None,
        account: Account | None = None,
    ) -> None:
        self._account = account or Account(None)
        """Queued bytes stay charged to the daemon's buffer budget until written: an
        empty queue takes one write of any size, and without this a client could park
        one big write per process outside every budget."""
        self._stream = stream
        self._eof_bytes = eof_bytes  # a PTY has no half-close: ^D ends input instead
        self._queue: deque[bytes | object] = deque()
        self._pending_bytes = 0
        self._ids = WriteIdMemory()
        self._closing = stream is None
        self._queued = trio.Event()
        self._drained = trio.Event()
        self._sending = False  # run() is inside a send_all
        self._last_byte = b"\n"  # nothing written yet: at the start of a line

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted and not yet written to the child."""
        return self._pending_bytes

    async def write(self, write_id: str, chunk: bytes, close: bool) -> WriteStatus:
        while self._pending_bytes > 0 and self._pending_bytes + len(chunk) > MAX_PENDING_BYTES:
            if self._closing:
                break
            await self._drained.wait()
        if self._closing:
            # A retried write whose id we accepted before the close still succeeds.
            return "accepted" if write_id in self._ids else "stdinClosed"
        # --- one atomic step: no await below ---
        if not self._ids.remember(write_id):
            return "accepted"
        if 0 < len(chunk) <= INLINE_WRITE_BYTES and not self._queue and not self._sending:
            chunk = self._write_now(chunk)
        if chunk:
            self._queue.append(chunk)
            self._pending_bytes += len(chunk)
            self._account.charge(len(chunk))
        if close:
            self._queue.append(_CLOSE)
            self._closing = True
        self._queued.set()
        return "accepted"

    def _write_now(self, chunk: bytes) -> bytes:
        """With nothing queued nor being written, write at once without blocking: the
        child has the bytes before the reply goes out, not a task hop after it (a typed
        key's echo comes back that much sooner, docs/performance.md). Returns what did
        not fit, for :meth:`run` to write; an error is left for :meth:`run` to meet."""
        fileno = getattr(self._stream, "fileno", None)
        if fileno is None:
            return chunk
        try:
            written = os.write(fileno(), chunk)
        except OSError:  # full (EAGAIN), or the child's end is gone: run() finds out
            return chunk
        if written:
            self._last_byte = chunk[written - 1 : written]
        return chunk[written:]

    def mark_closed(self) -> None:
        self._closing = True
        self._queue.clear()
        self._pending_bytes = 0
        self._account.close()
        self._queued.set()
        self._signal_drained()

    def _signal_drained(self) -> None:
        drained, self._drained = self._drained, trio.Event()
        drained.set()

    async def run(self) -> None:
        """Flush queued writes until stdin closes. Owns the stream and closes it."""
        stream = self._stream
        if stream is None:
            return
        try:
            while True:
                while not self._queue:
                    if self._closing:
                        return
                    self._queued = trio.Event()
                    await self._queued.wait()
                item = self._queue.popleft()
                if item is _CLOSE:
                    if self._eof_bytes is not None:
                        # A terminal's ^D ends input only at the start of a line; in the
                        # middle of one it just hands the line over, so a second ends it.
                        at_line_start = self._last_byte in (b"\n", b"\r", self._eof_bytes)
                        times = 1 if at_line_start else 2
                        await stream.send_all(self._eof_bytes * times)
                    return
                assert isinstance(item, bytes)
                self._sending = True
                await stream.send_all(item)
                self._sending = False
                self._last_byte = item[-1:]
                self._pending_bytes -= len(item)
                self._account.release(len(item))
                self._signal_drained()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the child closed its end; later writes answer stdinClosed
        finally:
            self.mark_closed()
            with trio.CancelScope(shield=True):
                await stream.aclose()
