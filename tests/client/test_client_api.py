"""Issue 16: the host developer's API. Arguments are checked before anything is sent,
OS errors are OSErrors, connecting raises only our errors, subprocess conventions."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import exec_runtime
from exec_runtime import (
    CalledProcessError,
    ConnectError,
    EnvPolicy,
    ExecClient,
    ExecRuntimeError,
    ProtocolError,
    ServerConfig,
    StdinClosedError,
    TimeoutExpired,
    TransportError,
)
from exec_runtime._errors import os_error_from

ROOT = Path(__file__).resolve().parents[2]


# --- 1. validated before anything is sent ------------------------------------------------


async def test_input_str_is_refused_before_the_command_starts(
    client: ExecClient, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    with trio.fail_after(10):
        with pytest.raises(TypeError, match="input must be bytes"):
            await client.run(["sh", "-c", f"echo I RAN > {marker}; cat"], input="text")  # type: ignore[arg-type]
        assert client.statistics().calls.get("process/start", 0) == 0
        assert not marker.exists()
        proc = await client.start(["cat"], pipe_stdin=True)
        with pytest.raises(TypeError, match="encode"):
            await proc.write("text")  # type: ignore[arg-type]
        await proc.write(bytearray(b"bytes-like "))
        await proc.close_stdin()
        assert await proc.wait() == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"env_policy": {"inheritt": "none"}}, ValueError, "unknown env_policy key 'inheritt'"),
        ({"env_policy": {"inherit": "al"}}, ValueError, "inherit must be one of"),
        ({"env_policy": "all"}, TypeError, "EnvPolicy"),
        ({"env_policy": {"set": {"A": 1}}}, TypeError, r"set\['A'\]"),
        ({"env_policy": {"exclude": "X*"}}, TypeError, "exclude"),
        ({"env": {"A=B": "x"}}, ValueError, "invalid variable name 'A=B'"),
        ({"env": {"A": None}}, TypeError, r"env\['A'\]"),
        ({"cwd": b"/tmp"}, TypeError, "cwd"),
        ({"tty_size": (24, 80)}, ValueError, "tty_size needs tty=True"),
        ({"tty": True, "tty_size": (0, 80)}, ValueError, "between 1 and 65535"),
        ({"tty": True, "tty_size": ("24", 80)}, TypeError, "rows must be an int"),
        ({"arg0": 3}, TypeError, "arg0"),
        ({"tty": "yes"}, TypeError, "tty must be a bool"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"check": None}, TypeError, "check must be a bool"),
        ({"sandbox": "read-only"}, TypeError, "sandbox"),
    ],
)
async def test_bad_arguments_raise_before_anything_is_sent(
    client: ExecClient, tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    marker = tmp_path / "ran"
    with trio.fail_after(10):
        with pytest.raises(error, match=match):
            await client.run(["sh", "-c", f"touch {marker}"], **kwargs)
    assert client.statistics().calls.get("process/start", 0) == 0
    assert not marker.exists()


@pytest.mark.parametrize("argv", ["echo hi", b"echo", [b"echo"], ["echo", None], ["a\0b"], []])
async def test_bad_argv(client: ExecClient, argv: Any) -> None:
    with trio.fail_after(5), pytest.raises((TypeError, ValueError)):
        await client.start(argv)
    assert client.statistics().calls.get("process/start", 0) == 0


async def test_env_policy_accepts_snake_and_camel_case_and_the_typed_class(
    client: ExecClient,
) -> None:
    env = {"PATH": os.environ["PATH"], "KEEP_ME": "1", "DROP_ME": "2"}
    argv = ["/usr/bin/env"]
    with trio.fail_after(10):
        for policy in (
            {"inherit": "none", "include_only": ["KEEP_ME"]},
            {"inherit": "none", "includeOnly": ["KEEP_ME"]},
            EnvPolicy(inherit="none", include_only=["KEEP_ME"]),
        ):
            done = await client.run(argv, env_policy=policy, env=env)
            # env is an overlay applied after include_only: all three stay. The child
            # gets nothing of the daemon's environment (inherit none).
            names = {line.partition(b"=")[0] for line in done.stdout.splitlines()}
            assert b"HOME" not in names and b"KEEP_ME" in names, policy
        only = await client.run(argv, env_policy={"inherit": "all", "include_only": ["PATH"]})
        assert [line.partition(b"=")[0] for line in only.stdout.splitlines()] == [b"PATH"]


# --- 2. OS errors are OSErrors -------------------------------------------------------------


async def test_a_missing_command_is_file_not_found(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        for check in (True, False):
            with pytest.raises(FileNotFoundError) as info:
                await client.run(["no-such-command-xyz"], check=check)
            assert info.value.errno == errno.ENOENT
            assert info.value.filename == "no-such-command-xyz"
            assert isinstance(info.value, ExecRuntimeError)
            assert isinstance(info.value, ProtocolError)  # code and message kept
            assert info.value.code == -32603
        # FileNotFoundError where the daemon sends the errno in the error's data;
        # from the message alone (no data) a bad cwd reads as NotADirectoryError.
        with pytest.raises((FileNotFoundError, NotADirectoryError)) as missing_cwd:
            await client.run(["true"], cwd=tmp_path / "nope")
        assert missing_cwd.value.filename == str(tmp_path / "nope")
        (tmp_path / "file").write_text("x")
        with pytest.raises(NotADirectoryError) as file_cwd:
            await client.run(["true"], cwd=tmp_path / "file")
        assert file_cwd.value.errno == errno.ENOTDIR
        with pytest.raises(PermissionError) as not_executable:
            await client.run([str(tmp_path / "file")])
        assert not_executable.value.errno == errno.EACCES
        assert (await client.run(["true"])).returncode == 0  # nothing else broke


async def test_fs_errors_are_os_errors(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        with pytest.raises(FileNotFoundError) as missing:
            await client.fs.read_file(tmp_path / "nope")
        assert (missing.value.errno, missing.value.filename) == (
            errno.ENOENT,
            str(tmp_path / "nope"),
        )
        with pytest.raises(FileExistsError):
            await client.fs.create_directory(tmp_path, recursive=False)
        (tmp_path / "f").write_text("x")
        with pytest.raises(NotADirectoryError):
            await client.fs.read_directory(tmp_path / "f")
        with pytest.raises(FileNotFoundError):
            async with client.fs.open_read(tmp_path / "nope"):
                pass


@pytest.mark.parametrize(
    ("message", "kind", "number", "filename"),
    [
        ("No such file or directory (os error 2)", FileNotFoundError, errno.ENOENT, None),
        ("[Errno 13] Permission denied: '/x'", PermissionError, errno.EACCES, "/x"),
        ("/x/y: Not a directory", NotADirectoryError, errno.ENOTDIR, "/x/y"),
        ("/x: Is a directory", IsADirectoryError, errno.EISDIR, "/x"),
        ("argv must not be empty", None, None, None),
    ],
)
def test_errno_from_a_message_when_the_daemon_sends_no_data(
    message: str, kind: type[OSError] | None, number: int | None, filename: str | None
) -> None:
    """A Codex daemon sends no ``data``: the message says which OS error it was."""
    error = os_error_from(ProtocolError(-32603, message))
    if kind is None:
        assert type(error) is ProtocolError
        return
    assert isinstance(error, kind) and isinstance(error, ProtocolError)
    assert (error.errno, error.filename, error.message) == (number, filename, message)


# --- 3. one exception boundary -------------------------------------------------------------


async def test_connecting_raises_only_our_errors(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with trio.fail_after(5), pytest.raises(ConnectError) as refused:
        async with exec_runtime.open_client(f"ws://127.0.0.1:{port}"):
            pass
    assert isinstance(refused.value, TransportError) and isinstance(refused.value, OSError)
    assert refused.value.errno == errno.ECONNREFUSED

    url = await nursery.start(exec_runtime.serve, ServerConfig())
    # wss:// against a ws:// daemon: fails at once (not after the 10 s connect timeout).
    with trio.fail_after(3), pytest.raises(ConnectError, match="serves ws://, not wss://"):
        async with exec_runtime.open_client(url.replace("ws://", "wss://")):
            pass
    for bad in ("http://127.0.0.1:1", "ws://", "ws://127.0.0.1:99999"):
        with pytest.raises(ValueError):
            async with exec_runtime.open_client(bad):
                pass


async def test_open_client_reads_the_token_from_the_environment_or_a_file(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await nursery.start(exec_runtime.serve, ServerConfig(token="s3cret"))
    with trio.fail_after(10):
        with pytest.raises(exec_runtime.ConnectionRejectedError) as rejected:
            async with exec_runtime.open_client(url):
                pass
        assert rejected.value.status_code == 401
        monkeypatch.setenv("EXEC_RUNTIME_TOKEN", "s3cret")
        async with exec_runtime.open_client(url) as client:
            assert (await client.run(["true"])).returncode == 0
        monkeypatch.delenv("EXEC_RUNTIME_TOKEN")
        token_file = tmp_path / "token"
        token_file.write_text("s3cret\n")
        async with exec_runtime.open_client(url, token_file=token_file) as client:
            assert (await client.run(["true"])).returncode == 0


# --- 4. subprocess conventions -------------------------------------------------------------

TRAP_TERM = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"


async def _ready(proc: exec_runtime.ProcessHandle) -> None:
    async for event in proc.events():
        if isinstance(event, exec_runtime.Output) and b"ready" in event.data:
            return


async def test_terminate_sends_sigterm_and_kill_sigkill(client: ExecClient) -> None:
    with trio.fail_after(10):
        proc = await client.start(["sh", "-c", TRAP_TERM])
        events = proc.events()
        async for event in events:
            if isinstance(event, exec_runtime.Output) and b"ready" in event.data:
                break
        await proc.terminate()  # SIGTERM: the trap runs
        assert await proc.wait() == 3
        proc = await client.start(["sh", "-c", TRAP_TERM])
        assert await proc.kill() is True
        assert await proc.wait() == 128 + signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, 15, "SIGTERM", "TERM", "terminate"])
async def test_send_signal_takes_signals_ints_and_names(client: ExecClient, sig: Any) -> None:
    with trio.fail_after(10):
        proc = await client.start(["sleep", "30"])
        await proc.send_signal(sig)
        assert await proc.wait() == 128 + signal.SIGTERM


async def test_send_signal_refuses_what_the_wire_cannot_carry(client: ExecClient) -> None:
    with trio.fail_after(10):
        proc = await client.start(["sleep", "30"])
        for sig in (signal.SIGUSR1, "SIGBOGUS", 999):
            with pytest.raises(ValueError, match="SIGINT, SIGTERM, SIGKILL, SIGHUP"):
                await proc.send_signal(sig)
        assert client.statistics().calls.get("process/signal", 0) == 0
        await proc.kill()


async def test_a_death_by_signal_is_a_negative_returncode(client: ExecClient) -> None:
    with trio.fail_after(10):
        with pytest.raises(CalledProcessError) as info:
            await client.run(["sh", "-c", "kill -TERM $$"])
        assert info.value.returncode == -signal.SIGTERM
        assert info.value.exit_code == 128 + signal.SIGTERM  # the wire's code
        assert "died with <Signals.SIGTERM" in str(info.value)
        assert isinstance(info.value, subprocess.CalledProcessError)
        done = await client.run(["sh", "-c", "kill -KILL $$"], check=False)
        assert (done.returncode, done.exit_code) == (-signal.SIGKILL, 137)
        assert (await client.run(["sh", "-c", "exit 3"], check=False)).returncode == 3


async def test_run_timeout_kills_and_raises(client: ExecClient) -> None:
    with trio.fail_after(10):
        with pytest.raises(TimeoutExpired) as info:
            await client.run(["sh", "-c", "echo partial; exec sleep 30"], timeout=0.5)
        assert isinstance(info.value, subprocess.TimeoutExpired)
        assert isinstance(info.value, TimeoutError)
        assert info.value.timeout == 0.5
        assert info.value.output == b"partial\n"
        assert (await client.run(["true"], timeout=5)).returncode == 0


async def test_run_takes_tty_size_and_arg0(client: ExecClient) -> None:
    with trio.fail_after(10):
        done = await client.run(["stty", "size"], tty=True, tty_size=(33, 101))
        assert done.stdout.strip() == b"33 101"
        named = await client.run(
            [sys.executable, "-c", "import sys; print(sys.argv[0])"], arg0="my-name"
        )
        assert named.returncode == 0


async def test_a_write_without_pipe_stdin_says_so(client: ExecClient) -> None:
    with trio.fail_after(10):
        proc = await client.start(["sleep", "30"])
        with pytest.raises(StdinClosedError, match="without pipe_stdin=True"):
            await proc.write(b"x")
        assert client.statistics().calls.get("process/write", 0) == 0
        await proc.kill()


# --- CLI ------------------------------------------------------------------------------------


async def test_cli_exits_127_for_a_missing_command_and_126_for_a_non_executable(
    tmp_path: Path,
) -> None:
    script = tmp_path / "not-executable"
    script.write_text("echo hi\n")
    run = [sys.executable, "-m", "exec_runtime", "run", "--"]
    with trio.fail_after(30):
        missing = await trio.run_process(
            [*run, "no-such-command-xyz"], capture_stderr=True, check=False, cwd=ROOT
        )
        denied = await trio.run_process(
            [*run, str(script)], capture_stderr=True, check=False, cwd=ROOT
        )
    assert missing.returncode == 127, missing.stderr
    assert b"no-such-command-xyz: No such file or directory" in missing.stderr
    assert denied.returncode == 126, denied.stderr
    assert b"Permission denied" in denied.stderr


def test_exec_client_has_no_public_constructor() -> None:
    """trio's NoPublicConstructor: only the openers make clients (they own its tasks)."""
    with pytest.raises(TypeError, match=r"no public constructor.*open_client"):
        ExecClient(object(), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="open_client"):
        ExecClient()  # type: ignore[call-arg]


def test_benchmark_switches_are_not_public() -> None:
    import inspect

    assert "final_read" not in inspect.signature(exec_runtime.open_client).parameters


def test_handles_and_fs_reach_the_client_only_through_its_port() -> None:
    """ProcessHandle, FsClient and the pool call no private client method (they use
    ``_client/link.py``'s interface), and nothing reaches into a handle's stream."""
    import re

    import exec_runtime._client as client_package

    root = Path(client_package.__file__).parent
    private_call = re.compile(r"\bclient\._[a-z]|\._client\._|\bproc\._stream\b")
    for name in ("process.py", "fs.py", "pool.py", "client.py"):
        text = (root / name).read_text()
        if name == "client.py":  # the Port and the pool's helpers live there, by design
            text = text.split("class Port:")[0]
        assert not private_call.search(text), (name, private_call.findall(text))
