"""ExecClient on both backends: the same bodies run in-process and over a WebSocket."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import exec_runtime
import exec_runtime._client.process as client_process
import protocol_schema as wire
from exec_runtime import (
    ClientClosedError,
    Closed,
    Event,
    ExecClient,
    ExecRuntimeError,
    Exited,
    Failed,
    Output,
    ProcessFailed,
    ProcessHandle,
    ProtocolError,
    ServerConfig,
    SessionLostError,
    StdinClosedError,
    TransportError,
)
from exec_runtime.testing import open_faulty_local
from tests.support.children import writer_script
from tests.support.daemon_state import track_daemon
from tests.support.wire_client import BACKENDS, open_backend

PY = sys.executable
async def collect(proc: ProcessHandle) -> list[Event]:
    return [event async for event in proc.events()]


def stdout_of(events: Sequence[Event], stream: str = "stdout") -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Output) and e.stream == stream)


def as_tuples(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, Output):
            rows.append(("output", e.seq, e.stream, e.data, None))
        elif isinstance(e, Exited):
            rows.append(("exited", e.seq, None, None, e.exit_code))
        elif isinstance(e, Closed):
            rows.append(("closed", e.seq, None, None, None))
        else:
            rows.append(("failed", None, None, e.message, None))
    return rows


def assert_complete(events: Sequence[Event]) -> Exited:
    """Seqs 1..n each once; outputs, one exit, maybe late outputs, closed last."""
    assert not any(isinstance(e, Failed) for e in events), events[-1]
    seqs = [e.seq for e in events if not isinstance(e, Failed)]
    assert seqs == list(range(1, len(events) + 1))
    assert isinstance(events[-1], Closed)
    exits = [e for e in events if isinstance(e, Exited)]
    assert len(exits) == 1
    assert all(isinstance(e, Output) for e in events[:-1] if e is not exits[0])
    return exits[0]


def pattern(size: int) -> bytes:
    """What ``writer_script(size)`` prints: deterministic, position-dependent bytes."""
    block = bytes(range(256)) * 4096  # 1 MiB, every byte value, offset-sensitive
    return (block * (size // len(block) + 1))[:size]




async def pid_gone(pid: int) -> None:
    """Until ``pid`` no longer exists (killed and reaped); callers bound the wait."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await trio.sleep(0.01)


# --- run() -----------------------------------------------------------------------------


async def test_run_returns_completed_process(client: ExecClient) -> None:
    with trio.fail_after(5):
        argv = ["sh", "-c", "printf out; printf 'err\\n' >&2; exit 3"]
        result = await client.run(argv, check=False)
        assert isinstance(result, subprocess.CompletedProcess)
        assert (result.args, result.returncode) == (argv, 3)
        assert (result.stdout, result.stderr) == (b"out", b"err\n")
        ok = await client.run(["echo", "hello"])
        assert (ok.returncode, ok.stdout, ok.stderr) == (0, b"hello\n", b"")


async def test_run_check_raises_called_process_error(client: ExecClient) -> None:
    with trio.fail_after(5):
        argv = ["sh", "-c", "echo partial; echo bad >&2; exit 9"]
        with pytest.raises(subprocess.CalledProcessError) as info:
            await client.run(argv)
        error = info.value
        assert (error.returncode, error.cmd) == (9, argv)
        assert (error.output, error.stdout, error.stderr) == (b"partial\n", b"partial\n", b"bad\n")


async def test_run_feeds_input_to_stdin(client: ExecClient) -> None:
    with trio.fail_after(10):
        data = pattern(300_000) + b"tail"
        result = await client.run(["cat"], input=data)
        assert result.stdout == data
        assert (await client.run(["cat"], input=b"")).stdout == b""
        # Without input, stdin is closed: cat sees EOF at once.
        assert (await client.run(["cat"])).stdout == b""


async def test_run_feeds_input_while_it_consumes_the_output(client: ExecClient) -> None:
    """Far more than the daemon retains (1 MiB), echoed while it is still being written:
    the input goes in while the output is taken, as ``communicate`` does, so nothing
    waits on the other and no output is evicted before it is read."""
    with trio.fail_after(30):
        data = pattern(20 * 1024 * 1024)
        result = await client.run(["cat"], input=data)
        assert result.stdout == data
        assert client.statistics().failed_processes == 0


