"""``exec-runtime run`` as a real subprocess, leaving early or failing: whenever it exits
before the command closed, the command is terminated (a ``--url`` daemon would keep it
for the session's detached TTL otherwise), and every failure is a message and an exit
code (255 for the runtime, 2 for usage, 128+N for signal N), never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.support.daemon_process import eventually, process_gone

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, "-m", "exec_runtime", "run"]


@attrs.define
class Cli:
    process: trio.Process
    stdout: trio.abc.ReceiveStream
    stderr: bytearray = attrs.field(factory=bytearray)
    buffered: bytearray = attrs.field(factory=bytearray)

    async def line(self) -> bytes:
        """The next line of the CLI's stdout (the command's output)."""
        while b"\n" not in self.buffered:
            data = await self.stdout.receive_some(65536)
            assert data, f"stdout ended; stderr: {self.stderr.decode()}"
            self.buffered += data
        line, _, rest = bytes(self.buffered).partition(b"\n")
        self.buffered[:] = rest
        return line

    async def wait(self) -> int:
        return await self.process.wait()


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            into += data


@pytest.fixture
async def cli(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    """Start ``python -m exec_runtime run ARGS`` (stdout piped to the test); killed at
    teardown if still running."""
    started: list[Cli] = []

    async def spawn(*args: str, **kwargs: Any) -> Cli:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("cwd", ROOT)
        process = await trio.lowlevel.open_process(
            [*RUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
        )
        assert process.stdout is not None and process.stderr is not None
        run = Cli(process, process.stdout)
        nursery.start_soon(_drain, process.stderr, run.stderr)
        started.append(run)
        return run

    yield spawn
    for run in started:
        if run.process.returncode is None:
            run.process.kill()
            await run.process.wait()


async def run_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("cwd", ROOT)
    return await trio.run_process(
        [*RUN, *args], capture_stdout=True, capture_stderr=True, check=False, **kwargs
    )


# --- leaving before the command closed terminates it ------------------------------------


async def test_a_closed_stdout_pipe_exits_141_quietly_and_kills_the_command(
    daemon: str, cli: Any
) -> None:
    """``run --url ... -- producer | head -1``: the reader is gone, so we are too, as a
    shell pipeline's writer is (128+SIGPIPE), and so is the producer, at once."""
    with trio.fail_after(20):
        run: Cli = await cli(
            "--url", daemon, "--", "sh", "-c", "echo $$; while :; do echo tick; sleep 0.01; done"
        )
        pid = int(await run.line())
        await run.stdout.aclose()  # `head -1` exits
        assert await run.wait() == 128 + signal.SIGPIPE
        assert run.stderr == b""  # no "cannot connect", no "Exception ignored"
        await eventually(lambda: process_gone(pid))  # not the session's 30 s TTL


async def test_sighup_kills_the_command_and_exits_129(daemon: str, cli: Any) -> None:
    with trio.fail_after(20):
        run: Cli = await cli("--url", daemon, "--", "sh", "-c", "echo $$; exec sleep 1000")
        pid = int(await run.line())
        run.process.send_signal(signal.SIGHUP)
        assert await run.wait() == 128 + signal.SIGHUP
        await eventually(lambda: process_gone(pid))
        assert b"Traceback" not in run.stderr


async def test_a_second_ctrl_c_kills_the_command_and_exits_130(daemon: str, cli: Any) -> None:
    """The first Ctrl-C is forwarded as an interrupt; a command still there for the
    second one does not get to hold the terminal hostage."""
    script = 'trap "echo got-INT" INT; echo $$; while :; do sleep 1; done'
    with trio.fail_after(20):
        run: Cli = await cli("--url", daemon, "--", "sh", "-c", script)
        pid = int(await run.line())
        run.process.send_signal(signal.SIGINT)
        assert await run.line() == b"got-INT"  # forwarded; the shell shrugged it off
        assert not process_gone(pid)
        run.process.send_signal(signal.SIGINT)
        assert await run.wait() == 128 + signal.SIGINT
        await eventually(lambda: process_gone(pid))
        assert b"Traceback" not in run.stderr


