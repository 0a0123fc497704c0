"""Every daemon limit (PROTOCOL §1): message size, JSON value budget, sessions,
processes per session, detached sessions, concurrent requests, handshake timeout and
the keepalive that finds dead peers (without killing a client that is merely slow)."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import trio
import trio_websocket
import trustme
import wsproto
import wsproto.events as wsevents

import exec_runtime._client.connect
import exec_runtime._daemon.connection
import protocol_schema as wire
from exec_runtime import ExecClient, ServerConfig, open_client, serve
from exec_runtime._wire.http import MAX_HEAD_BYTES
from tests.support.daemon_process import Daemon, eventually, process_gone
from tests.support.daemon_state import track_daemon
from tests.support.wire_client import RawClient, output_of

INVALID_REQUEST = -32600
SESSION_ATTACHED = -32010


@pytest.fixture
async def connect(connect: Any) -> AsyncIterator[Any]:
    """conftest's ``connect``, closing each client at teardown (an abandoned client never
    answers the daemon's close frame, which would hold the teardown for 2 s)."""
    clients: list[RawClient] = []

    async def _connect(*args: Any, **kwargs: Any) -> RawClient:
        client: RawClient = await connect(*args, **kwargs)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        with trio.move_on_after(1):
            await client.ws.aclose()


async def resume(connect: Any, session_id: str) -> RawClient:
    client: RawClient = await connect(handshake=False)
    while True:
        reply = await client.request(
            "initialize", {"clientName": "test", "resumeSessionId": session_id}
        )
        if "error" not in reply:
            await client.notify("initialized")
            return client
        assert reply["error"]["code"] == SESSION_ATTACHED, reply
        await trio.sleep(0.01)


async def pid_of(client: RawClient, process_id: str) -> int:
    """The pid a process printed as its first line (``echo $$``)."""
    await eventually(lambda: b"\n" in output_of(client.notifications[process_id]))
    return int(output_of(client.notifications[process_id]).split()[0])


# --- message size and JSON values --------------------------------------------------------


