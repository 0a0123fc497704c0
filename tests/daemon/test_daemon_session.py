"""Sessions across connections at the wire: detach, resume, TTL, retention while detached,
backpressure while attached (PROTOCOL.md §3, §5, §6)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

import protocol_schema as wire
from exec_runtime import ServerConfig
from exec_runtime._core.events import SeqEvent
from exec_runtime._daemon.child import Child
from exec_runtime._daemon.managed import State
from exec_runtime._daemon.rpc_error import RpcError
from exec_runtime._daemon.session import Session
from tests.support.daemon_process import children_of, eventually, process_gone
from tests.support.daemon_state import blocked_writing, track_daemon
from tests.support.wire_client import RawClient, output_of

INVALID_REQUEST = -32600
SESSION_ATTACHED = -32010


async def resume(connect: Any, session_id: str) -> RawClient:
    """A new connection resuming ``session_id``; retries -32010 while the daemon has not
    yet seen the old connection go away (the protocol marks -32010 retryable)."""
    client: RawClient = await connect(handshake=False)
    for _ in range(200):
        reply = await client.request(
            "initialize", {"clientName": "test", "resumeSessionId": session_id}
        )
        if "error" not in reply:
            assert reply["result"]["sessionId"] == session_id
            await client.notify("initialized")
            client.session_id = session_id
            return client
        assert reply["error"]["code"] == SESSION_ATTACHED, reply
        await trio.sleep(0.01)
    raise AssertionError("the session never became resumable")


def decoded(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(c["chunk"]) for c in chunks)


async def test_detach_then_resume_and_read_what_was_produced_meanwhile(
    connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    daemon = track_daemon(monkeypatch)
    gate = tmp_path / "detached"
    with trio.fail_after(5):
        first = await connect()
        session_id = first.session_id
        script = f"echo before; while [ ! -e {gate} ]; do sleep 0.01; done; echo while-detached"
        await first.start("p", ["sh", "-c", script])
        await eventually(lambda: output_of(first.notifications["p"]) == b"before\n")
        await first.ws.aclose()
        await eventually(lambda: daemon.detached(session_id))
        gate.touch()
        await eventually(lambda: daemon.closed("p"))  # it finished while nobody is attached
        second = await resume(connect, session_id)
        read = await second.call("process/read", {"processId": "p", "waitMs": 3000})
        assert read["closed"] is True and read["exitCode"] == 0
        assert [(c["seq"], base64.b64decode(c["chunk"])) for c in read["chunks"]] == [
            (1, b"before\n"),
            (2, b"while-detached\n"),
        ]
        assert read["nextSeq"] == 5
        # Nothing was pushed to anyone while detached, and nothing is replayed on resume:
        # a later process's pushes reach the new connection, and still none for p.
        await second.start("q", ["true"])
        await second.wait_closed("q")
        assert second.notifications["p"] == []
        assert [m["params"]["seq"] for m in first.notifications["p"]] == [1]


async def test_notifications_go_only_to_the_attached_connection(connect: Any) -> None:
    with trio.fail_after(5):
        first = await connect()
        bystander = await connect()  # another session entirely
        session_id = first.session_id
        await first.start("p", ["sh", "-c", "echo one; read x; echo two"], pipeStdin=True)
        await eventually(lambda: output_of(first.notifications["p"]) == b"one\n")
        await first.ws.aclose()
        second = await resume(connect, session_id)
        params = {"processId": "p", "writeId": "go", "chunk": base64.b64encode(b"x\n").decode()}
        assert await second.call("process/write", params) == {"status": "accepted"}
        events = await second.wait_closed("p")
        # From the resume on, the new connection gets the pushes (seq 2 onwards).
        assert [m["params"]["seq"] for m in events] == [2, 3, 4]
        assert output_of(events) == b"two\n"
        assert [m["params"]["seq"] for m in first.notifications["p"]] == [1]
        assert bystander.notifications["p"] == []
        assert all(not messages for messages in bystander.notifications.values())


async def test_a_process_keeps_running_while_detached(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = track_daemon(monkeypatch)
    with trio.fail_after(5):
        first = await connect()
        session_id = first.session_id
        await first.start("p", ["sh", "-c", "echo $$; exec sleep 100"])
        await eventually(lambda: output_of(first.notifications["p"]))
        pid = int(output_of(first.notifications["p"]))
        await first.ws.aclose()
        await eventually(lambda: daemon.detached(session_id))
        assert not process_gone(pid)
        # ... and the terminate after the resume finds it still running.
        second = await resume(connect, session_id)
        assert await second.call("process/terminate", {"processId": "p"}) == {"running": True}
        read = await second.read_all("p")
        assert read["exitCode"] == 137
        await eventually(lambda: process_gone(pid))


@pytest.mark.parametrize("server_config", [ServerConfig(detached_ttl=0.5)])
async def test_detached_ttl_expiry_kills_the_processes_and_forgets_the_session(
    connect: Any,
) -> None:
    with trio.fail_after(5):
        client = await connect()
        session_id = client.session_id
        # The leader and a grandchild in its group.
        await client.start("p", ["sh", "-c", "sleep 100 & echo $$ $!; wait"])
        await eventually(lambda: output_of(client.notifications["p"]).endswith(b"\n"))
        pids = [int(word) for word in output_of(client.notifications["p"]).split()]
        # Attached for longer than the TTL: nothing happens.
        await trio.sleep(0.7)
        assert not any(process_gone(pid) for pid in pids)
        await client.ws.aclose()
        began = trio.current_time()
        await eventually(lambda: all(process_gone(pid) for pid in pids))
        assert trio.current_time() - began >= 0.4
        fresh = await connect(handshake=False)
        reply = await fresh.request(
            "initialize", {"clientName": "t", "resumeSessionId": session_id}
        )
        assert reply["error"] == {
            "code": INVALID_REQUEST,
            "message": f"unknown session id {session_id}",
        }


@pytest.mark.parametrize("server_config", [ServerConfig(detached_ttl=1.0)])
async def test_resuming_within_the_ttl_keeps_the_session(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = track_daemon(monkeypatch)
    with trio.fail_after(10):
        client = await connect()
        session_id = client.session_id
        await client.start("p", ["sh", "-c", "echo $$; exec sleep 100"])
        await eventually(lambda: output_of(client.notifications["p"]))
        pid = int(output_of(client.notifications["p"]))
        # Detached 0.3 s at a time (the sleep is the behaviour: 1.2 s in all, never
        # the 1 s TTL in a row; the 0.7 s margin absorbs a slow resume).
        for _ in range(4):
            await client.ws.aclose()
            await eventually(lambda: daemon.detached(session_id))
            await trio.sleep(0.3)
            client = await resume(connect, session_id)
        assert not process_gone(pid)
        assert await client.call("process/terminate", {"processId": "p"}) == {"running": True}


@pytest.mark.parametrize("server_config", [ServerConfig(detached_ttl=0.2)])
async def test_a_session_whose_processes_are_being_killed_cannot_be_resumed(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expiry kills and reaps every process before the session is gone, which takes a
    while: meanwhile the session has ended, and a resume must not bring it back (a
    process started in it would be killed without an exit or a close)."""
    killing, release = trio.Event(), trio.Event()
    real_aclose = Child.aclose

    async def held_aclose(child: Child) -> None:
        killing.set()  # only a cancelled process is closed here: the session is ending
        await release.wait()
        await real_aclose(child)

    monkeypatch.setattr(Child, "aclose", held_aclose)
    with trio.fail_after(5):
        client = await connect()
        session_id = client.session_id
        await client.start("p", ["sleep", "100"])
        await client.ws.aclose()
        await killing.wait()
        fresh: RawClient = await connect(handshake=False)
        reply = await fresh.request(
            "initialize", {"clientName": "t", "resumeSessionId": session_id}
        )
        release.set()
        assert reply.get("error") == {
            "code": INVALID_REQUEST,
            "message": f"unknown session id {session_id}",
        }


