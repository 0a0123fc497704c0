"""Requests about one process act in the order they were sent, even back to back
(exec_runtime/_daemon/request_order.py): each request runs in its own task, and Trio starts
those in no set order."""

from __future__ import annotations

import base64
import itertools
import json
import random
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from exec_runtime import ServerConfig
from exec_runtime._daemon.request_order import RequestOrder
from exec_runtime._wire.websocket import TEXT, WebSocket
from exec_runtime._wire.websocket_handshake import handshake
from tests.support.wire_client import output_of, start_params

ROUNDS = 30


class OneWriteClient:
    """Sends a batch of requests in one TCP write (our WebSocket joins the frames), so
    the daemon reads them together and dispatches them in one go: the case where
    their handler tasks start in either order."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.notifications: dict[str, list[dict[str, Any]]] = defaultdict(list)

    @classmethod
    async def connect(cls, url: str) -> OneWriteClient:
        host, port = url.removeprefix("ws://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        client = cls(await handshake(stream, f"{host}:{port}", "/"))
        await client.batch([("initialize", {"clientName": "test"})])
        await client.ws.send_messages([b'{"method": "initialized"}'], TEXT)
        return client

    async def batch(self, requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Send every request in one write; the replies, in request order."""
        ids = [next(self._ids) for _ in requests]
        frames = [
            json.dumps({"id": i, "method": method, "params": params}).encode()
            for i, (method, params) in zip(ids, requests, strict=True)
        ]
        await self.ws.send_messages(frames, TEXT)
        replies: dict[int, dict[str, Any]] = {}
        while len(replies) < len(ids):
            message = json.loads((await self.ws.receive_message())[1])
            if "method" in message:
                self.notifications[message["params"]["processId"]].append(message)
            else:
                replies[message["id"]] = message
        return [replies[i] for i in ids]

    async def wait_closed(self, process_id: str) -> list[dict[str, Any]]:
        while not any(m["method"] == "process/closed" for m in self.notifications[process_id]):
            message = json.loads((await self.ws.receive_message())[1])
            self.notifications[message["params"]["processId"]].append(message)
        return sorted(self.notifications[process_id], key=lambda m: m["params"]["seq"])


async def test_a_terminate_right_behind_its_start_cancels_it(daemon: str) -> None:
    """Without the order, the terminate could run first, find no process, answer
    ``running: false``, and the process would then start and run on."""
    with trio.fail_after(30):
        client = await OneWriteClient.connect(daemon)
        for i in range(ROUNDS):
            process_id = f"p{i}"
            start, terminate = await client.batch(
                [
                    ("process/start", start_params(process_id, ["sleep", "30"])),
                    ("process/terminate", {"processId": process_id}),
                ],
            )
            assert terminate == {"id": terminate["id"], "result": {"running": True}}
            if "error" in start:  # cancelled while starting (PROTOCOL §4)
                assert start["error"] == {
                    "code": -32600,
                    "message": f"process {process_id} start was cancelled",
                }
            else:  # started first, then killed
                events = await client.wait_closed(process_id)
                assert events[0]["params"]["exitCode"] == 137
        await client.ws.aclose()


async def test_start_terminate_start_starts_the_second(daemon: str) -> None:
    """One id, three requests in one write: the terminate cancels (or kills) the first
    start and frees the id at once, so the second start runs (it was refused
    "already exists" while the cancelled start still held the id), and a terminate
    after that finds the second process running."""
    with trio.fail_after(60):
        client = await OneWriteClient.connect(daemon)
        cancelled = 0
        for i in range(50):
            process_id = f"p{i}"
            first, terminate, second = await client.batch(
                [
                    ("process/start", start_params(process_id, ["sleep", "30"])),
                    ("process/terminate", {"processId": process_id}),
                    ("process/start", start_params(process_id, ["sleep", "30"])),
                ],
            )
            assert terminate["result"] == {"running": True}
            if "result" in first:
                # It started before the terminate acted, which then killed it: the id
                # is taken until it closes (PROTOCOL §6). Legal, and rare.
                assert second["error"]["message"] == f"process {process_id} already exists"
                await client.wait_closed(process_id)
                continue
            # Cancelled while starting (PROTOCOL §4): the id was free at once.
            assert first["error"]["message"] == f"process {process_id} start was cancelled"
            cancelled += 1
            assert second.get("result", {}).get("processId") == process_id, second
            (terminate_again,) = await client.batch(
                [("process/terminate", {"processId": process_id})]
            )
            assert terminate_again["result"] == {"running": True}
            events = await client.wait_closed(process_id)
            assert events[0]["params"]["exitCode"] == 137
        assert cancelled > 0
        await client.ws.aclose()


