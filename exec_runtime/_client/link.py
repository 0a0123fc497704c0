"""The narrow interface between :class:`ExecClient` and what it hands out.

``ProcessHandle``, its ``events()`` iterator and ``FsClient`` (and the pool's fs
router) never call the client's private methods: they hold one of these. One object
per client implements both, its ``Port`` (``client.py``, where what it reaches of the
client stays private): ``FsClient`` sees it as :class:`Calls`, a process handle as
:class:`ProcessLink`. Both are views of one shared state, the client's connection and
its streams, in the way trio's memory channels are two halves over one state object.

- :class:`Calls`: requests on the current connection, retried across a resume when
  that is safe;
- :class:`ProcessLink`: ``Calls`` plus the process requests, and what a handle
  reports back about its stream (a consumer failed, took or released output).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from .._core.recovery import ReadSnapshot
    from .process import ProcessStream

T = TypeVar("T")


class Calls(Protocol):
    """Requests on the client's current connection."""

    async def call(self, method: str, params: Any, result_type: type[T]) -> T:
        """Send ``method`` and decode its result; ``ProtocolError`` for an error reply,
        ``ClientClosedError`` / ``TransportError`` when the client cannot get one."""
        ...


class ProcessLink(Calls, Protocol):
    """What a :class:`~exec_runtime.ProcessHandle` needs from its client."""

    @property
    def closes_stdin(self) -> bool:
        """The daemon announced the ``closeStdin`` capability."""
        ...

    async def read(self, process_id: str, after_seq: int) -> ReadSnapshot:
        """``process/read{afterSeq}`` without waiting, as a snapshot."""
        ...

    async def write(self, process_id: str, data: bytes, write_id: str, close: bool) -> str:
        """``process/write``; the reply's status (``accepted``, ``stdinClosed``, ...)."""
        ...

    async def signal(self, process_id: str, signal: str) -> None:
        """``process/signal`` with a wire signal name."""
        ...

    async def terminate(self, process_id: str) -> bool:
        """``process/terminate``; whether the process was still running."""
        ...

    async def resize(self, process_id: str, rows: int, cols: int) -> None:
        """``process/resize``."""
        ...

    async def fail_process(self, stream: ProcessStream, message: str) -> None:
        """The process cannot be followed any more: fail its stream and kill it."""
        ...

    def fail_consumer(self, stream: ProcessStream, message: str) -> None:
        """Only the consumer missed output for good: its ``events()`` ends in Failed."""
        ...

    def consumed(self, stream: ProcessStream, *, now: bool = True) -> None:
        """The consumer took, caught up, or left: acknowledge what it no longer needs
        the daemon to keep (``now``: at once, the daemon may be paused for it; else
        with the next batch)."""
        ...