class _Sink:
    async def send_process_events(self, process_id: str, events: list[SeqEvent]) -> None:
        pass

    def probe(self) -> None:
        pass

    @property
    def flushed(self) -> bool:
        return True


def _start_params(process_id: str, argv: list[str]) -> wire.ProcessStartParams:
    return wire.ProcessStartParams(
        process_id=process_id,
        argv=argv,
        cwd="file://" + os.getcwd(),
        env=dict(os.environ),
        tty=False,
    )


async def test_a_start_pending_when_the_session_ends_answers_that_it_ended() -> None:
    """The start (held in the starting state by the test hook) runs under its request,
    not in the session's nursery: the session's end must still answer it, not start a
    process into a nursery that kills it before it reports an exit or a close."""
    session = Session("s1", ServerConfig(_start_delay=1.0))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            session.attach(_Sink())
            outcome: list[object] = []

            async def start() -> None:
                try:
                    await session.start_process(_start_params("p", ["sleep", "100"]))
                except RpcError as exc:
                    outcome.append(exc)
                else:
                    outcome.append("started")

            nursery.start_soon(start)
            await eventually(
                lambda: (m := session.get("p")) is not None and m.state is State.STARTING
            )
            session.close()
            await eventually(lambda: outcome)
            assert len(outcome) == 1 and isinstance(outcome[0], RpcError)
            assert (outcome[0].code, outcome[0].message) == (
                INVALID_REQUEST,
                "session s1 has ended",
            )
            assert session.get("p") is None
            with pytest.raises(RpcError, match="session s1 has ended"):
                await session.start_process(_start_params("q", ["true"]))


