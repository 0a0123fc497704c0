"""Leaks and load: process lifecycles leave no zombie, fd or memory behind; a reconnect
storm leaves no session or fd behind; a client that stops reading slows the producer
while the daemon's memory stays bounded and nothing is lost; sessions cannot touch each
other's processes.

The heavy tests are marked ``slow`` and run at a reduced size by default; set
``EXEC_RUNTIME_LOAD_FULL=1`` (``nox -s load``) for the full sizes: 10,000 lifecycles,
500 reconnects, 100 MiB through a stalled client (default 500, 100, 40 MiB).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events as wsevents

import exec_runtime._daemon.server
import protocol_schema as wire
from exec_runtime import ServerConfig
from exec_runtime._daemon.session import SessionRegistry
from tests.support.daemon_process import (
    Daemon,
    eventually,
    fd_count,
    io_field,
    proc_state,
    process_gone,
    spawned_children_of,
    status_kib,
)
from tests.support.wire_client import RawClient, WireError, output_of

FULL = os.environ.get("EXEC_RUNTIME_LOAD_FULL") == "1"
LIFECYCLES = 10_000 if FULL else 500
RECONNECTS = 500 if FULL else 100
SLOW_CONSUMER_BYTES = (100 if FULL else 40) << 20
MIB = 1024  # /proc reports KiB


# --- lifecycles --------------------------------------------------------------------------


async def one_lifecycle(client: RawClient, number: int) -> None:
    """One of six lifecycles: pipes or a PTY; exit, terminate, or a signal; stdin."""
    process_id = f"L{number}"
    kind = number % 6
    if kind == 0:
        await client.start(process_id, ["true"])
    elif kind == 1:
        await client.start(process_id, ["echo", "hi"], tty=True)
    elif kind in (2, 3):
        await client.start(process_id, ["sleep", "30"], tty=kind == 3)
        assert (await client.call("process/terminate", {"processId": process_id}))["running"]
    elif kind == 4:
        signal = ("interrupt", "terminate", "hangup")[number % 3]
        await client.start(process_id, ["sleep", "30"], tty=number % 2 == 0)
        await client.call("process/signal", {"processId": process_id, "signal": signal})
    else:
        await client.start(process_id, ["cat"], pipeStdin=True)
        data = base64.b64encode(f"stdin {number}\n".encode()).decode()
        await client.call("process/write", {"processId": process_id, "chunk": data, "writeId": "1"})
        await client.call(
            "process/write", {"processId": process_id, "closeStdin": True, "writeId": "2"}
        )
    events = await client.wait_closed(process_id)
    assert [m["params"]["seq"] for m in events] == list(range(1, len(events) + 1))
    if kind == 5:
        assert output_of(events) == f"stdin {number}\n".encode()
    del client.notifications[process_id]


async def run_lifecycles(client: RawClient, first: int, count: int, batch: int = 25) -> None:
    for start in range(first, first + count, batch):
        async with trio.open_nursery() as nursery:
            for number in range(start, min(start + batch, first + count)):
                nursery.start_soon(one_lifecycle, client, number)


async def forgotten(client: RawClient, process_ids: list[str]) -> None:
    """Until the daemon has forgotten every one of ``process_ids`` (closed TTL)."""
    for process_id in process_ids:
        while True:
            read = {"processId": process_id, "waitMs": 0}
            reply = await client.request("process/read", read)
            if "error" in reply:
                assert "unknown process id" in reply["error"]["message"], reply
                break
            await trio.sleep(0.02)


async def settled_fds(pid: int, baseline: int) -> int:
    """The daemon's fd count once it is back to ``baseline`` (or after 5 s)."""
    with trio.move_on_after(5):
        await eventually(lambda: fd_count(pid) <= baseline, interval=0.02)
    return fd_count(pid)