@pytest.mark.parametrize("server_config", [ServerConfig(max_message_bytes=4096)])
async def test_a_message_over_max_message_bytes_closes_with_1009(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        big = {"id": 9, "method": "environment/status", "x": "a" * 5000}
        await client.send_raw(json.dumps(big))
        await eventually(lambda: client.ws.closed is not None)
        assert client.ws.closed is not None
        assert client.ws.closed.code == 1009
        assert not any(m.get("id") == 9 for m in client.all_messages)
        other = await connect()
        assert await other.call("environment/status") == {"status": "ready"}


@pytest.mark.parametrize("server_config", [ServerConfig(max_json_values=100)])
async def test_the_json_value_budget_is_configurable(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        reply = await client.request("environment/status", {"x": [0] * 200})
        assert reply["error"]["code"] == INVALID_REQUEST
        assert reply["error"]["message"] == "message has more than 100 JSON values"
        assert "result" in await client.request("environment/status", {"x": [0] * 50})


# --- sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("server_config", [ServerConfig(max_sessions=2, detached_ttl=0.2)])
async def test_max_sessions_refuses_a_new_session_with_32600(connect: Any) -> None:
    with trio.fail_after(5):
        first = await connect()
        await connect()
        third: RawClient = await connect(handshake=False)
        reply = await third.request("initialize", {"clientName": "third"})
        assert reply["error"]["code"] == INVALID_REQUEST
        assert "at most 2 sessions" in reply["error"]["message"]
        assert "--max-sessions" in reply["error"]["message"]
        # A detached session still counts until it expires; then there is room, and
        # initialize may be retried on the same connection.
        await first.ws.aclose()
        while "error" in (reply := await third.request("initialize", {"clientName": "third"})):
            assert reply["error"]["code"] == INVALID_REQUEST
            await trio.sleep(0.02)
        assert "sessionId" in reply["result"]


@pytest.mark.parametrize("server_config", [ServerConfig(max_processes_per_session=3)])
async def test_max_processes_per_session_names_the_limit(connect: Any) -> None:
    with trio.fail_after(10):
        client = await connect()
        for number in range(3):
            await client.start(f"s{number}", ["sleep", "100"])
        reply = await client.request(
            "process/start",
            {"processId": "x", "argv": ["true"], "cwd": "file://" + os.getcwd(), "env": {}},
        )
        assert reply["error"]["code"] == INVALID_REQUEST
        message = reply["error"]["message"]
        assert "at most 3 processes" in message and "--max-processes-per-session" in message
        # The id was not taken, and another session has its own allowance.
        other = await connect()
        await other.start("x", ["true"])
        # Closed processes (still retained for process/read) do not count.
        await client.call("process/terminate", {"processId": "s0"})
        await client.wait_closed("s0")
        await client.start("x", ["true"])
        await client.wait_closed("x")
        await client.start("y", ["true"])
        await client.wait_closed("y")
        assert (await client.call("process/read", {"processId": "s0"}))["closed"]
        for number in (1, 2):
            await client.call("process/terminate", {"processId": f"s{number}"})


@pytest.mark.parametrize(
    "server_config", [ServerConfig(max_closed_processes_per_session=2, closed_ttl=100)]
)
async def test_past_max_closed_processes_per_session_the_oldest_closed_is_forgotten(
    connect: Any,
) -> None:
    """Each closed process holds up to retain_bytes until its closed TTL: past the cap
    the one that closed first is forgotten (not the one started first), exactly as if
    its TTL had passed; a process that has not closed is never forgotten."""
    with trio.fail_after(10):
        client = await connect()
        await client.start("running", ["sleep", "100"])
        await client.start("first", ["cat"], pipeStdin=True)  # closes when stdin does
        await client.start("second", ["true"])
        await client.wait_closed("second")
        await client.call(
            "process/write", {"processId": "first", "writeId": "w", "closeStdin": True}
        )
        await client.wait_closed("first")
        for process_id in ("second", "first"):  # two closed: at the cap, both kept
            assert (await client.call("process/read", {"processId": process_id}))["closed"]
        await client.start("third", ["true"])
        await client.wait_closed("third")
        reply = await client.request("process/read", {"processId": "second"})
        assert reply["error"] == {"code": INVALID_REQUEST, "message": "unknown process id second"}
        assert await client.call("process/terminate", {"processId": "second"}) == {"running": False}
        for process_id in ("first", "third"):
            assert (await client.call("process/read", {"processId": process_id}))["closed"]
        await client.start("fourth", ["true"])
        await client.wait_closed("fourth")
        reply = await client.request("process/read", {"processId": "first"})
        assert reply["error"] == {"code": INVALID_REQUEST, "message": "unknown process id first"}
        read = await client.call("process/read", {"processId": "running"})
        assert (read["exited"], read["closed"]) == (False, False)
        # A forgotten id is free again.
        client.notifications["second"].clear()
        await client.start("second", ["sh", "-c", "echo again"])
        events = await client.wait_closed("second")
        assert output_of(events) == b"again\n"
        assert await client.call("process/terminate", {"processId": "running"}) == {"running": True}


@pytest.mark.parametrize("server_config", [ServerConfig(max_detached_sessions=2)])
async def test_past_max_detached_sessions_the_oldest_detached_session_ends(
    connect: Any,
) -> None:
    with trio.fail_after(10):
        clients = [await connect() for _ in range(3)]
        pids = []
        for client in clients:
            await client.start("p", ["sh", "-c", "echo $$; exec sleep 100"])
            pids.append(await pid_of(client, "p"))
        sessions = [client.session_id for client in clients]
        for client in clients:  # detach in order: the first is the oldest
            await client.ws.aclose()
        await eventually(lambda: process_gone(pids[0]))
        fresh: RawClient = await connect(handshake=False)
        reply = await fresh.request(
            "initialize", {"clientName": "t", "resumeSessionId": sessions[0]}
        )
        assert reply["error"] == {
            "code": INVALID_REQUEST,
            "message": f"unknown session id {sessions[0]}",
        }
        # The two detached most recently live on, processes included.
        for session_id, pid in zip(sessions[1:], pids[1:], strict=True):
            resumed = await resume(connect, str(session_id))
            assert not process_gone(pid)
            assert (await resumed.call("process/terminate", {"processId": "p"}))["running"]


# --- concurrent requests -----------------------------------------------------------------


@pytest.mark.parametrize("server_config", [ServerConfig(max_concurrent_requests=2)])
async def test_past_max_concurrent_requests_further_requests_wait_in_order(
    connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    daemon = track_daemon(monkeypatch)
    gate = tmp_path / "go"
    with trio.fail_after(10):
        client = await connect()
        waiting = f"while [ ! -e {gate} ]; do sleep 0.01; done; echo done"
        await client.start("p", ["sh", "-c", waiting])
        order: list[str] = []

        async def request(name: str, method: str, params: Any = None) -> None:
            reply = await client.request(method, params)
            assert "result" in reply, reply
            order.append(name)

        read = {"processId": "p", "afterSeq": 0, "waitMs": 10_000}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(request, "read1", "process/read", read)
            nursery.start_soon(request, "read2", "process/read", read)
            await eventually(lambda: len(daemon.long_polls) == 2)
            nursery.start_soon(request, "status", "environment/status")
            # Both slots are held by long polls: the status request waits its turn.
            await eventually(lambda: daemon.requests_waiting() == 1)
            assert order == []
            gate.touch()  # output: the long polls return, and free their slots
        assert order[:2] == ["read1", "read2"] or order[:2] == ["read2", "read1"]
        assert order[2] == "status"
        # Handshake-order errors still come back in wire order afterwards.
        fresh: RawClient = await connect(handshake=False)
        replies = [await fresh.request("process/read", {"processId": "p"}) for _ in range(3)]
        assert [r["error"]["code"] for r in replies] == [INVALID_REQUEST] * 3


# --- handshake timeout (slowloris) -------------------------------------------------------


@pytest.mark.parametrize("server_config", [ServerConfig(handshake_timeout=0.3)])
async def test_a_partial_http_head_is_closed_after_the_handshake_timeout(daemon: str) -> None:
    with trio.fail_after(5):
        parts = urlsplit(daemon)
        assert parts.hostname is not None and parts.port is not None
        for trickle in (False, True):
            stream = await trio.open_tcp_stream(parts.hostname, parts.port)
            async with stream:
                started = trio.current_time()
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                received = b""
                with trio.move_on_after(3):
                    try:
                        while True:
                            if trickle:  # a byte at a time does not reset the clock
                                await stream.send_all(b"X")
                            with trio.move_on_after(0.05):
                                data = await stream.receive_some(65536)
                                if not data:
                                    break
                                received += data
                    except trio.BrokenResourceError:
                        pass  # closed with our trickled bytes unread: a reset
                elapsed = trio.current_time() - started
            assert 0.25 <= elapsed < 1.5, elapsed
            assert received.startswith(b"HTTP/1.1 408") or received == b""


async def test_a_silent_tls_client_is_closed_after_the_handshake_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(5):
        ca = trustme.CA()
        cert = tmp_path / "server.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert)
        url = await nursery.start(
            serve, ServerConfig(tls_cert=str(cert), handshake_timeout=0.3)
        )
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            started = trio.current_time()
            assert await stream.receive_some(65536) == b""  # no ClientHello: closed
            assert 0.25 <= trio.current_time() - started < 1.5
        # It still serves clients that do speak TLS.
        context = ssl.create_default_context()
        ca.configure_trust(context)
        ws = await trio_websocket.connect_websocket_url(nursery, url, ssl_context=context)
        await ws.aclose()


async def held_or_answered(stream: trio.abc.Stream, wait: float) -> bytes | None:
    """What the daemon sent before closing, or None if it still holds the socket."""
    received = b""
    with trio.move_on_after(wait):
        try:
            while data := await stream.receive_some(65536):
                received += data
        except trio.BrokenResourceError:
            pass
        return received
    return None


READYZ = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "server_config", [ServerConfig(max_pending_connections=2, handshake_timeout=30)]
)
async def test_past_max_pending_connections_new_sockets_wait_their_turn(daemon: str) -> None:
    with trio.fail_after(15):
        parts = urlsplit(daemon)
        assert parts.hostname is not None and parts.port is not None
        host, port = parts.hostname, parts.port
        # Two silent sockets take both places (their handshake timeout is far off);
        # the daemon accepts in backlog order, so these two are the accepted ones.
        silent = [await trio.open_tcp_stream(host, port) for _ in range(2)]
        waiting = await trio.open_tcp_stream(host, port)
        await waiting.send_all(READYZ)
        # Not accepted, so not answered (nor refused) while both places are taken.
        assert await held_or_answered(waiting, 0.5) is None
        await silent[0].aclose()  # its place comes free: the waiting one is served
        reply = await held_or_answered(waiting, 5)
        assert reply is not None and reply.startswith(b"HTTP/1.1 200 "), reply
        await waiting.aclose()
        # A burst of real clients through the one free place: each waits its turn
        # (an upgraded connection gives its place back), none is refused.
        connected: list[ExecClient] = []
        all_connected = trio.Event()

        async def connect_and_run() -> None:
            async with open_client(daemon) as client:
                assert (await client.run(["true"])).returncode == 0
                connected.append(client)
                if len(connected) == 20:
                    all_connected.set()
                await all_connected.wait()  # all 20 at once, through one place

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(connect_and_run)
        assert await held_or_answered(silent[1], 0.1) is None  # still waiting, untouched
        await silent[1].aclose()


@pytest.mark.parametrize("extra", [0, 1])
async def test_the_request_head_limit_is_exact(daemon: str, extra: int) -> None:
    """A head of exactly 64 KiB (through its blank line) is read; one byte more is
    refused, whatever the sizes of the reads it arrives in."""
    with trio.fail_after(5):
        parts = urlsplit(daemon)
        assert parts.hostname is not None and parts.port is not None
        start, end = b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"\r\n\r\n"
        pad = MAX_HEAD_BYTES - len(start) - len(end) + extra
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            try:
                await stream.send_all(start + b"a" * pad + end)
            except trio.BrokenResourceError:
                pass
            received = await held_or_answered(stream, 3)
        assert received is not None
        if extra:
            assert received.startswith(b"HTTP/1.1 400") or received == b"", received
        else:
            assert received.startswith(b"HTTP/1.1 200 "), received


async def test_a_request_head_over_64_kib_is_refused(daemon: str) -> None:
    with trio.fail_after(5):
        parts = urlsplit(daemon)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            try:
                await stream.send_all(b"GET / HTTP/1.1\r\nX: " + b"a" * 100_000)
            except trio.BrokenResourceError:
                pass
            received = b""
            try:
                while data := await stream.receive_some(65536):
                    received += data
            except trio.BrokenResourceError:
                pass  # the daemon closed with our bytes unread: a reset may beat the 400
        assert received.startswith(b"HTTP/1.1 400") or received == b""


# --- keepalive ---------------------------------------------------------------------------


async def silent_peer(url: str) -> tuple[trio.SocketStream, str]:
    """A WebSocket peer that completes the handshake and ``initialize``, then never
    reads again (so never answers a ping): a dead peer, as far as the daemon can tell."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    peer = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(peer.send(wsevents.Request(host=parts.netloc, target="/")))
    text = ""
    while True:
        data = await stream.receive_some(65536)
        assert data
        peer.receive_data(data)
        for event in peer.events():
            if isinstance(event, wsevents.AcceptConnection):
                initialize = {"id": 1, "method": "initialize", "params": {"clientName": "x"}}
                await stream.send_all(peer.send(wsevents.TextMessage(json.dumps(initialize))))
                await stream.send_all(peer.send(wsevents.TextMessage('{"method": "initialized"}')))
            elif isinstance(event, wsevents.TextMessage):
                text += event.data
                if event.message_finished:
                    return stream, json.loads(text)["result"]["sessionId"]


@pytest.mark.parametrize(
    "server_config", [ServerConfig(ping_interval=0.05, ping_timeout=0.3)]
)
async def test_a_peer_that_never_answers_pings_is_disconnected_and_detached(
    daemon: str, connect: Any
) -> None:
    with trio.fail_after(10):
        stream, session_id = await silent_peer(daemon)
        async with stream:
            started = trio.current_time()
            # While the dead connection holds the session, resuming it is -32010;
            # once the keepalive gives up on it, the session is detached and resumes.
            other: RawClient = await connect(handshake=False)
            while True:
                reply = await other.request(
                    "initialize", {"clientName": "t", "resumeSessionId": session_id}
                )
                if "result" in reply:
                    break
                assert reply["error"]["code"] == SESSION_ATTACHED
                await trio.sleep(0.02)
            elapsed = trio.current_time() - started
            assert 0.3 <= elapsed < 2.0, elapsed
            assert reply["result"]["sessionId"] == session_id


@pytest.mark.parametrize(
    "server_config", [ServerConfig(ping_interval=0.05, ping_timeout=0.2)]
)
async def test_an_idle_healthy_client_stays_connected(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await trio.sleep(1.0)  # ~20 pings, each answered by trio-websocket's reader
        assert client.ws.closed is None
        assert await client.call("environment/status") == {"status": "ready"}


@pytest.mark.parametrize(
    "server_config", [ServerConfig(ping_interval=0.05, ping_timeout=0.2)]
)
async def test_a_backpressured_client_is_not_mistaken_for_a_dead_one(daemon: str) -> None:
    """The client stops reading for many ping timeouts while the daemon has output for
    it: its pongs are stuck behind that output, but the daemon is blocked sending to
    it, which is not evidence of death. Nothing is lost once it reads again."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await _read_24_mib_after_a_long_stall(daemon, nursery)


async def _read_24_mib_after_a_long_stall(daemon: str, nursery: trio.Nursery) -> None:
    # No reader task of our own: the test reads by hand, and stops reading.
    ws = await trio_websocket.connect_websocket_url(
        nursery, daemon, message_queue_size=1, max_message_size=1 << 24
    )
    messages: list[dict[str, Any]] = []

    async def call(request_id: int, method: str, params: Any = None) -> dict[str, Any]:
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await ws.send_message(json.dumps(message))
        while True:
            reply = json.loads(await ws.get_message())
            if reply.get("id") == request_id:
                return reply
            messages.append(reply)

    assert "result" in await call(1, "initialize", {"clientName": "slow"})
    await ws.send_message('{"method": "initialized"}')
    total = 24 << 20
    start = {
        "processId": "big",
        "argv": ["head", "-c", str(total), "/dev/zero"],
        "cwd": "file://" + os.getcwd(),
        "env": {},
        "tty": False,
    }
    assert "result" in await call(2, "process/start", start)
    await trio.sleep(1.5)  # not reading: 30 ping intervals, 7 ping timeouts
    assert ws.closed is None
    received = 0
    while not any(m.get("method") == "process/closed" for m in messages):
        messages.append(json.loads(await ws.get_message()))
        message = messages[-1]
        if message.get("method") == "process/output":
            received += len(base64.b64decode(message["params"]["chunk"]))
            del messages[-1]
    assert received == total
    assert ws.closed is None
    await ws.aclose()


# --- the CLI -----------------------------------------------------------------------------


async def test_every_limit_is_a_serve_option(daemons: Any, connect: Any) -> None:
    with trio.fail_after(20):
        daemon: Daemon = await daemons(
            "--max-message-bytes", "100000",
            "--max-json-values", "1000",
            "--max-sessions", "1",
            "--max-processes-per-session", "5",
            "--max-closed-processes-per-session", "1",
            "--max-detached-sessions", "3",
            "--max-concurrent-requests", "7",
            "--handshake-timeout", "4",
            "--max-pending-connections", "1",
            "--ping-interval", "0",
            "--ping-timeout", "9",
            "--resume-probe-timeout", "3",
            "--shutdown-grace", "1",
        )  # fmt: skip
        client: RawClient = await connect(url=daemon.url)
        second: RawClient = await connect(url=daemon.url, handshake=False)
        reply = await second.request("initialize", {"clientName": "t"})
        assert "at most 1 sessions" in reply["error"]["message"]
        reply = await client.request("environment/status", {"x": [0] * 1001})
        assert reply["error"]["message"] == "message has more than 1000 JSON values"
        for process_id in ("a", "b"):
            await client.start(process_id, ["true"])
            await client.wait_closed(process_id)
        reply = await client.request("process/read", {"processId": "a"})
        assert reply["error"]["message"] == "unknown process id a"
        assert (await client.call("process/read", {"processId": "b"}))["closed"]
        parts = urlsplit(daemon.url)
        assert parts.hostname is not None and parts.port is not None
        silent = await trio.open_tcp_stream(parts.hostname, parts.port)
        waiting = await trio.open_tcp_stream(parts.hostname, parts.port)
        await waiting.send_all(READYZ)
        assert await held_or_answered(waiting, 0.5) is None  # the one place is taken
        await silent.aclose()
        reply = await held_or_answered(waiting, 5)
        assert reply is not None and reply.startswith(b"HTTP/1.1 200 ")
        await waiting.aclose()
        await client.ws.aclose()
        await second.ws.aclose()
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0
        for bad in (
            ("--max-sessions", "0"),
            ("--max-message-bytes", "-1"),
            ("--handshake-timeout", "0"),
            ("--resume-probe-timeout", "0"),
            ("--max-pending-connections", "0"),
        ):
            refused: Daemon = await daemons(*bad, wait_for_url=False)
            assert await refused.wait() == 2
            stderr = refused.stderr.decode()  # names the option, as a flag or a field
            assert bad[0] in stderr or bad[0].lstrip("-").replace("-", "_") in stderr


@pytest.mark.parametrize("server_config", [ServerConfig(max_json_values=1000)])
async def test_the_value_budget_holds_for_msgpack_too(daemon: str, nursery: trio.Nursery) -> None:
    """A msgpack value can take a single byte: 1,001 zeros fit in 1,005 bytes."""
    with trio.fail_after(5):
        ws = await trio_websocket.connect_websocket_url(
            nursery, daemon, subprotocols=[wire.MSGPACK_SUBPROTOCOL]
        )
        message = {"id": 1, "method": "environment/status", "params": {"x": [0] * 1001}}
        await ws.send_message(msgspec.msgpack.encode(message))
        reply = msgspec.msgpack.decode(await ws.get_message())
        assert reply["id"] == 1
        assert reply["error"]["message"] == "message has more than 1000 JSON values"
        message["params"] = {"x": [0] * 900}
        await ws.send_message(msgspec.msgpack.encode(message))
        reply = msgspec.msgpack.decode(await ws.get_message())
        # Under the budget it reaches the handshake check (no initialize was sent).
        assert reply["error"]["message"].startswith("client must call initialize")
        await ws.aclose()


async def test_a_result_over_the_message_limit_is_an_error_not_a_dropped_connection(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply the client would refuse (1009) would cost the connection, and a client
    that retries reads after a reconnect would ask again, forever: the daemon answers
    -32600 instead, and the connection keeps serving. (Shrunk here: the real limit is
    64 MiB, or a bigger --max-message-bytes.)"""
    monkeypatch.setattr(exec_runtime._daemon.connection, "CLIENT_MAX_MESSAGE_BYTES", 10_000)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 20_000)
    with trio.fail_after(10):
        url = await nursery.start(serve, ServerConfig(max_message_bytes=10_000))
        async with open_client(url) as client:
            with pytest.raises(exec_runtime.ProtocolError) as info:
                await client.fs.read_file(big)
            assert info.value.code == -32600
            assert "over the 10000-byte message limit" in info.value.message
            assert (await client.run(["true"])).returncode == 0
            assert client.statistics().reconnects == 0


async def test_a_reply_over_the_clients_limit_fails_that_call_and_is_not_asked_again(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon that sends a reply bigger than the client takes (another
    implementation, or ours with a bigger --max-message-bytes): the client closes the
    connection on it (1009); retrying the read after the reconnect would lose it again,
    forever. The call fails instead, once, and the client goes on."""
    monkeypatch.setattr(exec_runtime._client.connect, "CLIENT_MAX_MESSAGE_BYTES", 10_000)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 20_000)
    with trio.fail_after(10):
        url = await nursery.start(serve, ServerConfig())
        async with open_client(url) as client:
            with pytest.raises(exec_runtime.TransportError, match="over the client's"):
                await client.fs.read_file(big)
            assert (await client.run(["true"])).returncode == 0
            assert client.statistics().reconnects == 1
            assert client.statistics().calls["fs/readFile"] == 1