@pytest.mark.parametrize("server_config", [ServerConfig(retain_bytes=100)])
async def test_retention_is_bounded_while_detached(
    connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    daemon = track_daemon(monkeypatch)
    with trio.fail_after(5):
        first = await connect()
        session_id = first.session_id
        lines = [b"line%d-padding-padding\n" % i for i in range(10, 20)]  # 23 bytes each
        gate = tmp_path / "detached"
        script = (
            f"while [ ! -e {gate} ]; do sleep 0.01; done; "
            "for i in $(seq 10 19); do echo line$i-padding-padding; sleep 0.02; done"
        )
        await first.start("p", ["sh", "-c", script])
        await first.ws.aclose()
        await eventually(lambda: daemon.detached(session_id))
        gate.touch()  # all its output comes while detached
        await eventually(lambda: daemon.closed("p"))
        second = await resume(connect, session_id)
        read = await second.read_all("p")
        retained = decoded(read["chunks"])
        seqs = [c["seq"] for c in read["chunks"]]
        assert read["closed"] is True and read["exitCode"] == 0
        # The oldest whole chunks were evicted: what is left is the newest output,
        # contiguous up to the exit, as much as fits the byte bound.
        assert read["earliestRetainedSeq"] > 1
        assert read["earliestRetainedSeq"] == seqs[0]
        assert seqs == list(range(seqs[0], read["nextSeq"] - 2))
        assert b"".join(lines).endswith(retained)
        assert retained.endswith(lines[-1])
        assert len(retained) <= 100
        assert len(retained) + len(lines[0]) > 100  # the next older chunk did not fit
        # Reading from before the window returns only what is retained.
        read = await second.call("process/read", {"processId": "p", "afterSeq": 0})
        assert read["chunks"][0]["seq"] == read["earliestRetainedSeq"]
        # The exit and close are state, never evicted.
        assert (read["exited"], read["exitCode"], read["closed"]) == (True, 0, True)


@pytest.mark.parametrize("server_config", [ServerConfig(retain_chunks=3)])
async def test_retention_is_bounded_by_chunk_count(connect: Any, tmp_path: Path) -> None:
    with trio.fail_after(5):
        client = await connect()
        # Each line waits until the one before it has arrived: six chunks, never fewer
        # (a pause between the echos merged two of them on a loaded machine).
        gate = f'while [ ! -e "{tmp_path}/go$i" ]; do sleep 0.002; done'
        script = f"for i in 1 2 3 4 5 6; do echo $i; {gate}; done"
        await client.start("p", ["sh", "-c", script])
        for i in range(1, 7):
            line = b"%d\n" % i
            await eventually(lambda line=line: output_of(client.notifications["p"]).endswith(line))
            (tmp_path / f"go{i}").touch()
        events = await client.wait_closed("p")
        assert output_of(events) == b"1\n2\n3\n4\n5\n6\n"
        assert [m["params"]["seq"] for m in events] == list(range(1, 9))
        read = await client.call("process/read", {"processId": "p"})
        assert [(c["seq"], c["chunk"]) for c in read["chunks"]] == [
            (4, base64.b64encode(b"4\n").decode()),
            (5, base64.b64encode(b"5\n").decode()),
            (6, base64.b64encode(b"6\n").decode()),
        ]
        assert (read["earliestRetainedSeq"], read["nextSeq"]) == (4, 9)


@pytest.mark.parametrize("server_config", [ServerConfig(retain_bytes=4096)])
async def test_a_slow_client_loses_nothing_and_slows_the_child(
    daemon: str, nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = track_daemon(monkeypatch)
    with trio.fail_after(15):
        size = 24_000_000
        done = tmp_path / "done"
        # A raw WebSocket we read only when we choose to: the slow client.
        ws = await trio_websocket.connect_websocket_url(
            nursery, daemon, message_queue_size=1, max_message_size=16 << 20
        )
        await ws.send_message('{"id": 1, "method": "initialize", "params": {"clientName": "t"}}')
        session_id = json.loads(await ws.get_message())["result"]["sessionId"]
        await ws.send_message('{"method": "initialized"}')
        script = f"head -c {size} /dev/zero; touch {done}"
        start = {
            "id": 2,
            "method": "process/start",
            "params": {
                "processId": "p",
                "argv": ["sh", "-c", script],
                "cwd": "file://" + os.getcwd(),
                "env": dict(os.environ),
                "tty": False,
            },
        }
        await ws.send_message(json.dumps(start))
        # Not reading: the daemon waits on the connection, and the child on its pipe.
        def held_back() -> bool:
            pid = state.child_pid("p")
            return (
                pid is not None
                and state.publishing(session_id)
                and any(blocked_writing(child) for child, _ in children_of(pid))
            )

        await eventually(held_back)
        assert not done.exists()
        received = 0
        seqs: list[int] = []
        methods: list[str] = []
        while "process/closed" not in methods:
            message = json.loads(await ws.get_message())
            if "method" not in message:
                assert message == {"id": 2, "result": {"processId": "p", "sandboxType": "none"}}
                continue
            methods.append(message["method"])
            seqs.append(message["params"]["seq"])
            if message["method"] == "process/output":
                chunk = base64.b64decode(message["params"]["chunk"])
                assert chunk.count(0) == len(chunk)
                received += len(chunk)
        assert received == size
        assert seqs == list(range(1, len(seqs) + 1))
        assert methods[-2:] == ["process/exited", "process/closed"]
        assert done.exists()
        await ws.aclose()