@pytest.mark.slow
async def test_process_lifecycles_leave_no_zombie_fd_or_memory(
    daemons: Any, connect: Any
) -> None:
    with trio.fail_after(60 + LIFECYCLES * 0.03):
        daemon: Daemon = await daemons("--closed-ttl", "0.05")
        client: RawClient = await connect(url=daemon.url)
        warmup = 60
        await run_lifecycles(client, 0, warmup)
        await forgotten(client, [f"L{number}" for number in range(warmup)])
        fds = fd_count(daemon.pid)
        rss = status_kib(daemon.pid, "VmRSS")
        half = (LIFECYCLES - warmup) // 2
        await run_lifecycles(client, warmup, half)
        rss_half = status_kib(daemon.pid, "VmRSS")
        await run_lifecycles(client, warmup + half, LIFECYCLES - warmup - half)
        assert await settled_fds(daemon.pid, fds) == fds
        rss_end = status_kib(daemon.pid, "VmRSS")
        # Every leader was reaped before its exit was recorded: nothing is left,
        # not even a zombie.
        assert spawned_children_of(daemon.pid) == []
        # Memory: bounded growth, and flat over the second half.
        assert rss_end - rss < 16 * MIB, (rss, rss_half, rss_end)
        assert rss_end - rss_half < 8 * MIB, (rss, rss_half, rss_end)
        await client.ws.aclose()


# --- reconnect storm ---------------------------------------------------------------------


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[SessionRegistry]]:
    """Every SessionRegistry ``serve`` creates (to count sessions from outside)."""
    created: list[SessionRegistry] = []

    class Recorded(SessionRegistry):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(exec_runtime._daemon.server, "SessionRegistry", Recorded)
    yield created