@pytest.mark.parametrize("server_config", [ServerConfig(_start_delay=0.2)])
async def test_a_cancelled_start_is_gone_at_once(daemon: str) -> None:
    """Starts that take a while (a test hook): the terminate that cancels one answers
    ``running: true`` (PROTOCOL §4: it was starting), and from then on the id is
    unknown: a second terminate answers ``running: false`` and a read "unknown",
    while the cancelled start is still winding down."""
    with trio.fail_after(30):
        client = await OneWriteClient.connect(daemon)
        start, terminate, terminate_again, read = await client.batch(
            [
                ("process/start", start_params("p", ["sleep", "30"])),
                ("process/terminate", {"processId": "p"}),
                ("process/terminate", {"processId": "p"}),
                ("process/read", {"processId": "p"}),
            ],
        )
        assert start["error"] == {"code": -32600, "message": "process p start was cancelled"}
        assert terminate["result"] == {"running": True}
        assert terminate_again["result"] == {"running": False}
        assert read["error"] == {"code": -32600, "message": "unknown process id p"}
        first, terminate, second = await client.batch(
            [
                ("process/start", start_params("q", ["sleep", "30"])),
                ("process/terminate", {"processId": "q"}),
                ("process/start", start_params("q", ["sh", "-c", "echo second"])),
            ],
        )
        assert first["error"] == {"code": -32600, "message": "process q start was cancelled"}
        assert terminate["result"] == {"running": True}
        assert second["result"]["processId"] == "q"
        assert output_of(await client.wait_closed("q")) == b"second\n"
        await client.ws.aclose()


async def test_a_read_right_behind_its_start_finds_the_process(daemon: str) -> None:
    with trio.fail_after(30):
        client = await OneWriteClient.connect(daemon)
        for i in range(ROUNDS):
            process_id = f"p{i}"
            _, read = await client.batch(
                [
                    ("process/start", start_params(process_id, ["true"])),
                    ("process/read", {"processId": process_id}),
                ],
            )
            assert read.get("error", {}).get("message") != f"unknown process id {process_id}"
        await client.ws.aclose()


