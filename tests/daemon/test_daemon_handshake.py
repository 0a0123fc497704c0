"""The daemon at the wire: transports, the JSON-RPC dialect, handshake and sessions
(PROTOCOL.md §1-§3, §7), driven through a real WebSocket with a raw JSON client."""

from __future__ import annotations

import json
import os
import pathlib
import pwd
import uuid
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import trio
import trio_websocket
import wsproto
import wsproto.events as wsevents

from exec_runtime import ServerConfig
from exec_runtime._daemon import environment_info, server
from exec_runtime._daemon.environment_info import user_shell
from tests.support.daemon_process import eventually
from tests.support.wire_client import RawClient, WireError

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SESSION_ATTACHED = -32010


async def wait_messages(client: RawClient, count: int) -> list[dict[str, Any]]:
    """Every message the client has received, once there are at least ``count``."""
    await eventually(lambda: len(client.all_messages) >= count)
    return client.all_messages


async def http_exchange(url: str, request: bytes) -> bytes:
    """Send raw bytes to the daemon's TCP port; return everything until it closes."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        await stream.send_all(request)
        received = b""
        while data := await stream.receive_some(65536):
            received += data
    return received


def upgrade_request(url: str, extra: str = "") -> bytes:
    host = urlsplit(url).netloc
    return (
        f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


async def resume(connect: Any, session_id: str) -> RawClient:
    """A new connection resuming ``session_id``; retries -32010 while the daemon has not
    yet seen the old connection go away (the protocol marks -32010 retryable)."""
    client: RawClient = await connect(handshake=False)
    for _ in range(200):
        reply = await client.request(
            "initialize", {"clientName": "test", "resumeSessionId": session_id}
        )
        if "error" not in reply:
            await client.notify("initialized")
            client.session_id = reply["result"]["sessionId"]
            return client
        assert reply["error"]["code"] == SESSION_ATTACHED, reply
        await trio.sleep(0.01)
    raise AssertionError("the session never became resumable")


def error_of(reply: dict[str, Any]) -> tuple[int, str]:
    assert "result" not in reply, reply
    return reply["error"]["code"], reply["error"]["message"]


# --- §1 transports and framing ---------------------------------------------------------


async def test_readyz_answers_200_with_an_empty_body(daemon: str) -> None:
    with trio.fail_after(5):
        host = urlsplit(daemon).netloc
        request = f"GET /readyz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        head, _, body = (await http_exchange(daemon, request)).partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
        assert b"content-length: 0" in head.lower().split(b"\r\n")
        assert body == b""


async def test_a_browser_origin_is_refused_with_403(daemon: str) -> None:
    with trio.fail_after(5):
        reply = await http_exchange(
            daemon, upgrade_request(daemon, "Origin: http://evil.example\r\n")
        )
        assert reply.split(b"\r\n")[0] == b"HTTP/1.1 403 Forbidden"
        # The same handshake without an Origin upgrades.
        parts = urlsplit(daemon)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            await stream.send_all(upgrade_request(daemon))
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                assert data
                head += data
            assert head.split(b"\r\n")[0].startswith(b"HTTP/1.1 101")


async def test_replies_are_text_frames_and_binary_frames_are_accepted(
    daemon: str, nursery: trio.Nursery
) -> None:
    with trio.fail_after(5):
        ws = await trio_websocket.connect_websocket_url(nursery, daemon)
        # A binary frame holding JSON is as good as a text frame.
        initialize = {"id": 1, "method": "initialize", "params": {"clientName": "t"}}
        await ws.send_message(json.dumps(initialize).encode())
        reply = await ws.get_message()
        assert isinstance(reply, str)  # a text frame
        assert uuid.UUID(json.loads(reply)["result"]["sessionId"]).version == 4
        await ws.send_message(b'{"method": "initialized"}')
        await ws.send_message(b'{"id": 2, "method": "environment/status"}')
        reply = await ws.get_message()
        assert isinstance(reply, str)
        assert json.loads(reply) == {"id": 2, "result": {"status": "ready"}}
        await ws.aclose()


async def test_the_msgpack_subprotocol_uses_binary_frames_and_raw_bytes(
    daemon: str, nursery: trio.Nursery
) -> None:
    with trio.fail_after(5):
        ws = await trio_websocket.connect_websocket_url(
            nursery, daemon, subprotocols=["exec-runtime.msgpack.v1"]
        )
        assert ws.subprotocol == "exec-runtime.msgpack.v1"

        async def call(request_id: int, method: str, params: Any = None) -> Any:
            message: dict[str, Any] = {"id": request_id, "method": method}
            if params is not None:
                message["params"] = params
            await ws.send_message(msgspec.msgpack.encode(message))
            while True:
                frame = await ws.get_message()
                assert isinstance(frame, bytes)  # binary frames only
                reply = msgspec.msgpack.decode(frame)
                if reply.get("id") == request_id:
                    return reply["result"]
                notifications.append(reply)

        notifications: list[dict[str, Any]] = []
        assert "sessionId" in await call(1, "initialize", {"clientName": "t"})
        await ws.send_message(msgspec.msgpack.encode({"method": "initialized"}))
        start = {
            "processId": "p",
            "argv": ["sh", "-c", "printf out; exit 2"],
            "cwd": "file://" + os.getcwd(),
            "env": {},
        }
        assert await call(2, "process/start", start) == {"processId": "p", "sandboxType": "none"}
        while not any(m["method"] == "process/closed" for m in notifications):
            frame = await ws.get_message()
            assert isinstance(frame, bytes)
            notifications.append(msgspec.msgpack.decode(frame))
        notifications.sort(key=lambda m: m["params"]["seq"])
        assert [m["params"] for m in notifications] == [
            {"processId": "p", "seq": 1, "stream": "stdout", "chunk": b"out"},
            {"processId": "p", "seq": 2, "exitCode": 2, "sandboxDenied": False},
            {"processId": "p", "seq": 3},
        ]
        # Bytes fields are msgpack bin in both directions.
        read = await call(3, "process/read", {"processId": "p"})
        assert read["chunks"] == [{"seq": 1, "stream": "stdout", "chunk": b"out"}]
        await ws.aclose()


@pytest.mark.parametrize("server_config", [ServerConfig(ping_interval=0.05)])
async def test_the_daemon_pings(daemon: str) -> None:
    with trio.fail_after(5):
        parts = urlsplit(daemon)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            peer = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(peer.send(wsevents.Request(host=parts.netloc, target="/")))
            seen: list[type] = []
            while seen.count(wsevents.Ping) < 3:
                data = await stream.receive_some(65536)
                assert data
                peer.receive_data(data)
                for event in peer.events():
                    seen.append(type(event))
                    if isinstance(event, wsevents.Ping):
                        await stream.send_all(peer.send(event.response()))
            assert seen[0] is wsevents.AcceptConnection


@pytest.mark.parametrize("server_config", [ServerConfig(max_message_bytes=4096)])
async def test_a_message_over_the_size_limit_closes_the_connection(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        big = {"id": 9, "method": "environment/status", "x": "a" * 8192}
        await client.send_raw(json.dumps(big))
        await eventually(lambda: client.ws.closed is not None)
        assert not any(m.get("id") == 9 for m in client.all_messages)
        # Only that connection: the daemon keeps serving others.
        other = await connect()
        assert await other.call("environment/status") == {"status": "ready"}


async def test_a_message_with_too_many_json_values_is_rejected(connect: Any) -> None:
    with trio.fail_after(10):
        client = await connect()
        reply = await client.request("environment/status", {"x": [0] * 300_000})
        assert error_of(reply)[0] == INVALID_REQUEST
        assert "262144" in reply["error"]["message"]
        # Far below the limit is fine (unknown params members are ignored), and the
        # connection keeps serving.
        fine = await client.request("environment/status", {"x": [0] * 1000})
        assert fine["result"] == {"status": "ready"}


# --- §2 the JSON-RPC dialect -----------------------------------------------------------


async def test_malformed_json_gets_id_minus_one_and_the_connection_keeps_serving(
    connect: Any,
) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.send_raw("{this is not json")
        messages = await wait_messages(client, 2)
        assert messages[1]["id"] == -1
        assert messages[1]["error"]["code"] == INVALID_REQUEST
        assert await client.call("environment/status") == {"status": "ready"}
        # Before the handshake too.
        fresh = await connect(handshake=False)
        await fresh.send_raw(b"\xff\xfe not json either")
        messages = await wait_messages(fresh, 1)
        assert messages[0]["id"] == -1 and messages[0]["error"]["code"] == INVALID_REQUEST
        await fresh.handshake()
        assert await fresh.call("environment/status") == {"status": "ready"}


async def test_an_unknown_method_is_32601(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        code, message = error_of(await client.request("process/teleport", {"processId": "x"}))
        assert code == METHOD_NOT_FOUND
        assert "process/teleport" in message
        # Before the handshake an unknown method is still -32601.
        fresh = await connect(handshake=False)
        assert error_of(await fresh.request("nope"))[0] == METHOD_NOT_FOUND


async def test_invalid_params_are_32602_and_name_the_field(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        code, message = error_of(await client.request("process/read", {"processId": 5}))
        assert code == INVALID_PARAMS
        assert "processId" in message
        code, message = error_of(
            await client.request("process/start", {"processId": "p", "cwd": "file:///"})
        )
        assert code == INVALID_PARAMS
        assert "argv" in message
        code, message = error_of(
            await client.request("process/signal", {"processId": "p", "signal": "explode"})
        )
        assert code == INVALID_PARAMS
        assert "signal" in message
        code, message = error_of(await client.request("process/read", ["p"]))
        assert code == INVALID_PARAMS


async def test_a_jsonrpc_member_and_string_ids_are_accepted(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect(handshake=False)
        await client.send_raw(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": "init-1",
                    "method": "initialize",
                    "params": {"clientName": "t"},
                }
            )
        )
        await client.send_raw(json.dumps({"jsonrpc": "2.0", "method": "initialized"}))
        await client.send_raw(
            json.dumps({"jsonrpc": "2.0", "id": "s", "method": "environment/status"})
        )
        messages = await wait_messages(client, 2)
        assert messages[0]["id"] == "init-1" and "sessionId" in messages[0]["result"]
        assert messages[1] == {"id": "s", "result": {"status": "ready"}}


@pytest.mark.parametrize("method", ["environment/status", "environment/info"])
async def test_parameterless_methods_accept_params_absent_null_or_empty(
    connect: Any, method: str
) -> None:
    with trio.fail_after(5):
        client = await connect()
        base = {"method": method}
        variants = [base, {**base, "params": None}, {**base, "params": {}}]
        for number, message in enumerate(variants, start=100):
            await client.send_raw(json.dumps({"id": number, **message}))
        messages = await wait_messages(client, 4)
        replies = {m["id"]: m for m in messages[1:]}
        assert sorted(replies) == [100, 101, 102]
        assert all("result" in reply for reply in replies.values()), replies
        assert replies[100]["result"] == replies[101]["result"] == replies[102]["result"]


async def test_an_invalid_trace_carrier_is_ignored(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        for trace in [
            "garbage",
            42,
            {"traceparent": "not-a-traceparent"},
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        ]:
            reply = await client.request("environment/status", None, trace=trace)
            assert reply["result"] == {"status": "ready"}, (trace, reply)


async def test_a_response_to_an_id_never_sent_is_ignored(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.send_raw(json.dumps({"id": 999, "result": {"anything": 1}}))
        await client.send_raw(json.dumps({"id": 998, "result": None}))
        await client.send_raw(json.dumps({"id": 997, "error": {"code": 1, "message": "x"}}))
        await client.notify("some/unknownNotification", {"processId": "x"})
        # The reply to a request sent after them: the daemon has read them all (a
        # connection's frames are read in order), and answered none.
        assert await client.call("environment/status") == {"status": "ready"}
        ids = [m.get("id") for m in client.all_messages]
        assert not {997, 998, 999} & set(ids)
        assert not any("error" in m for m in client.all_messages)


# --- §3 handshake and sessions ---------------------------------------------------------


async def test_requests_before_initialize_fail_per_family(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect(handshake=False)
        cases = {
            "process/read": "exec",
            "fs/readFile": "filesystem",
            "environment/info": "environment info",
            "environment/status": "environment info",
        }
        for method, family in cases.items():
            reply = await client.request(method, {"processId": "p", "path": "file:///"})
            assert error_of(reply) == (
                INVALID_REQUEST,
                f"client must call initialize before using {family} methods",
            )


async def test_requests_before_initialized_fail_per_family(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect(handshake=False)
        await client.notify("initialized")  # too early: ignored
        await client.call("initialize", {"clientName": "t"})
        cases = {
            "process/start": "exec",
            "fs/getMetadata": "filesystem",
            "environment/info": "environment info",
        }
        for method, family in cases.items():
            reply = await client.request(method, {"processId": "p", "path": "file:///"})
            assert error_of(reply) == (
                INVALID_REQUEST,
                f"client must send initialized before using {family} methods",
            )
        await client.notify("initialized")
        assert await client.call("environment/status") == {"status": "ready"}


async def test_handshake_order_errors_keep_wire_order(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect(handshake=False)
        frames: list[dict[str, Any]] = [
            {"id": 1, "method": "process/read", "params": {"processId": "p"}},
            {"id": 2, "method": "environment/info"},
            {"id": 3, "method": "initialize", "params": {"clientName": "t"}},
            {"id": 4, "method": "fs/readFile", "params": {"path": "file:///etc/hostname"}},
            {"id": 5, "method": "process/terminate", "params": {"processId": "p"}},
            {"method": "initialized"},
            {"id": 6, "method": "environment/status"},
        ]
        # One burst, nothing awaited in between: the replies must come back in order.
        for frame in frames:
            await client.send_raw(json.dumps(frame))
        messages = await wait_messages(client, 6)
        assert [m["id"] for m in messages] == [1, 2, 3, 4, 5, 6]
        assert [m["error"]["message"] for m in messages if "error" in m] == [
            "client must call initialize before using exec methods",
            "client must call initialize before using environment info methods",
            "client must send initialized before using filesystem methods",
            "client must send initialized before using exec methods",
        ]
        assert "sessionId" in messages[2]["result"]
        assert messages[5]["result"] == {"status": "ready"}


async def test_a_second_initialize_is_refused(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        session_id = client.session_id
        reply = await client.request("initialize", {"clientName": "again"})
        assert error_of(reply) == (
            INVALID_REQUEST,
            "initialize may only be sent once per connection",
        )
        # Also with a resume of its own session.
        reply = await client.request(
            "initialize", {"clientName": "again", "resumeSessionId": session_id}
        )
        assert error_of(reply) == (
            INVALID_REQUEST,
            "initialize may only be sent once per connection",
        )
        assert await client.call("environment/status") == {"status": "ready"}


async def test_initialize_returns_a_fresh_uuid4_and_environment_info(connect: Any) -> None:
    with trio.fail_after(5):
        first = await connect(handshake=False)
        second = await connect(handshake=False)
        one = await first.call("initialize", {"clientName": "a"})
        two = await second.call("initialize", {"clientName": "b"})
        assert one["sessionId"] != two["sessionId"]
        for result in (one, two):
            assert uuid.UUID(result["sessionId"]).version == 4
            assert str(uuid.UUID(result["sessionId"])) == result["sessionId"]
            assert set(result["environmentInfo"]) >= {"shell", "executorVersion", "cwd"}


async def test_resume_reattaches_the_same_session(connect: Any) -> None:
    with trio.fail_after(5):
        first = await connect()
        session_id = first.session_id
        assert session_id is not None
        await first.start("p", ["sh", "-c", "echo hello"])
        await first.wait_closed("p")
        await first.ws.aclose()
        second = await resume(connect, session_id)
        assert second.session_id == session_id
        # Same session: the process id namespace is the one from before.
        result = await second.call("process/read", {"processId": "p"})
        assert result["closed"] is True
        assert [c["chunk"] for c in result["chunks"]] == ["aGVsbG8K"]  # "hello\n"


async def test_resume_while_attached_is_32010_and_initialize_may_be_retried(
    connect: Any,
) -> None:
    with trio.fail_after(5):
        first = await connect()
        session_id = first.session_id
        second = await connect(handshake=False)
        reply = await second.request(
            "initialize", {"clientName": "t", "resumeSessionId": session_id}
        )
        assert error_of(reply) == (
            SESSION_ATTACHED,
            f"session {session_id} is already attached to another connection",
        )
        # The failed initialize does not count: the same connection may initialize again.
        fresh = await second.handshake()
        assert fresh != session_id
        assert await second.call("environment/status") == {"status": "ready"}
        # The first connection is unaffected.
        assert await first.call("environment/status") == {"status": "ready"}


@pytest.mark.parametrize("server_config", [ServerConfig(resume_probe_timeout=1.0)])
async def test_a_resume_while_attached_leaves_a_live_connection_attached(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume makes the daemon ping the attached connection; one that answers
    keeps its session, and the resume keeps getting -32010."""
    probes_done: list[None] = []
    run_probe = server._ResumeProbe._run

    async def counted(probe: server._ResumeProbe) -> None:
        await run_probe(probe)
        probes_done.append(None)

    monkeypatch.setattr(server._ResumeProbe, "_run", counted)
    with trio.fail_after(5):
        first = await connect()
        session_id = first.session_id
        second = await connect(handshake=False)
        resume = {"clientName": "t", "resumeSessionId": session_id}
        assert error_of(await second.request("initialize", resume))[0] == SESSION_ATTACHED
        await eventually(lambda: probes_done)  # the probe is over: the ping was answered
        assert error_of(await second.request("initialize", resume))[0] == SESSION_ATTACHED
        assert await first.call("environment/status") == {"status": "ready"}


