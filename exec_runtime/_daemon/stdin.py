"""A process's stdin: write-id dedupe, a bounded queue, and one task that drains it."""

from __future__ import annotations

from collections import deque
from typing import Final

import trio

from protocol_schema import WriteStatus

from .._core.write_ids import WriteIdMemory
from .budget import Account

MAX_PENDING_BYTES: Final = 1 << 20
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
        if chunk:
            self._queue.append(chunk)
            self._pending_bytes += len(chunk)
            self._account.charge(len(chunk))
        if close:
            self._queue.append(_CLOSE)
            self._closing = True
        self._queued.set()
        return "accepted"

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
        last_byte = b"\n"  # nothing written yet: at the start of a line
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
                        at_line_start = last_byte in (b"\n", b"\r", self._eof_bytes)
                        times = 1 if at_line_start else 2
                        await stream.send_all(self._eof_bytes * times)
                    return
                assert isinstance(item, bytes)
                await stream.send_all(item)
                last_byte = item[-1:]
                self._pending_bytes -= len(item)
                self._account.release(len(item))
                self._signal_drained()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the child closed its end; later writes answer stdinClosed
        finally:
            self.mark_closed()
            with trio.CancelScope(shield=True):
                await stream.aclose()
