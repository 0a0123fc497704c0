"""The client against daemons that answer differently from ours (PROTOCOL §9): a real
daemon in this Trio run, reached through a transport that rewrites what it says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import protocol_schema as wire
from exec_runtime import (
    ClientClosedError,
    ClientState,
    Closed,
    Event,
    ExecClient,
    Exited,
    Failed,
    Output,
    ServerConfig,
)
from exec_runtime._daemon.session import SessionRegistry
from exec_runtime._local import LocalConnector
from exec_runtime._wire.transport import Frame, MessageTransport, joined

Message = dict[str, Any]
Rewrite = Callable[[Message, int], Message]
"""What the daemon said, and the connection's index (0 for the first) -> what the
client is told."""


class RewritingTransport:
    """JSON frames from the daemon pass through ``rewrite``; the client's go out as they
    are, their methods counted."""

    def __init__(self, inner: MessageTransport, rewrite: Rewrite, index: int, sent: list[str]):
        self.inner = inner
        self.codec = inner.codec
        self._rewrite = rewrite
        self._index = index
        self._sent = sent

    async def send_message(self, data: bytes) -> None:
        self._sent.append(json.loads(data).get("method", "response"))
        await self.inner.send_message(data)

    async def send_messages(self, messages: Sequence[Frame]) -> None:
        for message in messages:
            await self.send_message(joined(message))

    async def receive_message(self) -> bytes | bytearray | str:
        message = json.loads(await self.inner.receive_message())
        return json.dumps(self._rewrite(message, self._index)).encode()

    async def aclose(self) -> None:
        await self.inner.aclose()


class RewritingConnector:
    def __init__(self, inner: LocalConnector, rewrite: Rewrite) -> None:
        self.inner = inner
        self.rewrite = rewrite
        self.sent: list[str] = []
        self.transports: list[RewritingTransport] = []

    async def connect(self, nursery: trio.Nursery) -> MessageTransport:
        transport = RewritingTransport(
            await self.inner.connect(nursery), self.rewrite, len(self.transports), self.sent
        )
        self.transports.append(transport)
        return transport


@asynccontextmanager
async def rewritten_stack(
    rewrite: Rewrite, *, recovery_deadline: float = 25.0
) -> AsyncIterator[tuple[ExecClient, RewritingConnector]]:
    async with trio.open_nursery() as nursery:
        registry = SessionRegistry(nursery, ServerConfig())
        connector = RewritingConnector(LocalConnector(registry, wire.JSON), rewrite)
        async with trio.open_nursery() as client_nursery:
            client = ExecClient._create(
                connector, client_nursery, recovery_deadline=recovery_deadline
            )
            await client_nursery.start(client._supervise)
            try:
                yield client, connector
            finally:
                await client.aclose()
                client_nursery.cancel_scope.cancel()
        registry.close_all()
        nursery.cancel_scope.cancel()


def legacy_exits_sandbox_denied(message: Message, index: int) -> Message:
    """An older daemon: ``process/exited`` without ``sandboxDenied``; its reads report
    that the sandbox denied the process."""
    if message.get("method") == "process/exited":
        del message["params"]["sandboxDenied"]
    elif "nextSeq" in message.get("result", {}):
        message["result"]["sandboxDenied"] = True
    return message


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


@pytest.mark.parametrize("script", ["printf hi; exit 3", "exit 3"])
async def test_a_legacy_exit_is_completed_by_one_read(script: str) -> None:
    """PROTOCOL §9: a legacy exit without ``sandboxDenied`` is the one case where a
    read completes a process: the exit is published with what the read says."""
    with trio.fail_after(5):
        async with rewritten_stack(legacy_exits_sandbox_denied) as (client, connector):
            proc = await client.start(["sh", "-c", script])
            events = await collect(proc.events())
            assert connector.sent.count("process/read") == 1
            exits = [event for event in events if isinstance(event, Exited)]
            assert [(e.exit_code, e.sandbox_denied) for e in exits] == [(3, True)]
            assert isinstance(events[-1], Closed)
            assert [event.seq for event in events if not isinstance(event, Failed)] == list(
                range(1, len(events) + 1)
            )
            assert b"".join(e.data for e in events if isinstance(e, Output)) == (
                b"hi" if "printf" in script else b""
            )
            assert await proc.wait() == 3


def legacy_exits_reads_refused(message: Message, index: int) -> Message:
    """An older daemon whose read of the exited process fails."""
    if message.get("method") == "process/exited":
        del message["params"]["sandboxDenied"]
    elif "nextSeq" in message.get("result", {}):
        error = {"code": -32600, "message": "unknown process id p"}
        return {"id": message["id"], "error": error}
    return message


async def test_a_legacy_exit_whose_read_fails_keeps_the_pushed_exit() -> None:
    """The read was only to learn ``sandboxDenied``: when it fails, the process still
    completes, with the exit as pushed, instead of failing."""
    with trio.fail_after(5):
        async with rewritten_stack(legacy_exits_reads_refused) as (client, connector):
            proc = await client.start(["sh", "-c", "exit 3"])
            events = await collect(proc.events())
            assert connector.sent.count("process/read") == 1
            assert [(type(e), e.seq) for e in events] == [(Exited, 1), (Closed, 2)]
            assert isinstance(events[0], Exited) and not events[0].sandbox_denied
            assert await proc.wait() == 3


def current_exits(message: Message, index: int) -> Message:
    return message


async def test_a_current_exit_needs_no_read() -> None:
    """The control for the test above: the same stack, an exit with ``sandboxDenied``."""
    with trio.fail_after(5):
        async with rewritten_stack(current_exits) as (client, connector):
            proc = await client.start(["sh", "-c", "exit 3"])
            events = await collect(proc.events())
            assert "process/read" not in connector.sent
            assert [(e.exit_code, e.sandbox_denied) for e in events if isinstance(e, Exited)] == [
                (3, False)
            ]


def new_session_on_resume(message: Message, index: int) -> Message:
    """A daemon that answers a resume with some other session."""
    result = message.get("result", {})
    if index > 0 and "sessionId" in result:
        result["sessionId"] = "00000000-0000-4000-8000-000000000000"
    return message


async def test_a_resume_answered_with_another_session_fails_the_client() -> None:
    """PROTOCOL §9: the client checks the resumed session id is unchanged; output of
    another session must never be spliced into this one's processes."""
    with trio.fail_after(10):
        async with rewritten_stack(new_session_on_resume) as (client, connector):
            proc = await client.start(["sleep", "30"])
            await connector.transports[0].inner.aclose()  # the connection drops
            while client.state is not ClientState.FAILED:  # noqa: ASYNC110 - plain state
                await trio.sleep(0.01)
            events = await collect(proc.events())
            assert len(events) == 1 and isinstance(events[0], Failed)
            with pytest.raises(ClientClosedError, match="resumed session id changed"):
                await client.start(["true"])