async def test_resume_of_an_unknown_session_is_32600(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect(handshake=False)
        unknown = str(uuid.uuid4())
        reply = await client.request("initialize", {"clientName": "t", "resumeSessionId": unknown})
        assert error_of(reply) == (INVALID_REQUEST, f"unknown session id {unknown}")
        # Still not initialized: the next request is a handshake-order error.
        reply = await client.request("process/read", {"processId": "p"})
        assert error_of(reply) == (
            INVALID_REQUEST,
            "client must call initialize before using exec methods",
        )


async def test_sessions_own_their_process_id_namespace(connect: Any) -> None:
    with trio.fail_after(5):
        first = await connect()
        second = await connect()
        await first.start("same", ["sh", "-c", "echo first"])
        await second.start("same", ["sh", "-c", "echo second"])
        one = await first.read_all("same")
        two = await second.read_all("same")
        assert [c["chunk"] for c in one["chunks"]] == ["Zmlyc3QK"]  # first\n
        assert [c["chunk"] for c in two["chunks"]] == ["c2Vjb25kCg=="]  # second\n
        with pytest.raises(WireError) as caught:
            await second.start("same", ["true"])
        assert (caught.value.code, caught.value.message) == (
            INVALID_REQUEST,
            "process same already exists",
        )



async def test_validation_order_of_a_start_and_an_open_follows_codex(
    connect: Any, tmp_path: pathlib.Path
) -> None:
    """Found by the differential suite (issue 14): with an id in use, a start with a
    missing cwd is "already exists" (Codex checks the id before spawning), a malformed
    cwd URI stays -32602; an fs/open of a missing path with a handle id in use is the
    path's error (Codex opens first)."""
    missing = (tmp_path / "missing").as_uri()
    with trio.fail_after(10):
        client = await connect()
        await client.start("taken", ["sleep", "30"])
        reply = await client.request(
            "process/start",
            {"processId": "taken", "argv": ["true"], "cwd": missing, "env": {}, "tty": False},
        )
        assert error_of(reply) == (INVALID_REQUEST, "process taken already exists")
        reply = await client.request(
            "process/start",
            {"processId": "taken", "argv": ["true"], "cwd": "file:x", "env": {}, "tty": False},
        )
        assert error_of(reply)[0] == INVALID_PARAMS
        (tmp_path / "file").write_bytes(b"x")
        opened = await client.request(
            "fs/open", {"handleId": "h", "path": (tmp_path / "file").as_uri()}
        )
        assert "result" in opened, opened
        reply = await client.request("fs/open", {"handleId": "h", "path": missing})
        assert error_of(reply)[0] == -32004  # not found, not "already open"
        reply = await client.request(
            "fs/open", {"handleId": "h", "path": (tmp_path / "file").as_uri()}
        )
        assert error_of(reply) == (INVALID_REQUEST, "handle id 'h' is already open")
        await client.call("process/terminate", {"processId": "taken"})

# --- §7 environment methods ------------------------------------------------------------


def host_facts(temp_dir: str) -> tuple[str, bool]:
    return os.path.expanduser("~"), os.path.isdir(temp_dir)


def test_info_shell_is_the_login_shell_when_a_host_can_drive_it() -> None:
    # Codex reports the passwd shell and ignores $SHELL; bash then sh from PATH otherwise.
    found = {"bash": "/usr/bin/bash", "sh": "/usr/bin/sh"}.get
    assert user_shell("/bin/sh", found) == "/bin/sh"
    assert user_shell("/usr/sbin/nologin", found) == "/usr/bin/bash"
    assert user_shell(None, found) == "/usr/bin/bash"
    assert user_shell("/no/such/bash", found) == "/usr/bin/bash"
    assert user_shell(None, {"sh": "/usr/bin/sh"}.get) == "/usr/bin/sh"
    assert user_shell(None, lambda name: None) == "/bin/sh"


async def test_environment_info_ignores_dollar_shell(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHELL", "/nonexistent/fish")
    with trio.fail_after(5):
        client = await connect()
        info = await client.call("environment/info")
    login = pwd.getpwuid(os.getuid()).pw_shell
    assert info["shell"]["path"] == user_shell(login)
    assert info["shell"]["path"] != "/nonexistent/fish"


async def test_environment_info_shape(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        info = await client.call("environment/info")
        assert set(info) == {
            "shell",
            "executorVersion",
            "cwd",
            "userHomeDir",
            "platformOs",
            "tempDir",
            "capabilities",
        }
        assert set(info["shell"]) == {"name", "path"}
        assert os.path.isabs(info["shell"]["path"])
        assert info["shell"]["name"] == os.path.basename(info["shell"]["path"])
        assert info["cwd"] == pathlib.Path(os.getcwd()).as_uri()  # a file: URI, as Codex
        home, temp_is_dir = host_facts(info["tempDir"])
        assert info["userHomeDir"] == home
        assert info["platformOs"] == "linux"
        assert temp_is_dir
        assert isinstance(info["executorVersion"], str) and info["executorVersion"]
        assert isinstance(info["capabilities"], dict)


async def test_the_executor_version_is_read_from_package_metadata_once(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``importlib.metadata.version`` scans every distribution on the path (about 0.9 ms
    here): once per daemon, not once per ``initialize`` and ``environment/info``."""
    reads: list[str] = []

    def version(name: str) -> str:
        reads.append(name)
        return "9.9.9"

    monkeypatch.setattr(environment_info.metadata, "version", version)
    forget = getattr(environment_info.executor_version, "cache_clear", lambda: None)
    forget()
    try:
        with trio.fail_after(5):
            for _ in range(2):
                client = await connect()  # each connect initializes
                info = await client.call("environment/info")
                assert info["executorVersion"] == "9.9.9"
        assert reads == ["exec-runtime"]
    finally:
        forget()


async def test_environment_status_is_ready(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        reply = await client.request("environment/status")
        assert reply == {"id": reply["id"], "result": {"status": "ready"}}


async def test_a_result_the_wire_cannot_carry_is_32603_and_the_connection_serves_on(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of ours (here a status result holding an unencodable string) answers
    -32603 for that request; it neither closes the connection nor crashes the daemon."""
    from exec_runtime._daemon.connection import Connection

    async def broken_status(self: Connection, params: Any) -> dict[str, str]:
        return {"status": "bad\udcff"}  # a lone surrogate: not UTF-8

    monkeypatch.setattr(Connection, "_environment_status", broken_status)
    with trio.fail_after(5):
        client = await connect()
        reply = await client.request("environment/status")
        assert reply["error"]["code"] == -32603
        assert "cannot be encoded" in reply["error"]["message"]
        assert (await client.call("environment/info"))["platformOs"]