async def abrupt_session(url: str, resume: str | None) -> str:
    """Upgrade and initialize over raw TCP, then drop the socket without a close frame."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        peer = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(peer.send(wsevents.Request(host=parts.netloc, target="/")))
        params: dict[str, Any] = {"clientName": "storm"}
        if resume:
            params["resumeSessionId"] = resume
        while True:
            data = await stream.receive_some(65536)
            assert data
            peer.receive_data(data)
            for event in peer.events():
                if isinstance(event, wsevents.AcceptConnection):
                    message = {"id": 1, "method": "initialize", "params": params}
                    await stream.send_all(peer.send(wsevents.TextMessage(json.dumps(message))))
                elif isinstance(event, wsevents.TextMessage):
                    reply = json.loads(event.data)
                    if "error" in reply:
                        assert reply["error"]["code"] in (-32010, -32600), reply
                        return ""
                    return str(reply["result"]["sessionId"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "server_config", [ServerConfig(detached_ttl=0.3, max_detached_sessions=16)]
)
async def test_a_reconnect_storm_leaves_no_session_or_fd_behind(
    registries: list[SessionRegistry], daemon: str, nursery: trio.Nursery
) -> None:
    with trio.fail_after(60):
        (registry,) = registries
        # The daemon in this run is idle (every task blocked): no descriptor is in
        # passing as the baseline is taken.
        await trio.testing.wait_all_tasks_blocked()
        fds = fd_count()
        sessions: list[str] = []
        for cycle in range(RECONNECTS):
            resume = sessions[-1] if sessions and cycle % 3 == 1 else None
            if cycle % 2:
                session_id = await abrupt_session(daemon, resume)
            else:
                async with trio.open_nursery() as inner:
                    ws = await trio_websocket.connect_websocket_url(inner, daemon)
                    client = RawClient(ws, inner)
                    try:
                        session_id = await client.handshake(resume)
                    except WireError as exc:
                        assert exc.code in (-32010, -32600)
                        session_id = ""
                    if session_id and cycle % 4 == 0:
                        await client.start(f"p{cycle}", ["sleep", "30"])
                    await ws.aclose()
            if session_id:
                sessions.append(session_id)
            # Detached sessions are capped while the storm goes on.
            detached = [
                s for s in registry.sessions.values() if s.attached is None and not s._closed
            ]
            assert len(detached) <= 16
        assert len(sessions) >= RECONNECTS // 2
        # Every session expires (processes killed) and every socket is closed.
        await eventually(lambda: not registry.sessions, interval=0.02)
        with trio.move_on_after(5):
            await eventually(lambda: fd_count() <= fds, interval=0.02)
        assert fd_count() == fds


# --- slow consumer -----------------------------------------------------------------------


def expected_digest(count: int) -> tuple[str, int]:
    """sha256 and size of ``seq 1 COUNT``."""
    digest = hashlib.sha256()
    size = 0
    for start in range(1, count + 1, 100_000):
        block = "".join(f"{n}\n" for n in range(start, min(start + 100_000, count + 1)))
        data = block.encode()
        digest.update(data)
        size += len(data)
    return digest.hexdigest(), size


WRITE_SYSCALL = {"x86_64": 1, "aarch64": 64}.get(os.uname().machine)


def blocked_in_write(pid: int) -> bool:
    """``pid`` sleeps inside write(2) (``/proc/PID/syscall``: the syscall number
    first), as a writer does on a full pipe."""
    if WRITE_SYSCALL is None:
        pytest.skip(f"write(2)'s number on {os.uname().machine} is not listed here")
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    return proc_state(pid) == "S" and fields[:1] == [str(WRITE_SYSCALL)]


def seq_count_for(size: int) -> int:
    """The N for which ``seq 1 N`` writes about ``size`` bytes."""
    count, total, digits = 0, 0, 1
    while True:
        span = 9 * 10 ** (digits - 1)
        if total + span * (digits + 1) >= size:
            return count + (size - total) // (digits + 1)
        total += span * (digits + 1)
        count += span
        digits += 1


@pytest.mark.slow
async def test_a_stalled_client_slows_the_producer_bounds_memory_and_loses_nothing(
    daemons: Any, nursery: trio.Nursery
) -> None:
    with trio.fail_after(120):
        count = seq_count_for(SLOW_CONSUMER_BYTES)
        expected, size = expected_digest(count)
        daemon: Daemon = await daemons()
        ws = await trio_websocket.connect_websocket_url(
            nursery,
            daemon.url,
            subprotocols=[wire.MSGPACK_SUBPROTOCOL],
            message_queue_size=1,
            max_message_size=1 << 24,
        )
        assert ws.subprotocol == wire.MSGPACK_SUBPROTOCOL
        pending: list[dict[str, Any]] = []

        async def call(request_id: int, method: str, params: Any = None) -> Any:
            message: dict[str, Any] = {"id": request_id, "method": method}
            if params is not None:
                message["params"] = params
            await ws.send_message(msgspec.msgpack.encode(message))
            while True:
                reply = msgspec.msgpack.decode(await ws.get_message())
                if reply.get("id") == request_id:
                    assert "result" in reply, reply
                    return reply["result"]
                pending.append(reply)

        await call(1, "initialize", {"clientName": "slow"})
        await ws.send_message(msgspec.msgpack.encode({"method": "initialized"}))
        await call(2, "environment/info")  # the daemon has served this connection
        baseline = status_kib(daemon.pid, "VmRSS")

        start = {"processId": "seq", "argv": ["seq", "1", str(count)], "cwd": "file:///",
                 "env": {}, "tty": False}  # fmt: skip
        await call(3, "process/start", start)
        # Stop reading. The producer runs into backpressure: its writes stall.
        await eventually(lambda: len(spawned_children_of(daemon.pid)) == 1)
        ((producer, _),) = spawned_children_of(daemon.pid)
        # Stalled: blocked in write(2) on its full pipe while the daemon serves 20 round
        # trips on another connection (its event loop gave the pump its turn each
        # time) without reading any more of it. The daemon drains until its windows
        # are full, so wait for that state; a daemon that never stops reading fails
        # here at the deadline. Then it must stay so for another 20 round trips.
        other = await trio_websocket.connect_websocket_url(nursery, daemon.url)
        await other.send_message('{"id":1,"method":"initialize","params":{"clientName":"o"}}')
        await other.get_message()
        await other.send_message('{"method":"initialized"}')

        async def round_trips() -> None:
            for request_id in range(2, 22):
                await other.send_message(f'{{"id":{request_id},"method":"environment/status"}}')
                assert '"ready"' in await other.get_message()

        while True:
            await eventually(lambda: blocked_in_write(producer), interval=0.02)
            written = io_field(producer, "wchar")
            await round_trips()
            if blocked_in_write(producer) and io_field(producer, "wchar") == written:
                break
        await round_trips()
        assert io_field(producer, "wchar") == written, "the producer was not slowed"
        await other.aclose()
        assert written < size // 2 or size < 30 << 20
        stalled_rss = status_kib(daemon.pid, "VmRSS")
        assert stalled_rss - baseline < 24 * MIB, (baseline, stalled_rss)

        # Read again: every byte arrives, in order, seqs contiguous.
        digest = hashlib.sha256()
        received, next_seq, closed = 0, 1, False
        while not closed:
            message = pending.pop(0) if pending else msgspec.msgpack.decode(await ws.get_message())
            params = message["params"]
            assert params["seq"] == next_seq  # one connection: pushed in seq order
            next_seq += 1
            if message["method"] == "process/output":
                digest.update(params["chunk"])
                received += len(params["chunk"])
            elif message["method"] == "process/exited":
                assert params["exitCode"] == 0
            else:
                closed = True
        assert received == size
        assert digest.hexdigest() == expected
        peak = status_kib(daemon.pid, "VmHWM")
        # Bounded well below the output's size (measured: ~+18 MiB for 100 MiB).
        assert peak - baseline < 32 * MIB, (baseline, stalled_rss, peak)
        assert process_gone(producer)
        await ws.aclose()


# --- session isolation -------------------------------------------------------------------


async def test_a_session_cannot_touch_another_sessions_processes(
    connect: Any, tmp_path: Any
) -> None:
    with trio.fail_after(10):
        a: RawClient = await connect()
        b: RawClient = await connect()
        await a.start("shared-name", ["sh", "-c", "echo $$; exec cat"], pipeStdin=True)
        await eventually(lambda: b"\n" in output_of(a.notifications["shared-name"]))
        pid = int(output_of(a.notifications["shared-name"]))
        target = {"processId": "shared-name"}

        reply = await b.request("process/read", target)
        assert reply["error"] == {"code": -32600, "message": "unknown process id shared-name"}
        chunk = base64.b64encode(b"from b\n").decode()
        assert await b.call("process/write", {**target, "chunk": chunk, "writeId": "1"}) == {
            "status": "unknownProcess"
        }
        for signal in ("interrupt", "terminate", "kill", "hangup"):
            assert await b.call("process/signal", {**target, "signal": signal}) == {}
        assert await b.call("process/terminate", target) == {"running": False}
        reply = await b.request("process/resize", {**target, "rows": 5, "cols": 5})
        assert reply["error"]["code"] == -32600
        # B's own process of the same name is B's alone.
        await b.start("shared-name", ["sleep", "30"])
        assert await b.call("process/terminate", target) == {"running": True}
        await b.wait_closed("shared-name")
        # Nor can a new connection take A's session over while A is attached.
        c: RawClient = await connect(handshake=False)
        reply = await c.request("initialize", {"clientName": "c", "resumeSessionId": a.session_id})
        assert reply["error"]["code"] == -32010
        # File handles belong to their connection.
        file = tmp_path / "secret"
        file.write_bytes(b"for a only")
        await a.call("fs/open", {"handleId": "h", "path": f"file://{file}"})
        reply = await b.request("fs/readBlock", {"handleId": "h", "offset": 0, "len": 10})
        assert "error" in reply

        # A's process never noticed any of it.
        assert not process_gone(pid)
        chunk = base64.b64encode(b"from a\n").decode()
        await a.call("process/write", {**target, "chunk": chunk, "writeId": "1"})
        await a.call("process/write", {**target, "closeStdin": True, "writeId": "2"})
        events = await a.wait_closed("shared-name")
        assert output_of(events) == f"{pid}\nfrom a\n".encode()
        assert events[-2]["params"]["exitCode"] == 0
        for client in (a, b, c):
            await client.ws.aclose()
