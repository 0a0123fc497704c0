"""Interop: every public call of our client against the real Codex exec-server 0.147
(issue 14), the way a host would use it, plus a dropped connection and its recovery
through a fault-injecting proxy.

Where Codex differs on purpose, the difference is asserted (so a change on either side is
noticed) and the reason given; the list is in docs/protocol.md §11:

- ``process/signal`` carries only ``interrupt``: ``terminate()`` (SIGTERM) and
  ``send_signal`` of SIGHUP/SIGKILL are refused, ``ProtocolError`` -32602; ``kill()``
  (``process/terminate``) works and reports the death as -1 (we: 128+N).
- ``closeStdin`` is not supported: Codex ignores the member, so stdin would stay open
  for ever; the client knows it from the missing capability and raises instead (so
  ``run(input=...)`` fails at once rather than hang).
- ``ttySize`` is ignored (the tty is 24x80) and ``process/resize`` is -32601.
- ``initialize`` returns no ``environmentInfo``; ``environment/info`` has only ``shell``,
  ``cwd`` and ``capabilities``; ``getMetadata.createdAtMs`` is 0; OS error messages are
  Rust's, without the path (the client still raises the matching ``OSError``, whose
  ``filename`` is then None).

Set EXEC_RUNTIME_CODEX to the ``codex`` binary (``tests/interop/install_codex.sh``);
under CI a missing Codex fails these tests.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import exec_runtime
from exec_runtime import (
    Closed,
    ExecRuntimeError,
    Exited,
    Output,
    ProtocolError,
    RemoteFileExistsError,
    RemoteFileNotFoundError,
    RemoteIsADirectoryError,
    RemoteNotADirectoryError,
    RemoteOSError,
    StdinClosedError,
    TransportError,
)
from exec_runtime.testing import fault_proxy
from tests.interop.codex_wire import open_codex, require_codex

pytestmark = require_codex()

TIMEOUT = 20
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


@pytest.fixture
async def codex_url(tmp_path: Path) -> AsyncIterator[str]:
    async with open_codex(tmp_path / "codex-home") as url:
        yield url


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory of the test's own (``tmp_path`` also holds Codex's home)."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


@pytest.fixture
async def client(codex_url: str) -> AsyncIterator[exec_runtime.ExecClient]:
    async with exec_runtime.open_client(codex_url) as client:
        yield client


async def output_until(events: AsyncIterator[exec_runtime.Event], wanted: bytes) -> bytes:
    """Collect output events until ``wanted`` has been seen."""
    seen = b""
    async for event in events:
        if isinstance(event, Output):
            seen += event.data
            if wanted in seen:
                return seen
    raise AssertionError(f"the events ended before {wanted!r}: {seen!r}")


# --- processes ---------------------------------------------------------------------------------


async def test_start_events_wait(client: exec_runtime.ExecClient, work: Path) -> None:
    with trio.fail_after(TIMEOUT):
        proc = await client.start(
            ["sh", "-c", 'printf "$X"; pwd >&2; exit 4'],
            cwd=work,
            env={"X": "from-env", "PATH": os.environ["PATH"]},
        )
        assert proc.sandbox_type == "none"
        events = [event async for event in proc.events()]
        assert [event.seq for event in events] == list(range(1, len(events) + 1))
        out = b"".join(e.data for e in events if isinstance(e, Output) and e.stream == "stdout")
        err = b"".join(e.data for e in events if isinstance(e, Output) and e.stream == "stderr")
        assert (out, err) == (b"from-env", f"{work}\n".encode())
        assert [e.exit_code for e in events if isinstance(e, Exited)] == [4]
        assert isinstance(events[-1], Closed)
        assert await proc.wait() == 4
        assert proc.returncode == 4


async def test_run_with_options(client: exec_runtime.ExecClient, work: Path) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.run(["sh", "-c", 'printf "%s" "$0"'], arg0="named", cwd=work)
        assert (result.returncode, result.stdout) == (0, b"named")
        with pytest.raises(exec_runtime.CalledProcessError) as failed:
            await client.run(["sh", "-c", "printf no >&2; exit 2"])
        assert (failed.value.returncode, failed.value.stderr) == (2, b"no")
        with pytest.raises(exec_runtime.TimeoutExpired):
            await client.run(["sleep", "30"], timeout=0.2)
        with pytest.raises(FileNotFoundError):
            await client.run(["/nonexistent/cmd"])


async def test_write_then_interrupt(client: exec_runtime.ExecClient) -> None:
    with trio.fail_after(TIMEOUT):
        proc = await client.start(["cat"], pipe_stdin=True)
        events = proc.events()
        await proc.write(b"one")
        assert await output_until(events, b"one") == b"one"
        await proc.write(bytearray(b"two"))
        assert await output_until(events, b"two") == b"two"
        await proc.signal("interrupt")  # the one signal Codex carries
        assert await proc.wait() == 130
        rest = [event async for event in events]
        assert isinstance(rest[-1], Closed)


async def test_send_signal_sigint(client: exec_runtime.ExecClient) -> None:
    with trio.fail_after(TIMEOUT):
        proc = await client.start(["sleep", "30"])
        await proc.send_signal(signal.SIGINT)
        assert await proc.wait() == 130


async def test_only_interrupt_is_carried(client: exec_runtime.ExecClient) -> None:
    """Codex refuses every signal but ``interrupt`` (-32602); ours carries terminate,
    kill and hangup as an extension. The process is untouched: kill() still ends it."""
    with trio.fail_after(TIMEOUT):
        proc = await client.start(["sleep", "30"])
        with pytest.raises(ProtocolError) as refused:
            await proc.terminate()
        assert refused.value.code == INVALID_PARAMS
        for sig in (signal.SIGHUP, signal.SIGKILL, "terminate"):
            with pytest.raises(ProtocolError) as refused:
                await proc.send_signal(sig)
            assert refused.value.code == INVALID_PARAMS
        assert proc.returncode is None
        assert await proc.kill() is True
        # Codex 0.147 mostly reports -1 (PROTOCOL §10), about one run in 25 137.
        assert await proc.wait() in (-1, 137)
        assert await proc.kill() is False  # closed by now: nothing left running


async def test_close_stdin_is_refused_not_ignored(client: exec_runtime.ExecClient) -> None:
    """Codex ignores ``closeStdin``: the child would wait for EOF for ever. The client
    sees no ``closeStdin`` capability and says so instead."""
    with trio.fail_after(TIMEOUT):
        proc = await client.start(["cat"], pipe_stdin=True)
        with pytest.raises(ExecRuntimeError, match="closeStdin"):
            await proc.close_stdin()
        await proc.write(b"still open")
        assert await output_until(proc.events(), b"still open") == b"still open"
        assert await proc.kill() is True
        with pytest.raises(ExecRuntimeError, match="closeStdin"):
            await client.run(["cat"], input=b"never delivered")


async def test_write_without_a_pipe(client: exec_runtime.ExecClient) -> None:
    with trio.fail_after(TIMEOUT):
        proc = await client.start(["sleep", "30"])
        with pytest.raises(StdinClosedError):
            await proc.write(b"x")  # refused by the client: no pipe was asked for
        assert await proc.kill() is True


async def test_tty_size_ignored_and_resize_missing(client: exec_runtime.ExecClient) -> None:
    with trio.fail_after(TIMEOUT):
        proc = await client.start(["sh", "-c", "stty size; cat"], tty=True, tty_size=(30, 90))
        events = proc.events()
        assert await output_until(events, b"\n") == b"24 80\r\n"  # ttySize: an extension
        with pytest.raises(ProtocolError) as missing:
            await proc.resize(40, 100)
        assert missing.value.code == METHOD_NOT_FOUND
        await proc.write(b"typed\n")
        assert b"typed" in await output_until(events, b"typed\r\n")
        assert await proc.kill() is True


async def test_environment_info(client: exec_runtime.ExecClient) -> None:
    with trio.fail_after(TIMEOUT):
        assert client.environment is None  # not in Codex's initialize result
        info = await client.environment_info()
        assert info.shell.name in ("bash", "sh") and info.shell.path.startswith("/")
        assert info.cwd.startswith("file:///")
        assert info.capabilities["capabilityDiscoverySandbox"] is True
        assert info.capabilities["networkProxyLaunch"] is True
        assert info.executor_version is None  # our extension members: absent


# --- client.fs ----------------------------------------------------------------------------------


async def test_fs_files_and_directories(client: exec_runtime.ExecClient, work: Path) -> None:
    fs = client.fs
    with trio.fail_after(TIMEOUT):
        await fs.write_file(work / "f", b"hello")
        assert await fs.read_file(work / "f") == b"hello"
        assert await fs.read_file(str(work / "f")) == b"hello"
        await fs.create_directory(work / "d" / "e")
        await fs.create_directory(work / "d" / "e")  # recursive: existing is fine
        meta = await fs.get_metadata(work / "f")
        assert (meta.is_file, meta.is_directory, meta.is_symlink, meta.size) == (
            True,
            False,
            False,
            5,
        )
        assert meta.created_at_ms == 0 and meta.modified_at_ms > 0  # Codex: no birth time
        (work / "link").symlink_to(work / "d")
        assert (await fs.get_metadata(work / "link")).is_symlink is True
        real = os.path.realpath(work)  # noqa: ASYNC240
        assert await fs.canonicalize(work / "link" / ".." / "f") == f"{real}/f"
        entries = await fs.read_directory(work)
        names = sorted((e.file_name, e.is_directory, e.is_file) for e in entries)
        assert names == [("d", True, False), ("f", False, True), ("link", True, False)]
        walked = await fs.walk(work, max_depth=5, max_directories=10, max_entries=10)
        assert [(e.path, e.kind) for e in walked.entries] == [
            (f"{work}/d", "directory"),
            (f"{work}/f", "file"),
            (f"{work}/d/e", "directory"),
        ]
        assert (walked.errors, walked.truncated) == ([], False)
        await fs.copy(work / "f", work / "g")
        assert (work / "g").read_bytes() == b"hello"
        await fs.copy(work / "d", work / "d2", recursive=True)
        assert (work / "d2" / "e").is_dir()
        with pytest.raises(RemoteOSError) as not_empty:
            await fs.remove(work / "d2")  # os.rmdir by default
        assert not_empty.value.errno == errno.ENOTEMPTY
        await fs.remove(work / "d2", recursive=True)
        await fs.remove(work / "g")
        await fs.remove(work / "never", force=True)  # a missing path is fine
        assert sorted(os.listdir(work)) == ["d", "f", "link"]


async def test_fs_errors_are_os_errors(client: exec_runtime.ExecClient, work: Path) -> None:
    """Codex's messages carry no path and no errno data: the client maps them from the
    message, so the same ``OSError`` subclasses are raised (``filename`` None)."""
    fs = client.fs
    (work / "f").write_text("x")
    (work / "d" / "sub").mkdir(parents=True)
    cases = [
        (fs.read_file(work / "nope"), RemoteFileNotFoundError, errno.ENOENT),
        (fs.get_metadata(work / "nope"), RemoteFileNotFoundError, errno.ENOENT),
        (fs.remove(work / "nope", force=False), RemoteFileNotFoundError, errno.ENOENT),
        (fs.create_directory(work / "f", recursive=False), RemoteFileExistsError, errno.EEXIST),
        (fs.read_directory(work / "f"), RemoteNotADirectoryError, errno.ENOTDIR),
        (fs.write_file(work / "d", b""), RemoteIsADirectoryError, errno.EISDIR),
        (fs.remove(work / "d", recursive=False), RemoteOSError, errno.ENOTEMPTY),
    ]
    with trio.fail_after(TIMEOUT):
        for call, kind, number in cases:
            with pytest.raises(kind) as raised:
                await call
            assert isinstance(raised.value, OSError) and isinstance(raised.value, ProtocolError)
            assert raised.value.errno == number
            assert raised.value.filename is None  # Rust's message names no path
        with pytest.raises(ProtocolError) as refused:
            await fs.copy(work / "d", work / "d2")  # a directory needs recursive
        assert refused.value.code == INVALID_REQUEST
        with pytest.raises(ProtocolError) as refused:
            await fs.walk(work, max_depth=1, max_directories=0, max_entries=1)
        assert refused.value.code == INVALID_REQUEST


async def test_fs_relative_paths_are_refused(client: exec_runtime.ExecClient) -> None:
    """Codex 0.147 reads a relative ``file:`` URI from its root (``file:tmp`` is
    ``/tmp``); the client refuses a relative path or URI itself, -32602 as our daemon
    would, and sends nothing. It used to send ``file:tmp``: this removed ``/tmp``."""
    with trio.fail_after(TIMEOUT):
        for path in ("tmp", Path("tmp"), "file:tmp", "./tmp"):
            with pytest.raises(ProtocolError) as refused:
                await client.fs.get_metadata(path)
            assert refused.value.code == INVALID_PARAMS and "relative" in refused.value.message
        with pytest.raises(ProtocolError) as refused:
            await client.fs.copy("/etc/hostname", "tmp/x")
        assert "destinationPath" in refused.value.message
        assert "fs/getMetadata" not in client.statistics().calls
        assert "fs/copy" not in client.statistics().calls


async def test_open_read(client: exec_runtime.ExecClient, work: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 100)  # three blocks of at most 1 MiB
    (work / "big").write_bytes(data)
    (work / "empty").write_bytes(b"")
    with trio.fail_after(TIMEOUT):
        async with client.fs.open_read(work / "big") as blocks:
            got = [block async for block in blocks]
        assert [len(b) for b in got] == [1024 * 1024, 1024 * 1024, 100]
        assert b"".join(got) == data and blocks.offset == len(data)
        async with client.fs.open_read(work / "empty") as blocks:
            assert [block async for block in blocks] == []
        async with client.fs.open_read(work / "big") as blocks:
            async for block in blocks:
                assert block == data[: len(block)]
                break  # leaving early closes the handle
        with pytest.raises(RemoteFileNotFoundError):
            async with client.fs.open_read(work / "nope"):
                pass
        with pytest.raises(ProtocolError) as refused:
            async with client.fs.open_read(work):
                pass
        assert refused.value.code == INVALID_REQUEST


# --- a dropped connection ------------------------------------------------------------------------


async def test_recovery_through_a_proxy(codex_url: str, work: Path) -> None:
    """The link to Codex drops twice; the client resumes the session each time: a
    running process keeps its stdin and its stream (nothing lost, nothing twice), fs
    reads are retried, and an open read handle (the connection's) is gone."""
    (work / "f").write_bytes(b"x" * (3 * 1024 * 1024))
    with trio.fail_after(TIMEOUT):
        async with (
            fault_proxy(codex_url) as proxy,
            exec_runtime.open_client(proxy.url) as client,
        ):
            session = client.session_id
            proc = await client.start(["cat"], pipe_stdin=True)
            events = proc.events()
            await proc.write(b"before ")
            assert await output_until(events, b"before ") == b"before "
            proxy.drop()
            await proc.write(b"after")  # waits for the recovery, then is sent
            assert await output_until(events, b"after") == b"after"
            assert client.session_id == session
            assert client.statistics().recoveries == 1
            assert await client.fs.read_file(work / "f") == b"x" * (3 * 1024 * 1024)

            async with client.fs.open_read(work / "f") as blocks:
                first = await blocks.__anext__()
                proxy.drop()
                with pytest.raises(ProtocolError) as gone:
                    await blocks.__anext__()  # the handle died with its connection
                assert gone.value.code == -32004
            assert len(first) == 1024 * 1024
            assert client.statistics().recoveries == 2

            assert await proc.kill() is True
            assert await proc.wait() in (-1, 137)
            rest = [event async for event in events]
            assert isinstance(rest[-1], Closed)
            assert [e.seq for e in rest] == list(range(rest[0].seq, rest[-1].seq + 1))
            assert proxy.controller.drops == 2


async def test_start_caught_by_a_drop_fails_as_transport_error(codex_url: str) -> None:
    """A ``process/start`` whose answer is lost: the outcome is unknown, so it is not
    replayed; the client raises ``TransportError`` and kills what may have started."""
    from exec_runtime.testing import FaultPlan

    plan = FaultPlan(drop_at_method="response:process/start")
    with trio.fail_after(TIMEOUT):
        async with (
            fault_proxy(codex_url, plan) as proxy,
            exec_runtime.open_client(proxy.url) as client,
        ):
            with pytest.raises(TransportError):
                await client.start(["sleep", "30"], process_id="lost")
            result = await client.run(["sh", "-c", "printf ok"])  # recovered
            assert result.stdout == b"ok"
            assert proxy.controller.drops == 1