async def test_ctrl_c_while_connecting_exits_130_without_a_traceback(cli: Any) -> None:
    """The peer accepts and never answers the handshake: Ctrl-C then is an exit 130."""
    with trio.fail_after(20):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        run: Cli = await cli("--url", f"ws://127.0.0.1:{port}", "--", "true")
        stream = await listeners[0].accept()
        assert await stream.receive_some(65536)  # the handshake request is out
        run.process.send_signal(signal.SIGINT)
        assert await run.wait() == 128 + signal.SIGINT
        assert b"Traceback" not in run.stderr
        await stream.aclose()
        await listeners[0].aclose()


async def test_ctrl_c_before_trio_starts_exits_130_without_a_traceback() -> None:
    """KeyboardInterrupt before the run installs its signal handling (here: raised by
    the malloc tuning that precedes ``trio.run``)."""
    code = (
        "import sys; from exec_runtime._cli import main as _cli, run as _cli_run\n"
        "def interrupted(): raise KeyboardInterrupt\n"
        "_cli_run.tune_malloc = interrupted\n"
        "sys.exit(_cli.main(['run', '--', 'true']))\n"
    )
    with trio.fail_after(20):
        done = await trio.run_process(
            [sys.executable, "-c", code], cwd=ROOT, capture_stderr=True, check=False
        )
    assert done.returncode == 128 + signal.SIGINT
    assert b"Traceback" not in done.stderr


# --- failures are messages and exit codes -----------------------------------------------


async def test_a_url_that_is_not_ws_is_a_usage_error() -> None:
    with trio.fail_after(20):
        done = await run_cli("--url", "http://127.0.0.1:1", "--", "true")
    assert done.returncode == 2
    assert b"--url must be ws://" in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "reply",
    [b"SSH-2.0-OpenSSH_9.2\r\n\r\n", b""],
    ids=["an SSH banner", "accept then close"],
)
async def test_a_peer_that_is_not_a_daemon_fails_with_255(
    nursery: trio.Nursery, reply: bytes
) -> None:
    async def not_a_daemon(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            if reply:
                await stream.send_all(reply)

    with trio.fail_after(20):
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), not_a_daemon, 0)
        port = listeners[0].socket.getsockname()[1]
        done = await run_cli("--url", f"ws://127.0.0.1:{port}", "--", "true")
    assert done.returncode == 255, done.stderr
    assert b"Traceback" not in done.stderr
    assert done.stderr.startswith(b"exec-runtime run: ")


async def test_a_refused_connection_says_cannot_connect() -> None:
    with trio.fail_after(20):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await listeners[0].aclose()  # nothing listens there now
        done = await run_cli("--url", f"ws://127.0.0.1:{port}", "--", "true")
    assert done.returncode == 255
    assert b"cannot connect to ws://127.0.0.1:" in done.stderr
    assert b"Traceback" not in done.stderr


async def test_an_unwritable_stdout_is_reported_as_such_not_as_a_connect_error() -> None:
    with trio.fail_after(20), open("/dev/full", "wb") as full:  # noqa: ASYNC230 - a device
        done = await trio.run_process(
            [*RUN, "--", "echo", "hi"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=full,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 255
    assert b"cannot write the output" in done.stderr
    assert b"cannot connect" not in done.stderr
    assert b"Traceback" not in done.stderr


async def test_a_relative_cwd_is_relative_to_ours(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    # Run from tmp_path, but with this checkout's exec_runtime.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with trio.fail_after(20):
        done = await run_cli("--cwd", "sub", "--", "pwd", cwd=tmp_path, env=env)
        assert (done.returncode, done.stdout) == (0, f"{tmp_path}/sub\n".encode()), done.stderr
        dot = await run_cli("--cwd", ".", "--", "pwd", cwd=tmp_path, env=env)
        assert (dot.returncode, dot.stdout) == (0, f"{tmp_path}\n".encode()), dot.stderr
        missing = await run_cli("--cwd", "nope", "--", "pwd", cwd=tmp_path, env=env)
    assert missing.returncode == 255
    assert b"not a directory" in missing.stderr
    assert b"Traceback" not in missing.stderr


async def test_a_closed_stdin_is_an_empty_one() -> None:
    """``run ... <&-``: the command runs, and reads end-of-file at once (before, the
    first descriptor the CLI opened became its "stdin" and the run failed)."""
    with trio.fail_after(20):
        done = await trio.run_process(
            ["sh", "-c", 'exec "$@" <&-', "sh", *RUN, "--", "sh", "-c", "cat; echo ran"],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert (done.returncode, done.stdout) == (0, b"ran\n"), done.stderr
