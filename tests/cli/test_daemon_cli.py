"""``exec-runtime serve`` and ``exec-runtime schema`` as real subprocesses (PROTOCOL.md §1,
§3 shutdown, §6 options): the URL line, logs on stderr, SIGTERM/SIGINT, stdio, zombies,
option validation, signals inherited from the daemon's launcher."""

from __future__ import annotations

import array
import base64
import fcntl
import json
import math
import os
import re
import signal
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from exec_runtime import ServerConfig
from exec_runtime._cli.main import _build_parser, serve_options
from exec_runtime._cli.main import main as cli_main
from tests.support.daemon_process import (
    Daemon,
    _drain,
    eventually,
    process_gone,
    spawned_children_of,
)
from tests.support.daemon_process import spawn_daemon as start_daemon
from tests.support.wire_client import RawClient, output_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def spawn_daemon(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    """Start ``python -m exec_runtime serve ARGS``; killed at teardown if still running."""
    daemons: list[Daemon] = []

    async def spawn(*args: str, stdin: bool = False) -> Daemon:
        daemon = await start_daemon(nursery, *args, wait_for_url=False, stdin=stdin)
        daemons.append(daemon)
        return daemon

    yield spawn
    for daemon in daemons:
        await daemon.kill()


async def started(spawn_daemon: Any, *args: str) -> Daemon:
    daemon: Daemon = await spawn_daemon(*args)
    await eventually(lambda: b"\n" in daemon.stdout or daemon.process.returncode is not None)
    assert daemon.process.returncode is None, daemon.stderr.decode()
    return daemon


async def test_serve_prints_exactly_the_url_and_logs_to_stderr(
    spawn_daemon: Any, connect: Any
) -> None:
    with trio.fail_after(10):
        daemon = await started(spawn_daemon)
        assert re.fullmatch(rb"ws://127\.0\.0\.1:\d+\n", bytes(daemon.stdout))
        client: RawClient = await connect(url=daemon.url)
        assert await client.call("environment/status") == {"status": "ready"}
        await client.ws.aclose()
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0
        # Still exactly one line on stdout; the logs went to stderr.
        assert bytes(daemon.stdout) == f"{daemon.url}\n".encode()
        assert f"listening on {daemon.url}" in daemon.stderr.decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_kills_every_process_group_and_exits_0(
    spawn_daemon: Any, connect: Any, signum: int
) -> None:
    with trio.fail_after(10):
        daemon = await started(spawn_daemon)
        client: RawClient = await connect(url=daemon.url)
        await client.start("sleeper", ["sh", "-c", "echo $$; exec sleep 1000"])
        await client.start("group", ["sh", "-c", "sleep 1000 & echo $$ $!; wait"])
        await eventually(lambda: output_of(client.notifications["sleeper"]).endswith(b"\n"))
        await eventually(lambda: output_of(client.notifications["group"]).endswith(b"\n"))
        pids = [
            int(word)
            for process_id in ("sleeper", "group")
            for word in output_of(client.notifications[process_id]).split()
        ]
        assert len(pids) == 3
        assert not any(process_gone(pid) for pid in pids)
        # A detached session's processes are killed too.
        other: RawClient = await connect(url=daemon.url)
        await other.start("detached", ["sh", "-c", "echo $$; exec sleep 1000"])
        await eventually(lambda: output_of(other.notifications["detached"]).endswith(b"\n"))
        pids.append(int(output_of(other.notifications["detached"])))
        await other.ws.aclose()
        daemon.process.send_signal(signum)
        # Prompt: the still-connected client answers the close handshake at once.
        with trio.fail_after(1.5):
            assert await daemon.wait() == 0
        for pid in pids:
            assert process_gone(pid), pid
        assert bytes(daemon.stdout) == f"{daemon.url}\n".encode()


async def test_window_options_are_honoured(spawn_daemon: Any, connect: Any) -> None:
    with trio.fail_after(10):
        daemon = await started(spawn_daemon, "--retain-bytes", "10", "--closed-ttl", "0.2")
        client: RawClient = await connect(url=daemon.url)
        await client.start("p", ["sh", "-c", "printf 0123456789abcdef"])
        events = await client.wait_closed("p")
        assert output_of(events) == b"0123456789abcdef"  # pushed in full
        read = await client.call("process/read", {"processId": "p"})
        # The 16-byte chunk does not fit a 10-byte window.
        assert (read["chunks"], read["nextSeq"], read["earliestRetainedSeq"]) == ([], 4, 4)
        # Forgotten once its closed TTL passed: poll the daemon (the fail_after bounds it).
        while "error" not in (reply := await client.request("process/read", {"processId": "p"})):  # noqa: ASYNC110
            await trio.sleep(0.02)
        assert reply["error"] == {"code": -32600, "message": "unknown process id p"}
        await client.ws.aclose()
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_a_bad_listen_address_fails_with_a_message(spawn_daemon: Any) -> None:
    with trio.fail_after(10):
        daemon: Daemon = await spawn_daemon("--listen", "http://127.0.0.1:1")
        assert await daemon.wait() != 0
        assert bytes(daemon.stdout) == b""
        assert "--listen" in daemon.stderr.decode()


def unread_bytes(stream: Any) -> int:
    """Bytes written to a pipe that its reader has not read yet (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(stream.fileno(), termios.FIONREAD, count)
    return count[0]


async def test_stdio_serves_one_message_per_line(spawn_daemon: Any) -> None:
    with trio.fail_after(10):
        daemon: Daemon = await spawn_daemon("--listen", "stdio", stdin=True)
        stdin = daemon.process.stdin
        assert stdin is not None

        def lines() -> list[dict[str, Any]]:
            return [json.loads(line) for line in daemon.stdout.splitlines() if line]

        start = {
            "id": 3,
            "method": "process/start",
            "params": {
                "processId": "p",
                "argv": ["sh", "-c", "printf out; printf err >&2; exit 7"],
                "cwd": "file://" + os.getcwd(),
                "env": dict(os.environ),
                "tty": False,
            },
        }
        # \r\n and \n endings, blank lines skipped, a line split across writes.
        await stdin.send_all(b'\r\n\n{"id": 1, "method": "initialize", ')
        await eventually(lambda: unread_bytes(stdin) == 0)  # the daemon read the first part
        await stdin.send_all(b'"params": {"clientName": "t"}}\r\n')
        await stdin.send_all(b'{"method": "initialized"}\n\n\r\n')
        await stdin.send_all(b"this is not json\n")
        await stdin.send_all(json.dumps(start).encode() + b"\r\n")
        await eventually(
            lambda: (
                any(m.get("method") == "process/closed" for m in lines())
                and any(m.get("id") == 3 for m in lines())
            )
        )
        messages = lines()
        # No URL line in stdio mode: the first line is the initialize reply.
        assert messages[0]["id"] == 1 and "sessionId" in messages[0]["result"]
        assert messages[1]["id"] == -1 and messages[1]["error"]["code"] == -32600
        assert {"id": 3, "result": {"processId": "p", "sandboxType": "none"}} in messages
        events = sorted(
            (m for m in messages if m.get("method", "").startswith("process/")),
            key=lambda m: m["params"]["seq"],
        )
        assert [(m["method"], m["params"]["seq"]) for m in events] == [
            ("process/output", 1),
            ("process/output", 2),
            ("process/exited", 3),
            ("process/closed", 4),
        ]
        assert base64.b64decode(events[0]["params"]["chunk"]) == b"out"
        assert events[2]["params"]["exitCode"] == 7
        # stdin ending ends the daemon, cleanly.
        await stdin.aclose()
        assert await daemon.wait() == 0


async def test_schema_prints_json() -> None:
    with trio.fail_after(10):
        done = await trio.run_process(
            [sys.executable, "-m", "exec_runtime", "schema"], cwd=ROOT, capture_stdout=True
        )
        schema = json.loads(done.stdout)
        assert {"initialize", "process/start", "process/read"} <= set(schema["methods"])
        assert {"process/output", "process/exited", "process/closed"} <= set(
            schema["notifications"]
        )


async def test_a_thousand_short_processes_leave_no_zombie(spawn_daemon: Any, connect: Any) -> None:
    with trio.fail_after(30):
        daemon = await started(spawn_daemon, "--closed-ttl", "0.1")
        client: RawClient = await connect(url=daemon.url)
        total, batch = 1000, 50
        for first in range(0, total, batch):
            async with trio.open_nursery() as nursery:
                for number in range(first, first + batch):
                    nursery.start_soon(client.start, f"p{number}", ["true"])
            for number in range(first, first + batch):
                events = await client.wait_closed(f"p{number}")
                assert [m["params"]["seq"] for m in events] == [1, 2]
                assert events[0]["params"]["exitCode"] == 0
        # Each leader is reaped before its exit is recorded: with every process closed,
        # the daemon has no children left, zombie or otherwise.
        assert spawned_children_of(daemon.process.pid) == []
        await client.ws.aclose()
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_schema_to_a_missing_directory_fails_with_a_message() -> None:
    with trio.fail_after(10):
        done = await trio.run_process(
            [sys.executable, "-m", "exec_runtime", "schema", "/no/such/dir/out.json"],
            cwd=ROOT,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.decode() == (
        "exec-runtime schema: cannot write /no/such/dir/out.json: No such file or directory\n"
    )


# --- option validation ------------------------------------------------------------------

NON_NEGATIVE_SECONDS = ["closed_ttl", "detached_ttl", "ping_interval", "shutdown_grace"]
POSITIVE_SECONDS = ["handshake_timeout", "ping_timeout", "resume_probe_timeout"]


@pytest.mark.parametrize("field", NON_NEGATIVE_SECONDS + POSITIVE_SECONDS)
def test_server_config_refuses_nan_seconds(field: str) -> None:
    """NaN passes ``value < 0``; a NaN TTL then killed the daemon at the first close."""
    with pytest.raises(ValueError, match=field):
        ServerConfig(**{field: float("nan")})
    with pytest.raises(ValueError, match=field):
        ServerConfig(**{field: -1.0})


def test_server_config_takes_infinity_only_where_it_means_never() -> None:
    ServerConfig(**{field: math.inf for field in NON_NEGATIVE_SECONDS})
    for field in [*POSITIVE_SECONDS, "max_sessions", "ack_window_bytes"]:
        with pytest.raises(ValueError, match=field):
            ServerConfig(**{field: math.inf})


@pytest.mark.parametrize(
    "args",
    [
        ["--closed-ttl", "nan"],
        ["--detached-ttl", "NaN"],
        ["--ping-interval", "nan"],
        ["--shutdown-grace", "-1"],
        ["--handshake-timeout", "inf"],
        ["--ping-timeout", "0"],
        ["--resume-probe-timeout", "nan"],
        ["--closed-ttl", "soon"],
        ["--log-level", "bogus"],
    ],
)
def test_serve_refuses_a_bad_value_naming_the_option(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["serve", *args])
    assert exited.value.code == 2
    assert f"argument {args[0]}:" in capsys.readouterr().err


def test_serve_takes_a_log_level_in_any_case() -> None:
    args = _build_parser().parse_args(["serve", "--log-level", "debug"])
    assert serve_options(args, {}).log_level == "DEBUG"
    assert serve_options(_build_parser().parse_args(["serve"]), {}).log_level == "INFO"


async def test_serve_closed_ttl_nan_exits_2_before_listening() -> None:
    with trio.fail_after(10):
        done = await trio.run_process(
            [sys.executable, "-m", "exec_runtime", "serve", "--closed-ttl", "nan"],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert (done.returncode, done.stdout) == (2, b"")
    assert b"--closed-ttl" in done.stderr
    assert b"Traceback" not in done.stderr


# --- signals the daemon was started with ignored -----------------------------------------

IGNORING_LAUNCHER = """\
import os, signal, sys
# As nohup (SIGHUP) and a shell's background job (SIGINT, SIGQUIT) start the daemon.
for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
    signal.signal(signum, signal.SIG_IGN)
os.execv(sys.executable, [sys.executable, "-m", "exec_runtime", "serve"])
"""


def ignored_signals(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {signum for signum in range(1, 65) if mask & (1 << (signum - 1))}
    raise AssertionError("no SigIgn line")


async def test_children_do_not_inherit_the_signals_the_daemon_was_started_ignoring(
    nursery: trio.Nursery, connect: Any
) -> None:
    with trio.fail_after(20):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", IGNORING_LAUNCHER],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        daemon = Daemon(process)
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_drain, process.stdout, daemon.stdout, daemon.stdout_closed)
        nursery.start_soon(_drain, process.stderr, daemon.stderr, trio.Event())
        try:
            await eventually(lambda: b"\n" in daemon.stdout or process.returncode is not None)
            assert process.returncode is None, daemon.stderr.decode()
            client: RawClient = await connect(url=daemon.url)
            await client.start("p", ["sh", "-c", "echo $$; exec sleep 1000"])
            await eventually(lambda: output_of(client.notifications["p"]).endswith(b"\n"))
            pid = int(output_of(client.notifications["p"]))
            inherited = ignored_signals(pid)
            assert not inherited & {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT}, inherited
            await client.call("process/signal", {"processId": "p", "signal": "hangup"})
            events = await client.wait_closed("p")
            assert events[-2]["params"]["exitCode"] == 128 + signal.SIGHUP
            # The daemon shrugs SIGHUP off, as it would have, and still stops on SIGINT.
            process.send_signal(signal.SIGHUP)
            assert await client.call("environment/status") == {"status": "ready"}
            await client.ws.aclose()
            process.send_signal(signal.SIGINT)
            assert await daemon.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
