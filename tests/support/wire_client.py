"""Test peers: a raw JSON-RPC client over trio-websocket (an independent WebSocket),
the two client backends, and a socket that stops mid-write."""

from __future__ import annotations

import itertools
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

import exec_runtime
from exec_runtime import ExecClient, ServerConfig
from tests.support.daemon_process import eventually

BACKENDS = ["local", "remote"]
"""The two backends of ``client``: ``open_local()`` and a loopback ``open_client()``."""


@asynccontextmanager
async def open_backend(
    kind: str, nursery: trio.Nursery, config: ServerConfig
) -> AsyncIterator[ExecClient]:
    if kind == "local":
        async with exec_runtime.open_local(config) as client:
            yield client
    else:
        url = await nursery.start(exec_runtime.serve, config)
        async with exec_runtime.open_client(url) as client:
            yield client


class WireError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def start_params(process_id: str, argv: list[str], **params: Any) -> dict[str, Any]:
    """``process/start`` params: this process's cwd and environment unless given."""
    params.setdefault("cwd", "file://" + os.getcwd())
    params.setdefault("env", dict(os.environ))
    params.setdefault("tty", False)
    return {"processId": process_id, "argv": argv, **params}


class RawClient:
    """A deliberately thin JSON-RPC client, so daemon tests see exactly the wire."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, nursery: trio.Nursery) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[Any, trio.MemorySendChannel[dict[str, Any]]] = {}
        self.notifications: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.all_messages: list[dict[str, Any]] = []
        self._changed = trio.Event()
        self.session_id: str | None = None
        nursery.start_soon(self._reader)

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            message = json.loads(data)
            self.all_messages.append(message)
            if "method" in message:
                self.notifications[message["params"]["processId"]].append(message)
            elif message.get("id") in self._waiting:
                self._waiting.pop(message["id"]).send_nowait(message)
            else:
                self.notifications["__unmatched__"].append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send_message(data)

    async def request(self, method: str, params: Any = None, **extra: Any) -> dict[str, Any]:
        request_id = extra.pop("id", None) or next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[request_id] = send
        message: dict[str, Any] = {"id": request_id, "method": method, **extra}
        if params is not None:
            message["params"] = params
        await self.ws.send_message(json.dumps(message))
        return await receive.receive()

    async def call(self, method: str, params: Any = None) -> Any:
        reply = await self.request(method, params)
        if "error" in reply:
            raise WireError(reply["error"]["code"], reply["error"]["message"])
        return reply["result"]

    async def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        await self.ws.send_message(json.dumps(message))

    async def handshake(self, resume: str | None = None) -> str:
        params: dict[str, Any] = {"clientName": "test"}
        if resume:
            params["resumeSessionId"] = resume
        result = await self.call("initialize", params)
        await self.notify("initialized")
        self.session_id = result["sessionId"]
        return str(result["sessionId"])

    async def start(self, process_id: str, argv: list[str], **params: Any) -> Any:
        return await self.call("process/start", start_params(process_id, argv, **params))

    async def start_request(
        self, process_id: str, argv: list[str], **params: Any
    ) -> dict[str, Any]:
        """``process/start``'s whole reply, an error included."""
        return await self.request("process/start", start_params(process_id, argv, **params))

    async def wait_closed(self, process_id: str) -> list[dict[str, Any]]:
        """Every notification for the process, once ``process/closed`` has arrived."""
        while not any(m["method"] == "process/closed" for m in self.notifications[process_id]):
            await self._changed.wait()
        return sorted(self.notifications[process_id], key=lambda m: m["params"]["seq"])

    async def read_all(self, process_id: str, after: int = 0) -> dict[str, Any]:
        """Long-poll until closed; returns the last result with every chunk collected."""
        chunks: list[dict[str, Any]] = []
        while True:
            result = await self.call(
                "process/read", {"processId": process_id, "afterSeq": after, "waitMs": 5000}
            )
            chunks += result["chunks"]
            if result["chunks"]:
                after = result["chunks"][-1]["seq"]
            if result["closed"]:
                result["chunks"] = chunks
                return result


def output_of(events: list[dict[str, Any]], stream: str = "stdout") -> bytes:
    import base64

    return b"".join(
        base64.b64decode(m["params"]["chunk"])
        for m in events
        if m["method"] == "process/output" and m["params"]["stream"] == stream
    )


class GatedStream(trio.abc.HalfCloseableStream):
    """The client's socket, but the first send of ``threshold`` bytes or more stops
    half-way until ``release`` is set: a deterministic write cut off mid-frame."""

    def __init__(self, inner: Any, threshold: int) -> None:
        self.inner = inner
        self.threshold = threshold
        self.half_sent = trio.Event()
        self.release = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) >= self.threshold and not self.half_sent.is_set():
            half = len(data) // 2
            await self.inner.send_all(data[:half])
            self.half_sent.set()
            await self.release.wait()
            data = data[half:]
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self.inner.aclose()


async def cancel_half_sent(gate: GatedStream, call: Callable[[], Awaitable[object]]) -> None:
    """Run ``call`` until ``gate`` holds its big frame half sent, then cancel it."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await gate.half_sent.wait()
            scope.cancel()
    assert scope.cancelled_caught


GOING_AWAY = 1001


async def start_printing_pid(
    client: RawClient, process_id: str, script: str, **params: Any
) -> int:
    """Start ``sh -c 'echo $$; SCRIPT'`` and return the pid it printed."""
    await client.start(process_id, ["sh", "-c", f"echo $$; {script}"], **params)
    stream = "pty" if params.get("tty") else "stdout"
    await eventually(lambda: b"\n" in output_of(client.notifications[process_id], stream))
    return int(output_of(client.notifications[process_id], stream).split()[0])