@pytest.mark.parametrize("argv", [["head", "-c", "1"], ["true"]])
async def test_run_ignores_input_the_child_never_read(client: ExecClient, argv: list[str]) -> None:
    """Like ``subprocess.run``: a child that exits (or closes stdin) before reading its
    input is no error; its exit status is the result."""
    with trio.fail_after(20):
        data = b"x" * (5 * 1024 * 1024)
        result = await client.run(argv, input=data)
        assert result.returncode == 0
        assert result.stdout == data[: len(result.stdout)] and len(result.stdout) <= 1


async def test_run_tty_returns_output_as_stdout(client: ExecClient) -> None:
    with trio.fail_after(5):
        result = await client.run(
            ["sh", "-c", "test -t 0 && test -t 1 && echo out; echo err >&2"], tty=True
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, b"out\r\nerr\r\n", b"")


async def test_cwd_as_str_and_path(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(5):
        expected = str(await trio.Path(tmp_path).resolve()).encode() + b"\n"
        pwd = [PY, "-c", "import os; print(os.getcwd())"]
        assert (await client.run(pwd, cwd=str(tmp_path))).stdout == expected
        assert (await client.run(pwd, cwd=tmp_path)).stdout == expected
        (tmp_path / "a b").mkdir()
        spaced = str(await trio.Path(tmp_path / "a b").resolve()).encode() + b"\n"
        assert (await client.run(pwd, cwd=tmp_path / "a b")).stdout == spaced
        with pytest.raises(ProtocolError) as info:
            await client.run(pwd, cwd=tmp_path / "missing")
        # A well-formed cwd naming no directory: the OS error, -32603 (as Codex).
        assert info.value.code == -32603
        assert isinstance(info.value, FileNotFoundError)
        assert info.value.filename == str(tmp_path / "missing")


async def test_env_is_exact(client: ExecClient) -> None:
    with trio.fail_after(5):
        result = await client.run(["/usr/bin/env"], env={"A": "1", "B": "two words", "C": ""})
        assert sorted(result.stdout.decode().splitlines()) == ["A=1", "B=two words", "C="]
        assert (await client.run(["/usr/bin/env"], env={})).stdout == b""


async def test_env_policy(client: ExecClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXEC_TEST_PLAIN", "plain")
    monkeypatch.setenv("EXEC_TEST_API_KEY", "hidden")
    with trio.fail_after(5):
        overlay = await client.run(
            ["/usr/bin/env"], env={"Y": "2"}, env_policy={"inherit": "none", "set": {"X": "1"}}
        )
        assert sorted(overlay.stdout.decode().splitlines()) == ["X=1", "Y=2"]
        # Neither env nor policy: the daemon's environment minus secret-looking names.
        inherited = (await client.run(["/usr/bin/env"])).stdout.decode().splitlines()
        assert "EXEC_TEST_PLAIN=plain" in inherited
        assert not any(line.startswith("EXEC_TEST_API_KEY=") for line in inherited)
        selected = await client.run(
            ["/usr/bin/env"],
            env_policy={"inherit": "all", "includeOnly": ["exec_test_*"]},
        )
        assert selected.stdout == b"EXEC_TEST_PLAIN=plain\n"


# --- events ----------------------------------------------------------------------------


async def test_events_in_order_with_contiguous_seqs(client: ExecClient) -> None:
    with trio.fail_after(5):
        proc = await client.start(
            ["sh", "-c", "printf out; sleep 0.05; printf err >&2; sleep 0.05; exit 7"]
        )
        events = await collect(proc)
        assert as_tuples(events) == [
            ("output", 1, "stdout", b"out", None),
            ("output", 2, "stderr", b"err", None),
            ("exited", 3, None, None, 7),
            ("closed", 4, None, None, None),
        ]
        assert await proc.wait() == 7
        assert proc.returncode == 7
        with pytest.raises(RuntimeError, match="already consumed"):
            await collect(proc)


async def test_events_byte_exact_3mb(client: ExecClient) -> None:
    with trio.fail_after(15):
        size = 3 * 1024 * 1024
        proc = await client.start(writer_script(size))
        events = await collect(proc)
        exit_event = assert_complete(events)
        assert exit_event.exit_code == 0
        assert stdout_of(events) == pattern(size)
        assert stdout_of(events, "stderr") == b""


async def test_output_after_exit_from_a_grandchild(client: ExecClient) -> None:
    with trio.fail_after(5):
        proc = await client.start(["sh", "-c", "(sleep 0.2; printf late) & exit 2"])
        events = await collect(proc)
        assert as_tuples(events) == [
            ("exited", 1, None, None, 2),
            ("output", 2, "stdout", b"late", None),
            ("closed", 3, None, None, None),
        ]


async def test_write_and_close_stdin(client: ExecClient) -> None:
    with trio.fail_after(5):
        proc = await client.start(["cat"], pipe_stdin=True)
        await proc.write(b"first ")
        await proc.write(pattern(200_000))
        await proc.close_stdin()
        with pytest.raises(StdinClosedError):
            await proc.write(b"too late")
        events = await collect(proc)
        assert assert_complete(events).exit_code == 0
        assert stdout_of(events) == b"first " + pattern(200_000)
        no_pipe = await client.start(["sleep", "5"])
        with pytest.raises(StdinClosedError):
            await no_pipe.write(b"x")
        await no_pipe.kill()


async def test_signal_interrupt_is_caught_by_a_trap(client: ExecClient) -> None:
    code = (
        "import signal, sys, time\n"
        "def on_int(*_):\n"
        "    print('caught', flush=True)\n"
        "    sys.exit(5)\n"
        "signal.signal(signal.SIGINT, on_int)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    with trio.fail_after(5):
        proc = await client.start([PY, "-c", code])
        seen = b""
        events = []
        async for event in proc.events():
            events.append(event)
            if isinstance(event, Output):
                seen += event.data
                if seen == b"ready\n":
                    await proc.signal("interrupt")
        assert seen == b"ready\ncaught\n"
        assert assert_complete(events).exit_code == 5


async def test_kill_kills_with_sigkill(client: ExecClient) -> None:
    with trio.fail_after(5):
        proc = await client.start(["sleep", "30"])
        assert await proc.kill() is True
        assert await proc.wait() == 137
        assert await proc.kill() is False  # exited: nothing left to kill
        events = await collect(proc)
        assert as_tuples(events) == [
            ("exited", 1, None, None, 137),
            ("closed", 2, None, None, None),
        ]


async def test_other_signals(client: ExecClient) -> None:
    with trio.fail_after(5):
        proc = await client.start(["sleep", "30"])
        await proc.signal("terminate")
        assert await proc.wait() == 128 + 15
        hup = await client.start(["sleep", "30"])
        await hup.signal("hangup")
        assert await hup.wait() == 128 + 1
        await hup.signal("interrupt")  # exited: a no-op, not an error


async def test_resize_tty(client: ExecClient) -> None:
    with trio.fail_after(5):
        proc = await client.start(
            ["sh", "-c", "stty -echo; stty size; read line; stty size"],
            tty=True,
            tty_size=(30, 90),
        )
        seen = b""
        events = []
        async for event in proc.events():
            events.append(event)
            if isinstance(event, Output):
                seen += event.data
                if seen.endswith(b"30 90\r\n"):
                    await proc.resize(40, 100)
                    await proc.write(b"go\n")
        assert seen == b"30 90\r\n40 100\r\n"
        assert assert_complete(events).exit_code == 0


async def test_wait_without_consuming_events(client: ExecClient) -> None:
    with trio.fail_after(10):
        proc = await client.start(["sh", "-c", "printf x; exit 4"])
        assert await proc.wait() == 4
        # Far more than the consumer queue holds, and nobody iterates: still no read.
        big = await client.start(writer_script(6 * 1024 * 1024))
        assert await big.wait() == 0
        assert client.statistics().calls == {"process/start": 2}


async def test_cancelling_run_kills_the_process(client: ExecClient, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with trio.fail_after(5):
        cancelled = False
        async with trio.open_nursery() as nursery:

            async def runner(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                nonlocal cancelled
                with trio.CancelScope() as scope:
                    task_status.started(scope)
                    await client.run(
                        [
                            "sh",
                            "-c",
                            f"echo $$ > {pid_file}.tmp; "
                            f"mv {pid_file}.tmp {pid_file}; exec sleep 30",
                        ]
                    )
                cancelled = scope.cancelled_caught

            scope = await nursery.start(runner)
            while not pid_file.exists():  # noqa: ASYNC110 - written by the child
                await trio.sleep(0.01)
            pid = int(pid_file.read_text())
            os.kill(pid, 0)  # alive
            scope.cancel()
        assert cancelled
        await pid_gone(pid)  # killed and reaped


async def test_nursery_start_of_run_hands_over_the_process_and_bounds_its_life(
    client: ExecClient, tmp_path: Path
) -> None:
    """As with ``trio.run_process``: ``nursery.start(client.run, ...)`` returns the
    handle once the process runs, and the process ends with the nursery."""
    pid_file = tmp_path / "pid"
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            argv = ["sh", "-c", f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; cat"]
            proc = await nursery.start(partial(client.run, argv, pipe_stdin=True))
            assert isinstance(proc, ProcessHandle)
            with pytest.raises(RuntimeError, match="already consumed"):
                await proc.events().__anext__()  # run() is its consumer
            await proc.write(b"through the handle\n")
            while not pid_file.exists():  # noqa: ASYNC110 - written by the child
                await trio.sleep(0.01)
            pid = int(pid_file.read_text())
            os.kill(pid, 0)  # alive, reading its stdin
            nursery.cancel_scope.cancel()
        await pid_gone(pid)  # killed and reaped with the nursery
        # Driven to the end through the handle, run() completes in its task.
        done: list[subprocess.CompletedProcess[bytes]] = []

        async def collect(task_status: trio.TaskStatus[ProcessHandle]) -> None:
            done.append(await client.run(["cat"], pipe_stdin=True, task_status=task_status))

        async with trio.open_nursery() as nursery:
            proc = await nursery.start(collect)
            await proc.write(b"piped\n")
            await proc.close_stdin()
            assert await proc.wait() == 0
        assert done[0].stdout == b"piped\n"


async def test_run_refuses_input_with_pipe_stdin(client: ExecClient) -> None:
    with trio.fail_after(5), pytest.raises(ValueError, match="exclude each other"):
        await client.run(["cat"], input=b"x", pipe_stdin=True)
    assert client.statistics().calls == {}  # refused before anything was sent


async def until(predicate: Callable[[], object]) -> None:
    """Poll plain client state; callers bound the wait (trio.fail_after)."""
    while not predicate():  # noqa: ASYNC110 - nothing to wait on for these conditions
        await trio.sleep(0.005)


async def daemon_read(client: ExecClient, process_id: str) -> wire.ProcessReadResult:
    """What the daemon retains (``afterSeq`` 0 acknowledges nothing, waits for nothing).
    ``maxBytes`` 0: one chunk at most, not all that is retained (these are polled, and a
    MiB of base64 every 10 ms slowed the stream they wait for)."""
    params = wire.ProcessReadParams(process_id=process_id, after_seq=0, wait_ms=0, max_bytes=0)
    return await client._call("process/read", params, wire.ProcessReadResult)


async def until_forgotten(client: ExecClient, process_id: str) -> None:
    """Until the daemon has forgotten the process (its closed TTL passed)."""
    while True:
        try:
            await daemon_read(client, process_id)
        except exec_runtime.ProtocolError as exc:
            assert "unknown process id" in str(exc), exc
            return
        await trio.sleep(0.01)


async def a_later_start_ran(client: ExecClient, tmp_path: Path) -> None:
    """The positive signal that a start sent before this one (held by the same
    ``_start_delay``) had every chance to spawn: this later one has spawned and run."""
    proc = await client.start(["sh", "-c", f"echo $$ > {tmp_path / 'later'}"])
    assert await proc.wait() == 0
    assert await trio.Path(tmp_path / "later").exists()


@pytest.mark.parametrize("server_config", [ServerConfig(_start_delay=0.3)])
async def test_cancelling_a_start_in_flight_kills_the_process(
    client: ExecClient, tmp_path: Path
) -> None:
    """Cancelled after process/start went out but before its reply: the client must not
    leave behind a process that only the daemon knows about."""
    pid_file = tmp_path / "pid"
    with trio.fail_after(5):
        with trio.move_on_after(0.1) as scope:  # the daemon holds the start for 0.3 s
            await client.start(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"])
        assert scope.cancelled_caught
        while client.statistics().calls.get("process/terminate") != 1:  # noqa: ASYNC110
            await trio.sleep(0.01)  # sent in the background: the cancel took effect at once
        assert client.statistics().calls == {"process/start": 1, "process/terminate": 1}
        await a_later_start_ran(client, tmp_path)  # an uncancelled start would have by now
        assert not await trio.Path(pid_file).exists()


async def test_a_cancelled_start_returns_at_once_while_the_daemon_is_silent(
    tmp_path: Path,
) -> None:
    """The terminate that cleans up after a cancelled start must not hold the cancel:
    with no answer coming (a stalled link), the cancel still takes effect at once, and
    the process is killed once the daemon is heard again."""
    pid_file = tmp_path / "pid"
    config = ServerConfig(_start_delay=0.3)
    async with open_faulty_local(config=config) as (client, faults):
        with trio.fail_after(5):
            with trio.move_on_after(0.1) as scope:
                faults.stall()  # nothing reaches the client from here on
                await client.start(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"])
            assert scope.cancelled_caught
            faults.resume()
            while client.statistics().calls.get("process/terminate") != 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            await a_later_start_ran(client, tmp_path)  # a start that ran would show by now
            assert not await trio.Path(pid_file).exists()


# --- errors ----------------------------------------------------------------------------


def test_error_hierarchy() -> None:
    for kind in (ProtocolError, TransportError, ProcessFailed, ClientClosedError):
        assert issubclass(kind, ExecRuntimeError)
    assert issubclass(SessionLostError, ProtocolError)
    assert issubclass(StdinClosedError, ExecRuntimeError)
    error = ProtocolError(-32600, "boom", {"x": 1})
    assert (error.code, error.message, error.data) == (-32600, "boom", {"x": 1})


async def test_protocol_errors_keep_code_and_message(client: ExecClient) -> None:
    with trio.fail_after(5):
        proc = await client.start(["sleep", "30"])
        with pytest.raises(ProtocolError) as info:
            await proc.resize(10, 10)
        assert info.value.code == -32600
        assert info.value.message == f"process {proc.process_id} is not a tty process"
        await proc.terminate()
        await proc.wait()

        with pytest.raises(ValueError, match="argv must not be empty"):
            await client.start([])  # checked by the client, before anything is sent

        with pytest.raises(ProtocolError) as info:
            await client.start(["/nonexistent/program"])
        assert info.value.code == -32603
        assert "No such file or directory" in info.value.message

        with pytest.raises(TypeError):
            await client.start("echo hi")  # a str is a Sequence[str]: refused at run time


async def test_duplicate_process_id(client: ExecClient) -> None:
    with trio.fail_after(5):
        proc = await client.start(["sleep", "30"], process_id="dup")
        assert proc.process_id == "dup"
        with pytest.raises(ValueError, match="already in use"):
            await client.start(["true"], process_id="dup")
        await proc.terminate()
        await proc.wait()
        # Closed but retained by the daemon for closed_ttl: the id is still taken there.
        with pytest.raises(ProtocolError) as info:
            await client.start(["true"], process_id="dup")
        assert (info.value.code, info.value.message) == (-32600, "process dup already exists")
        # A failed start leaves the client's id free again.
        other = await client.start(["true"], process_id="dup2")
        assert await other.wait() == 0


async def test_closed_client_refuses_starts(client: ExecClient) -> None:
    with trio.fail_after(5):
        with trio.fail_after(0.5):  # a graceful close, not a close-handshake timeout
            await client.aclose()
        assert client.state is exec_runtime.ClientState.CLOSED
        with pytest.raises(ClientClosedError):
            await client.start(["true"])


@pytest.mark.parametrize("kind", BACKENDS)
async def test_exceptions_leave_the_client_context_unwrapped(
    kind: str, nursery: trio.Nursery
) -> None:
    """The client's internal nurseries do not wrap the body's exception in a group."""
    with trio.fail_after(5):
        with pytest.raises(subprocess.CalledProcessError) as info:
            async with open_backend(kind, nursery, ServerConfig()) as client:
                await client.run(["false"])
        assert info.value.returncode == 1


async def test_open_client_connection_errors(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        # Nothing listening: the OSError itself.
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await listeners[0].aclose()
        with pytest.raises(OSError):
            async with exec_runtime.open_client(f"ws://127.0.0.1:{port}"):
                pass

        # A peer that accepts and hangs up before the HTTP reply: fails at once, not
        # after the 10 s connect timeout.
        async def hang_up(stream: trio.SocketStream) -> None:
            await stream.aclose()

        listeners = await nursery.start(trio.serve_tcp, hang_up, 0)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(1), pytest.raises(TransportError, match="closed during the handshake"):
            async with exec_runtime.open_client(f"ws://127.0.0.1:{port}"):
                pass


# --- reads: only when needed -------------------------------------------------------------


async def test_zero_reads(client: ExecClient) -> None:
    with trio.fail_after(10):
        assert (await client.run(["/usr/bin/true"])).returncode == 0
        stats = client.statistics()
        assert stats.calls == {"process/start": 1}
        assert stats.gap_reads == 0
        assert stats.events_published == 2  # exited, closed
        result = await client.run(["head", "-c", str(1 << 20), "/dev/zero"])
        assert result.stdout == bytes(1 << 20)
        stats = client.statistics()
        assert stats.calls == {"process/start": 2}
        assert (stats.gap_reads, stats.reconnects, stats.recoveries) == (0, 0, 0)
        assert stats.state == "connected"


@pytest.mark.parametrize("server_config", [ServerConfig(retain_bytes=16 << 20)])
async def test_slow_consumer_catches_up_with_reads(client: ExecClient) -> None:
    """A consumer that falls behind the bounded queue gets every byte via process/read
    (here the daemon retains everything, so nothing may be lost)."""
    with trio.fail_after(20):
        size = 8 * 1024 * 1024
        proc = await client.start(writer_script(size))
        assert await proc.wait() == 0  # the whole sequence arrived; nobody consumed it
        await until(lambda: proc._stream.reorder.closed)  # up to its close
        events = await collect(proc)
        assert_complete(events)
        assert stdout_of(events) == pattern(size)
        stats = client.statistics()
        assert stats.gap_reads > 0
        assert stats.calls["process/read"] == stats.gap_reads
        assert stats.failed_processes == 0


async def test_slow_consumer_beyond_retention_fails_only_that_process(
    client: ExecClient,
) -> None:
    """Default retention (1 MiB): a consumer that starts only after the process finished,
    4 MiB+ behind, cannot be caught up; it gets a terminal Failed after every byte that
    was still available, and nothing else breaks."""
    with trio.fail_after(20):
        size = 8 * 1024 * 1024
        proc = await client.start(writer_script(size))
        await proc.wait()
        events = await collect(proc)
        assert isinstance(events[-1], Failed)
        assert "no longer retained" in events[-1].message
        data = stdout_of(events)
        assert len(data) < size
        assert data == pattern(size)[: len(data)]
        assert [e.seq for e in events[:-1]] == list(range(1, len(events)))  # type: ignore[union-attr]
        assert (await client.run(["echo", "still fine"])).stdout == b"still fine\n"


async def test_a_late_consumer_fails_alone_and_the_process_runs_on(
    client: ExecClient, tmp_path: Path
) -> None:
    """A consumer that starts after more output than is retained came out: its
    events() ends with Failed, but only the consumer failed: the process (which used
    to be killed for it) runs on, and wait() has its own exit code."""
    marker = tmp_path / "went-on"
    with trio.fail_after(20):
        script = f"head -c 12000000 /dev/zero; sleep 0.5; touch {marker}; exit 3"
        proc = await client.start(["sh", "-c", script])
        # Far more than the daemon retains has come out: the consumer's queue is full
        # (the client stopped queuing) and the daemon evicted output past what it queued.
        stream = proc._stream
        while not (  # noqa: ASYNC110 - polls the daemon
            stream.lagging
            and (await daemon_read(client, proc.process_id)).earliest_retained_seq
            > stream.queued_seq + 1
        ):
            await trio.sleep(0.01)
        events = await collect(proc)
        assert isinstance(events[-1], Failed)
        assert "no longer retained" in events[-1].message
        assert await proc.wait() == 3
        assert await trio.Path(marker).exists()  # it ran to its end


@pytest.mark.parametrize(
    "server_config", [ServerConfig(retain_bytes=4096, ack_window_bytes=4096)]
)
async def test_a_failed_consumer_releases_what_it_held_back(
    client: ExecClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (the test above hit its fail_after under load): a late consumer that
    lags holds acknowledgements back at its queue, so the daemon fills its window and
    pauses the process; the consumer then finds its gap evicted and fails. Failing
    ended its lag, and with it the only thing that would acknowledge what it held back:
    the process stayed paused for ever and ``wait()`` never returned. Here the window
    is one 4 KiB chunk (the child writes atomic 4 KiB blocks) and the consumer fails
    only once the daemon holds a chunk the client will not acknowledge, i.e. paused."""
    monkeypatch.setattr(client_process, "QUEUE_MAX_EVENTS", 2)
    marker = tmp_path / "went-on"
    script = (
        "import os\n"
        "for _ in range(64): os.write(1, bytes(4096))\n"
        f"open({str(marker)!r}, 'w').close()\n"
        "raise SystemExit(3)"
    )
    with trio.fail_after(20):
        proc = await client.start([sys.executable, "-c", script])
        stream = proc._stream
        while not (  # noqa: ASYNC110 - polls the daemon
            stream.lagging
            and (await daemon_read(client, proc.process_id)).earliest_retained_seq
            > stream.queued_seq + 1
        ):
            await trio.sleep(0.01)
        events = proc.events()
        assert isinstance(await events.__anext__(), Output)  # it consumes, and lags
        await until(
            lambda: stream.process_id not in client._ack_due
            and stream.reorder.last_published_seq > stream.acked_seq
        )
        rest = [event async for event in events]  # its queue, then its gap: evicted
        assert isinstance(rest[-1], Failed)
        assert "no longer retained" in rest[-1].message
        assert await proc.wait() == 3
        assert await trio.Path(marker).exists()


@pytest.mark.parametrize("server_config", [ServerConfig(retain_bytes=64 * 1024)])
@pytest.mark.parametrize("hold_output", [True, False], ids=["held", "acked"])
async def test_hold_output_keeps_everything_for_a_late_consumer(
    client: ExecClient, monkeypatch: pytest.MonkeyPatch, hold_output: bool
) -> None:
    """1 MiB of output, a 64 KiB client queue and 64 KiB retention; the consumer comes
    only after the process closed. With ``hold_output`` nothing was acknowledged
    before a consumer took it, so the daemon kept it all (within its 4 MiB ack window)
    and the late consumer gets every byte; without it, the client acknowledged what
    arrived, the daemon evicted it, and the late consumer fails alone."""
    monkeypatch.setattr(client_process, "QUEUE_MAX_BYTES", 64 * 1024)
    with trio.fail_after(20):
        size = 1024 * 1024
        proc = await client.start(writer_script(size), hold_output=hold_output)
        assert await proc.wait() == 0
        events = await collect(proc)
        if hold_output:
            assert_complete(events)
            assert stdout_of(events) == pattern(size)
        else:
            assert isinstance(events[-1], Failed)
            assert "no longer retained" in events[-1].message


@pytest.mark.parametrize("server_config", [ServerConfig(ack_window_bytes=256 * 1024)])
async def test_hold_output_pauses_the_process_until_a_consumer_takes_it(
    client: ExecClient,
) -> None:
    """Past the daemon's ack window the held process pauses; a consumer that then
    comes takes the output, which acknowledges it, and the process runs to its end."""
    with trio.fail_after(20):
        size = 4 * 1024 * 1024
        proc = await client.start(writer_script(size), hold_output=True)
        while (await daemon_read(client, proc.process_id)).next_seq == 1:  # noqa: ASYNC110
            await trio.sleep(0.01)  # polls the daemon: output has begun
        assert proc.returncode is None
        events = await collect(proc)
        assert_complete(events)
        assert stdout_of(events) == pattern(size)
        assert client.statistics().failed_processes == 0


async def test_hold_output_is_released_by_a_consumer_that_leaves(client: ExecClient) -> None:
    """A held process whose consumer breaks out early is no longer held: it runs on."""
    with trio.fail_after(20):
        proc = await client.start(writer_script(8 * 1024 * 1024), hold_output=True)
        async for _ in proc.events():
            break
        assert await proc.wait() == 0


async def test_hold_output_must_be_a_bool(client: ExecClient) -> None:
    with pytest.raises(TypeError, match="hold_output"):
        await client.start(["true"], hold_output="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("server_config", [ServerConfig(closed_ttl=0.2)])
async def test_a_consumer_that_comes_after_the_closed_ttl_gets_a_failed_event(
    client: ExecClient,
) -> None:
    """The daemon forgot the process (its closed TTL passed) before the consumer read
    what it missed: the stream ends with a terminal Failed, as for any loss, not with
    an exception out of ``events()``; ``wait()`` still has the exit code."""
    with trio.fail_after(20):
        size = 6 * 1024 * 1024  # past the consumer queue's 4 MiB
        proc = await client.start(writer_script(size))
        assert await proc.wait() == 0
        await until_forgotten(client, proc.process_id)  # past the TTL
        events = await collect(proc)
        assert isinstance(events[-1], Failed)
        assert "unknown process id" in events[-1].message
        assert [e.seq for e in events[:-1]] == list(range(1, len(events)))  # type: ignore[union-attr]
        assert await proc.wait() == 0


async def test_a_consumer_that_pauses_mid_stream_loses_nothing(
    client: ExecClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default retention (1 MiB), 20 MB of output: a consumer that stops for a while
    after its first event falls far behind its queue. What it has not taken is not
    acknowledged, so the daemon holds it and pauses the process (backpressure) instead
    of evicting it; the consumer then reads it back and gets every byte."""
    daemon = track_daemon(monkeypatch)
    with trio.fail_after(30):
        size = 20 * 1024 * 1024
        proc = await client.start(writer_script(size))
        events: list[Event] = []
        async for event in proc.events():
            if not events:
                while not proc._stream.lagging:  # noqa: ASYNC110 - plain client state
                    await trio.sleep(0.01)
                # Until the daemon runs into its ack window and pauses the process.
                await until(lambda: daemon.paused(proc.process_id))
            events.append(event)
        assert_complete(events)
        assert stdout_of(events) == pattern(size)
        assert client.statistics().failed_processes == 0


async def test_a_consumer_that_stops_early_does_not_stall_the_process(
    client: ExecClient,
) -> None:
    """The backpressure above lasts only while the consumer iterates: one that breaks
    out (its generator is closed) releases what it held back, and the process runs to
    its exit."""
    with trio.fail_after(30):
        size = 20 * 1024 * 1024
        proc = await client.start(writer_script(size))
        async for _ in proc.events():
            while not proc._stream.lagging:  # noqa: ASYNC110 - plain client state
                await trio.sleep(0.01)
            break
        assert await proc.wait() == 0


async def test_fast_consumer_needs_no_reads(client: ExecClient) -> None:
    with trio.fail_after(20):
        size = 8 * 1024 * 1024
        proc = await client.start(writer_script(size))
        events = await collect(proc)
        assert_complete(events)
        assert stdout_of(events) == pattern(size)
        assert client.statistics().calls == {"process/start": 1}


# --- backend parity ----------------------------------------------------------------------


async def test_backends_yield_identical_events(nursery: trio.Nursery) -> None:
    script = (
        "printf out; sleep 0.15; printf 'err\\n' >&2; sleep 0.15; printf '\\000\\377bin';"
        " sleep 0.15; exit 3"
    )
    rows = {}
    with trio.fail_after(10):
        for kind in BACKENDS:
            async with open_backend(kind, nursery, ServerConfig()) as client:
                proc = await client.start(["sh", "-c", script])
                rows[kind] = as_tuples(await collect(proc))
                assert client.statistics().calls == {"process/start": 1}
    assert (
        rows["local"]
        == rows["remote"]
        == [
            ("output", 1, "stdout", b"out", None),
            ("output", 2, "stderr", b"err\n", None),
            ("output", 3, "stdout", b"\x00\xffbin", None),
            ("exited", 4, None, None, 3),
            ("closed", 5, None, None, None),
        ]
    )