async def test_writes_and_close_stdin_reach_stdin_in_the_order_sent(daemon: str) -> None:
    with trio.fail_after(30):
        client = await OneWriteClient.connect(daemon)
        for i in range(ROUNDS // 3):
            process_id = f"cat{i}"
            (started,) = await client.batch(
                [("process/start", start_params(process_id, ["cat"], pipeStdin=True))]
            )
            assert "result" in started
            parts = [f"part {n};".encode() for n in range(8)]
            writes = [
                (
                    "process/write",
                    {
                        "processId": process_id,
                        "writeId": f"w{n}",
                        "chunk": base64.b64encode(part).decode(),
                    },
                )
                for n, part in enumerate(parts)
            ]
            close = ("process/write", {"processId": process_id, "writeId": "c", "closeStdin": True})
            replies = await client.batch([*writes, close])
            assert [reply["result"]["status"] for reply in replies] == ["accepted"] * 9
            events = await client.wait_closed(process_id)
            assert output_of(events) == b"".join(parts)
        await client.ws.aclose()


async def test_a_write_waiting_for_stdin_room_holds_up_only_the_writes_behind_it(
    daemon: str,
) -> None:
    """The child never reads: the second write waits for room in the 1 MiB stdin
    queue. A terminate sent behind it must not wait for it (only writes keep their
    order among themselves), and its kill ends that wait."""
    with trio.fail_after(30):
        client = await OneWriteClient.connect(daemon)
        (started,) = await client.batch(
            [("process/start", start_params("p", ["sleep", "30"], pipeStdin=True))]
        )
        assert "result" in started

        def write(write_id: str, size: int) -> tuple[str, dict[str, Any]]:
            chunk = base64.b64encode(b"x" * size).decode()
            return ("process/write", {"processId": "p", "writeId": write_id, "chunk": chunk})

        first, second, terminate = await client.batch(
            [write("a", 1 << 20), write("b", 1 << 20), ("process/terminate", {"processId": "p"})]
        )
        assert first["result"] == {"status": "accepted"}
        assert second["result"] == {"status": "stdinClosed"}  # the kill closed stdin first
        assert terminate["result"] == {"running": True}
        events = await client.wait_closed("p")
        assert events[0]["params"]["exitCode"] == 137
        await client.ws.aclose()


# --- file handles ------------------------------------------------------------------------


async def test_fs_requests_for_one_handle_act_in_the_order_sent(daemon: str, tmp_path: Any) -> None:
    """A close right behind its open must close it (run first, it found nothing to
    close and the handle stayed open until the connection ended), and a read right
    behind its open must find the handle; an id reused behind its close opens anew."""
    path = tmp_path / "file"
    path.write_bytes(b"0123456789")
    uri = f"file://{path}"
    with trio.fail_after(30):
        client = await OneWriteClient.connect(daemon)
        for i in range(ROUNDS):
            handle = f"h{i}"
            opened, read, closed, reopened, closed_again = await client.batch(
                [
                    ("fs/open", {"handleId": handle, "path": uri}),
                    ("fs/readBlock", {"handleId": handle, "offset": 2, "len": 3}),
                    ("fs/close", {"handleId": handle}),
                    ("fs/open", {"handleId": handle, "path": uri}),
                    ("fs/close", {"handleId": handle}),
                ]
            )
            assert opened["result"] == reopened["result"] == {"handleId": handle}
            assert base64.b64decode(read.get("result", {}).get("chunk", "")) == b"234", read
            assert closed["result"] == closed_again["result"] == {}
        # Nothing was left open: the connection's 128 handles are all free.
        opens = [("fs/open", {"handleId": f"n{i}", "path": uri}) for i in range(128)]
        assert all("result" in reply for reply in await client.batch(opens))
        await client.ws.aclose()


# --- the rules, as a property of RequestOrder ----------------------------------------------

PROCESS_METHODS = ["process/start", "process/write", "process/read", "process/terminate"]
HANDLE_METHODS = ["fs/open", "fs/readBlock", "fs/close"]
REQUESTS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(PROCESS_METHODS), st.sampled_from(["p", "q"])),
        st.tuples(st.sampled_from(HANDLE_METHODS), st.sampled_from(["h", "k"])),
    ),
    max_size=30,
)


@settings(max_examples=300)
@given(requests=REQUESTS, seed=st.randoms(use_true_random=False))
def test_request_order_keeps_the_rules_under_any_schedule(
    requests: list[tuple[str, str]], seed: random.Random
) -> None:
    """Turns are taken in wire order; then any request whose waits are over may act
    next (an adversarial scheduler picks one at random). Whatever it picks: starts
    come before what follows them, writes keep their order, a handle's opens and
    closes keep theirs with each read between the two it was sent between, nothing
    deadlocks, and nothing is left behind."""
    order = RequestOrder()
    turns = []
    for method, target in requests:
        field = "handle_id" if method.startswith("fs/") else "process_id"
        turns.append(order.take(method, SimpleNamespace(**{field: target})))
    pending = list(range(len(requests)))
    acted_at: dict[int, int] = {}
    while pending:
        runnable = [i for i in pending if all(w.is_set() for w in turns[i].waits)]
        assert runnable, "deadlock"
        chosen = seed.choice(runnable)
        pending.remove(chosen)
        acted_at[chosen] = len(acted_at)
        order.acted(turns[chosen])
    assert order._last == {} and order._reads == {}

    def earlier_same(i: int, methods: set[str]) -> list[int]:
        target = requests[i][1]
        return [j for j in range(i) if requests[j][1] == target and requests[j][0] in methods]

    for i, (method, _) in enumerate(requests):
        if method.startswith("process/"):
            for j in earlier_same(i, {"process/start"}):
                assert acted_at[j] < acted_at[i]  # its process's start came first
            if method == "process/start":
                for j in earlier_same(i, {"process/terminate"}):
                    assert acted_at[j] < acted_at[i]  # ... and a start, every terminate
            if method == "process/write":
                for j in earlier_same(i, {"process/write"}):
                    assert acted_at[j] < acted_at[i]  # writes in the order sent
        else:
            barriers = {"fs/open", "fs/close"}
            for j in earlier_same(i, barriers):
                assert acted_at[j] < acted_at[i]  # after every open or close before it
            if method in barriers:
                for j in earlier_same(i, {"fs/readBlock"}):
                    assert acted_at[j] < acted_at[i]  # reads sent before it are done
