"""Graceful shutdown of a real ``exec-runtime serve`` (PROTOCOL §3): on SIGTERM stop
accepting, SIGTERM every process group, SIGKILL after ``--shutdown-grace``, close every
WebSocket with 1001, exit 0 within 5 s, and leave no process behind."""

from __future__ import annotations

import functools
import signal
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from exec_runtime import ServerConfig, serve
from tests.support.daemon_process import Daemon, eventually, process_gone
from tests.support.wire_client import GOING_AWAY, RawClient, output_of, start_printing_pid


async def connection_refused(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    try:
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_sigterm_with_100_processes_terms_then_kills_and_exits_0_within_5_s(
    daemons: Any, connect: Any
) -> None:
    with trio.fail_after(30):
        daemon: Daemon = await daemons("--shutdown-grace", "2")
        client: RawClient = await connect(url=daemon.url)
        other: RawClient = await connect(url=daemon.url)
        pids: list[int] = []
        kinds = (
            # Die on SIGTERM (some in a PTY).
            [("sleeper", "exec sleep 1000", {})] * 50
            + [("tty", "exec sleep 1000", {"tty": True})] * 5
            # Ignore SIGTERM (inherited by sleep): only SIGKILL ends them.
            + [("stubborn", "trap '' TERM; exec sleep 1000", {})] * 20
            # Handle SIGTERM: they get to say goodbye, and the client still hears it.
            + [("polite", "trap 'echo got-term; exit 0' TERM; sleep 1000 & wait", {})] * 15
        )
        for number, (kind, script, params) in enumerate(kinds):
            pids.append(await start_printing_pid(client, f"{kind}{number}", script, **params))
        for number in range(10):  # a second session, detached when shutdown starts
            pids.append(await start_printing_pid(other, f"d{number}", "exec sleep 1000"))
        await other.ws.aclose()
        assert len(pids) == 100
        assert not any(process_gone(pid) for pid in pids)

        stopping_at = trio.current_time()
        daemon.process.send_signal(signal.SIGTERM)
        # During the grace period (the stubborn ones hold it open) no one gets in. The
        # polite ones saying goodbye show that the SIGTERMs went out, after the
        # listeners were closed.
        polite_ids = [f"polite{n}" for n, (kind, _, _) in enumerate(kinds) if kind == "polite"]
        await eventually(
            lambda: all(b"got-term" in output_of(client.notifications[p]) for p in polite_ids)
        )
        assert daemon.process.returncode is None
        assert await connection_refused(daemon.url)
        with trio.fail_after(5):
            assert await daemon.wait() == 0
        elapsed = trio.current_time() - stopping_at
        assert 1.9 <= elapsed < 5, elapsed  # the full grace, for the stubborn ones
        for pid in pids:
            assert process_gone(pid), pid
        # The polite processes were asked first (SIGTERM) and their goodbye and exit
        # reached the still-attached client before the close frame.
        polite = [f"polite{n}" for n, (kind, _, _) in enumerate(kinds) if kind == "polite"]
        for process_id in polite:
            events = client.notifications[process_id]
            assert b"got-term" in output_of(events), process_id
            exits = [m for m in events if m["method"] == "process/exited"]
            assert exits and exits[0]["params"]["exitCode"] == 0
        # The stubborn ones, SIGKILLed when the grace ran out, still reported how they
        # ended (137) and closed before the close frame: a client's run() completes.
        stubborn = [f"stubborn{n}" for n, (kind, _, _) in enumerate(kinds) if kind == "stubborn"]
        for process_id in stubborn:
            events = client.notifications[process_id]
            exits = [m["params"]["exitCode"] for m in events if m["method"] == "process/exited"]
            assert exits == [128 + signal.SIGKILL], (process_id, exits)
            assert events[-1]["method"] == "process/closed", process_id
        await eventually(lambda: client.ws.closed is not None)
        assert client.ws.closed is not None
        assert client.ws.closed.code == GOING_AWAY


async def test_sigterm_without_stubborn_processes_exits_at_once(
    daemons: Any, connect: Any
) -> None:
    with trio.fail_after(20):
        daemon: Daemon = await daemons("--shutdown-grace", "10")
        client: RawClient = await connect(url=daemon.url)
        pids = [await start_printing_pid(client, f"p{n}", "exec sleep 1000") for n in range(5)]
        # A leader that already exited, leaving a grandchild holding the pipes: its
        # group gets SIGTERM too, or the daemon would wait out the whole grace.
        await client.start("orphan", ["sh", "-c", "sleep 1000 & echo $!"])
        await eventually(
            lambda: any(m["method"] == "process/exited" for m in client.notifications["orphan"])
        )
        pids.append(int(output_of(client.notifications["orphan"])))
        daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(1.5):  # far less than the grace: everything closed at once
            assert await daemon.wait() == 0
        assert all(process_gone(pid) for pid in pids)
        await eventually(lambda: client.ws.closed is not None)
        assert client.ws.closed is not None and client.ws.closed.code == GOING_AWAY


async def test_a_second_signal_kills_every_group_at_once(daemons: Any, connect: Any) -> None:
    with trio.fail_after(20):
        daemon: Daemon = await daemons("--shutdown-grace", "60")
        client: RawClient = await connect(url=daemon.url)
        pid = await start_printing_pid(client, "stubborn", "trap '' TERM; exec sleep 1000")
        daemon.process.send_signal(signal.SIGTERM)
        # Logged as the SIGTERMs go out (in the same step): the grace has begun.
        await eventually(lambda: b"shutting down" in daemon.stderr)
        assert not process_gone(pid)  # still in its (long) grace period
        daemon.process.send_signal(signal.SIGINT)
        with trio.fail_after(3):
            assert await daemon.wait() == 0
        assert process_gone(pid)
        assert b"again" in daemon.stderr


async def test_a_client_that_never_answers_the_close_frame_does_not_hold_the_exit(
    daemons: Any,
) -> None:
    with trio.fail_after(20):
        daemon: Daemon = await daemons()
        parts = urlsplit(daemon.url)
        assert parts.hostname is not None and parts.port is not None
        # A raw peer: completes the upgrade, then never reads again.
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            await stream.send_all(
                f"GET / HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 101")
            started = trio.current_time()
            daemon.process.send_signal(signal.SIGTERM)
            with trio.fail_after(4):
                assert await daemon.wait() == 0
            assert trio.current_time() - started < 3


async def test_embedded_serve_shuts_down_gracefully_when_the_event_is_set(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        shutdown = trio.Event()
        done = trio.Event()
        config = ServerConfig(shutdown_grace=0.5)

        async def run(task_status: trio.TaskStatus[str]) -> None:
            await serve(config, shutdown=shutdown, task_status=task_status)
            done.set()

        url = await nursery.start(run)
        ws = await trio_websocket.connect_websocket_url(nursery, url)
        client = RawClient(ws, nursery)
        await client.handshake()
        stubborn = await start_printing_pid(client, "s", "trap '' TERM; exec sleep 1000")
        polite = await start_printing_pid(client, "p", "exec sleep 1000")
        started = trio.current_time()
        shutdown.set()
        await done.wait()
        assert 0.45 <= trio.current_time() - started < 2
        assert process_gone(stubborn) and process_gone(polite)
        exited = [m for m in client.notifications["p"] if m["method"] == "process/exited"]
        assert exited[0]["params"]["exitCode"] == 128 + signal.SIGTERM
        await eventually(lambda: ws.closed is not None)
        assert ws.closed is not None and ws.closed.code == GOING_AWAY


async def test_no_process_starts_during_the_shutdown_grace(nursery: trio.Nursery) -> None:
    """A process started after the SIGTERM went out would skip it and only be
    SIGKILLed: while the grace runs, a start is refused."""
    with trio.fail_after(10):
        shutdown = trio.Event()
        config = ServerConfig(shutdown_grace=1.0)
        url = await nursery.start(functools.partial(serve, config, shutdown=shutdown))
        ws = await trio_websocket.connect_websocket_url(nursery, url)
        client = RawClient(ws, nursery)
        await client.handshake()
        await start_printing_pid(client, "s", "trap '' TERM; exec sleep 1000")
        polite = "trap 'echo got-term; exit 0' TERM; sleep 1000 & wait"
        await start_printing_pid(client, "polite", polite)
        shutdown.set()
        # The polite one's goodbye: the SIGTERMs went out; the stubborn one holds the grace.
        await eventually(lambda: b"got-term" in output_of(client.notifications["polite"]))
        params = {"processId": "late", "argv": ["true"], "cwd": "file:///", "env": {}, "tty": False}
        reply = await client.request("process/start", params)
        assert reply["error"] == {"code": -32600, "message": "the daemon is shutting down"}
