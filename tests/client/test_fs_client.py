"""``client.fs`` (PROTOCOL.md §8) through the public client, on both backends.

Every test runs twice: ``local`` (``open_local()``, the in-process runtime) and
``remote`` (an in-process daemon on a loopback WebSocket, ``open_client(url)``). The
bodies are identical, so passing both is the backend-parity check. Cases the public API
cannot express (raw ``fs/readBlock`` offsets and lengths, handle ids) go through the
client's private ``_call``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import exec_runtime
from exec_runtime import ExecClient, ProtocolError, ServerConfig
from exec_runtime._client.fs import (
    BLOCK_SIZE,
    WALK_MAX_DEPTH,
    WALK_MAX_DIRECTORIES,
    WALK_MAX_ENTRIES,
    BlockReader,
)
from exec_runtime._daemon import fs_service as daemon_fs
from exec_runtime._wire.uris import file_uri
from protocol_schema import EmptyResult
from protocol_schema.fs import (
    FsCloseParams,
    FsDirectoryEntry,
    FsGetMetadataParams,
    FsMetadata,
    FsOpenParams,
    FsOpenResult,
    FsReadBlockParams,
    FsReadBlockResult,
    FsWalkResult,
)
from tests.support.unprivileged import IS_ROOT, deny_as_the_os_denies_nobody, world_traversable_dir

NOT_FOUND = -32004
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
MIB = 1024 * 1024
MAX_HANDLES = 128
HAVE_PROC_FD = os.path.isdir("/proc/self/fd")

# ---------------------------------------------------------------------------
# Backends


@attrs.frozen
class Backend:
    name: str
    connect: Callable[[], AbstractAsyncContextManager[ExecClient]]
    """Open one more client (a new connection) to the same daemon, for remote."""


@pytest.fixture(params=["local", "remote"])
async def backend(request: pytest.FixtureRequest, nursery: trio.Nursery) -> Backend:
    if request.param == "local":
        return Backend("local", exec_runtime.open_local)
    url = await nursery.start(exec_runtime.serve, ServerConfig())
    return Backend("remote", lambda: exec_runtime.open_client(url))


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[ExecClient]:
    async with backend.connect() as client:
        yield client


# ---------------------------------------------------------------------------
# Helpers


async def error_of(awaitable: Awaitable[Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        await awaitable
    return info.value


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_source(tmp_path: Path) -> Path:
    """The issue's tree: source/{nested/, root.txt, nested/note.txt}."""
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    (source / "root.txt").write_text("root")
    (source / "nested" / "note.txt").write_text("note")
    return source


FULL = [("nested", "directory"), ("root.txt", "file"), ("nested/note.txt", "file")]


def listed(result: FsWalkResult) -> list[tuple[str, str]]:
    return [(e.path, e.kind) for e in result.entries]


async def walk(
    client: ExecClient,
    root: Path | str,
    *,
    max_depth: int = 64,
    max_directories: int = 10_000,
    max_entries: int = 50_000,
    follow: bool = False,
    prune: bool = False,
) -> FsWalkResult:
    result = await client.fs.walk(
        root,
        max_depth=max_depth,
        max_directories=max_directories,
        max_entries=max_entries,
        follow_directory_symlinks=follow,
        prune_hidden_directories=prune,
    )
    # Each path is an absolute native path under the root (checked here); the tests
    # compare them relative to the root.
    prefix = os.fspath(root) + "/"
    for item in [*result.entries, *result.errors]:
        assert item.path.startswith(prefix), (item.path, prefix)
        item.path = item.path[len(prefix) :]
    return result


async def raw_open(client: ExecClient, path: Path, handle_id: str) -> str:
    params = FsOpenParams(handle_id=handle_id, path=file_uri(path))
    return (await client._call("fs/open", params, FsOpenResult)).handle_id


async def raw_block(
    client: ExecClient, handle_id: str, offset: int, length: int
) -> tuple[bytes, bool]:
    params = FsReadBlockParams(handle_id=handle_id, offset=offset, len=length)
    result = await client._call("fs/readBlock", params, FsReadBlockResult)
    return result.chunk, result.eof


async def raw_close(client: ExecClient, handle_id: str) -> None:
    await client._call("fs/close", FsCloseParams(handle_id=handle_id), EmptyResult)


async def assert_all_handles_free(client: ExecClient, path: Path) -> None:
    """The connection has all 128 handles free: 128 opens succeed, the 129th does not."""
    ids = [uuid.uuid4().hex for _ in range(MAX_HANDLES)]
    for handle_id in ids:
        await raw_open(client, path, handle_id)
    error = await error_of(raw_open(client, path, "one-too-many"))
    assert error.code == INVALID_REQUEST
    for handle_id in ids:
        await raw_close(client, handle_id)


def fds_open_on(path: Path) -> int:
    """How many descriptors of this process (the daemon runs in it) point at ``path``."""
    target = os.path.realpath(path)
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == target:
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


async def wait_no_fds_on(path: Path) -> None:
    """The daemon closes a connection's handles asynchronously after the client leaves."""
    # Polling: the descriptor table has no event to wait on.
    while fds_open_on(path):  # noqa: ASYNC110
        await trio.sleep(0.01)


async def read_all(reader: BlockReader) -> list[bytes]:
    return [block async for block in reader]


# ---------------------------------------------------------------------------
# fs/walk


async def test_walk_tree_and_limits(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        source = make_source(tmp_path)
        result = await walk(client, source)
        assert listed(result) == FULL
        assert result.errors == []
        assert not result.truncated

        result = await walk(client, source, max_depth=0)
        assert (listed(result), result.truncated) == (FULL[:2], False)

        result = await walk(client, source, max_directories=1)
        assert (listed(result), result.truncated) == (FULL[:2], True)

        result = await walk(client, str(source), max_entries=1)
        assert (listed(result), result.truncated) == (FULL[:1], True)

        # Exactly max_entries entries and nothing more is not truncated.
        result = await walk(client, source, max_entries=3)
        assert (listed(result), result.truncated) == (FULL, False)


@pytest.mark.parametrize(
    ("max_depth", "max_directories", "max_entries"),
    # maxDepth 0 is valid (the root's children only, as Codex); the other two limits
    # start at 1. A negative limit is -32602 (test_walk_negative_limit_is_invalid_params).
    [(1, 0, 1), (1, 1, 0), (65, 1, 1), (1, 10_001, 1), (1, 1, 50_001)],
)
async def test_walk_invalid_limits_checked_before_the_root(
    client: ExecClient, tmp_path: Path, max_depth: int, max_directories: int, max_entries: int
) -> None:
    with trio.fail_after(10):
        for root in (make_source(tmp_path), tmp_path / "missing"):
            error = await error_of(
                walk(
                    client,
                    root,
                    max_depth=max_depth,
                    max_directories=max_directories,
                    max_entries=max_entries,
                )
            )
            assert error.code == INVALID_REQUEST  # not -32004: the root was never touched
            assert "fs/walk options" in error.message


async def test_walk_largest_limits_are_accepted(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await walk(
            client, make_source(tmp_path), max_depth=64, max_directories=10_000, max_entries=50_000
        )
        assert listed(result) == FULL


async def test_walk_file_root_is_empty_and_missing_root_not_found(
    client: ExecClient, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        result = await walk(client, write(tmp_path / "file", b"x"))
        assert result == FsWalkResult(entries=[], errors=[], truncated=False)
        error = await error_of(walk(client, tmp_path / "missing"))
        assert error.code == NOT_FOUND


def make_links(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "inside.txt").write_text("x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "far.txt").write_text("x")
    (root / "file.txt").write_text("x")
    (root / "to_file").symlink_to(root / "file.txt")
    (root / "to_outside").symlink_to(tmp_path / "outside")
    (root / "broken").symlink_to(tmp_path / "nowhere")
    return root


async def test_walk_skips_symlinks_unless_following_directory_links(
    client: ExecClient, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        root = make_links(tmp_path)
        assert listed(await walk(client, root)) == [
            ("dir", "directory"),
            ("file.txt", "file"),
            ("dir/inside.txt", "file"),
        ]
        # Only the link to a directory appears, and it is descended into.
        assert listed(await walk(client, root, follow=True)) == [
            ("dir", "directory"),
            ("file.txt", "file"),
            ("to_outside", "directory"),
            ("dir/inside.txt", "file"),
            ("to_outside/far.txt", "file"),
        ]


async def test_walk_symlink_cycle_terminates(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        root = tmp_path / "root"
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "b" / "up").symlink_to(root)
        (root / "a" / "self").symlink_to(root / "a")
        result = await walk(client, root, follow=True)
        assert listed(result) == [
            ("a", "directory"),
            ("a/b", "directory"),
            ("a/self", "directory"),
            ("a/b/up", "directory"),
        ]
        assert not result.truncated


async def test_walk_prune_hidden_directories(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        root = tmp_path / "root"
        (root / ".git").mkdir(parents=True)
        (root / ".git" / "HEAD").write_text("x")
        (root / ".env").write_text("x")
        assert listed(await walk(client, root, prune=True)) == [
            (".env", "file"),
            (".git", "directory"),
        ]
        assert (".git/HEAD", "file") in listed(await walk(client, root))


async def test_walk_unreadable_directory_is_an_error_entry(
    client: ExecClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root reads a chmod 000 directory: as root (CI) the listing is checked as nobody,
    # and the daemon gets the error the OS gave nobody (tests/support/unprivileged.py).
    with trio.fail_after(10), world_traversable_dir() as base:
        source = make_source(base if IS_ROOT else tmp_path)
        (source / "nested").chmod(0)
        try:
            if IS_ROOT:
                nested = source / "nested"
                deny_as_the_os_denies_nobody(monkeypatch, daemon_fs, "_list_walk_directory", nested)
            result = await walk(client, source)
        finally:
            (source / "nested").chmod(0o755)
        assert listed(result) == FULL[:2]
        assert [e.path for e in result.errors] == ["nested"]


async def test_walk_directory_that_cannot_be_read_is_an_error_entry(
    client: ExecClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Works as root too: the directory vanishes between its parent's listing and its own.
    real = daemon_fs._list_walk_directory

    def vanishing(path: str, follow: bool, limit: int) -> Any:
        if path.endswith("nested"):
            shutil.rmtree(path)
        return real(path, follow, limit)

    monkeypatch.setattr(daemon_fs, "_list_walk_directory", vanishing)
    with trio.fail_after(10):
        source = make_source(tmp_path)
        result = await walk(client, source)
        assert listed(result) == FULL[:2]
        assert [e.path for e in result.errors] == ["nested"]
        assert str(source / "nested") in result.errors[0].message
        assert not result.truncated


async def test_walk_response_budget(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        # Fourteen 250-character directory levels, then 1200 long file names: each file
        # entry costs about 3.8 KB of path, so 4 MiB runs out before the last one.
        root = tmp_path / "r"
        deep = root
        for level in range(14):
            deep = deep / (f"{level:02}" + "d" * 248)
        deep.mkdir(parents=True)
        for index in range(1200):
            (deep / (f"{index:05}" + "f" * 245)).touch()
        file_path_len = len(str(deep.relative_to(root))) + 1 + 250

        result = await walk(client, root)
        assert result.truncated
        # Each entry costs its absolute URI on the wire (root URI, "/", relative path).
        prefix = len(file_uri(root)) + 1
        file_path_len += prefix
        spent = sum(prefix + len(e.path.encode()) + 64 for e in result.entries)
        assert spent <= 4 * MIB
        assert spent + file_path_len + 64 > 4 * MIB  # the next one would not have fit
        assert 14 < len(result.entries) < 14 + 1200


# ---------------------------------------------------------------------------
# fs/open, fs/readBlock, fs/close


async def test_read_block_is_positional(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        handle = await raw_open(client, write(tmp_path / "digits", b"0123456789"), "digits")
        assert await raw_block(client, handle, 6, 3) == (b"678", False)
        assert await raw_block(client, handle, 1, 2) == (b"12", False)
        assert await raw_block(client, handle, 8, 4) == (b"89", True)
        assert await raw_block(client, handle, 0, 2) == (b"01", False)
        await raw_close(client, handle)


@pytest.mark.parametrize("length", [0, MIB + 1])
async def test_read_block_len_out_of_range(client: ExecClient, tmp_path: Path, length: int) -> None:
    with trio.fail_after(10):
        handle = await raw_open(client, write(tmp_path / "f", b"0123456789"), "h")
        error = await error_of(raw_block(client, handle, 0, length))
        assert error.code == INVALID_REQUEST
        assert await raw_block(client, handle, 0, MIB) == (b"0123456789", True)  # 1 MiB is fine


async def test_129th_handle_rejected_and_close_frees_capacity(
    client: ExecClient, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        path = write(tmp_path / "f", b"x")
        for index in range(MAX_HANDLES):
            await raw_open(client, path, f"h{index}")
        error = await error_of(raw_open(client, path, "one-too-many"))
        assert error.code == INVALID_REQUEST
        assert "too many open file handles" in error.message
        assert "at most 128" in error.message
        # open_read needs a handle too.
        error = await error_of(client.fs.open_read(path).__aenter__())
        assert error.code == INVALID_REQUEST
        await raw_close(client, "h7")
        assert await raw_open(client, path, "one-too-many") == "one-too-many"
        await raw_close(client, "one-too-many")
        await raw_close(client, "one-too-many")  # idempotent


async def test_handle_id_length(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        path = write(tmp_path / "f", b"x")
        error = await error_of(raw_open(client, path, "a" * 33))
        assert error.code == INVALID_REQUEST
        assert "32 bytes" in error.message
        assert await raw_open(client, path, "a" * 32) == "a" * 32
        # open_read's own ids are uuid4 hex: 32 bytes, within the limit.
        reader = client.fs.open_read(path)
        assert len(reader.handle_id.encode()) == 32
        async with reader as blocks:
            assert await read_all(blocks) == [b"x"]


async def test_fifo_rejected_promptly(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with trio.fail_after(2):  # no writer ever opens it: a blocking open would hang
            error = await error_of(client.fs.open_read(fifo).__aenter__())
            assert (error.code, error.message) == (INVALID_REQUEST, f"path {fifo} is not a file")
            error = await error_of(client.fs.read_file(fifo))
            assert (error.code, error.message) == (INVALID_REQUEST, f"path {fifo} is not a file")
        await assert_all_handles_free(client, write(tmp_path / "f", b"x"))


async def test_handle_keeps_reading_after_replace_and_remove(
    client: ExecClient, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        original = os.urandom(MIB + MIB // 2)
        path = write(tmp_path / "f", original)
        async with client.fs.open_read(path) as blocks:
            first = await blocks.__anext__()
            os.replace(write(tmp_path / "g", b"replacement"), path)
            second = await blocks.__anext__()
            path.unlink()
            assert await read_all(blocks) == []
        assert (len(first), len(second)) == (MIB, MIB // 2)
        assert first + second == original

        # The same on the raw methods: replaced, then removed.
        path = write(tmp_path / "f", b"original")
        handle = await raw_open(client, path, "raw")
        os.replace(write(tmp_path / "g", b"replacement"), path)
        assert await raw_block(client, handle, 0, 100) == (b"original", True)
        path.unlink()
        assert await raw_block(client, handle, 4, 100) == (b"inal", True)


async def test_two_mib_file_streams_as_two_one_mib_blocks(
    client: ExecClient, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        data = os.urandom(2 * MIB)
        path = write(tmp_path / "big", data)
        async with client.fs.open_read(path) as blocks:
            received = await read_all(blocks)
        assert [len(b) for b in received] == [MIB, MIB]
        assert b"".join(received) == data
        assert BLOCK_SIZE == MIB


async def test_open_read_never_yields_an_empty_block(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with client.fs.open_read(write(tmp_path / "empty", b"")) as blocks:
            assert await read_all(blocks) == []
            assert await read_all(blocks) == []  # still finished, no error
        async with client.fs.open_read(write(tmp_path / "small", b"hello")) as blocks:
            assert await read_all(blocks) == [b"hello"]
            assert blocks.offset == 5
        data = os.urandom(MIB + 1)
        async with client.fs.open_read(str(write(tmp_path / "odd", data))) as blocks:
            assert [len(b) for b in await read_all(blocks)] == [MIB, 1]


async def test_open_read_errors_surface_on_entry(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        error = await error_of(client.fs.open_read(tmp_path / "missing").__aenter__())
        assert error.code == NOT_FOUND
        error = await error_of(client.fs.open_read(tmp_path).__aenter__())
        assert (error.code, error.message) == (INVALID_REQUEST, f"path {tmp_path} is not a file")


class Stop(Exception):
    pass


@pytest.mark.parametrize("how", ["break", "exception", "cancel", "aclose"])
async def test_open_read_closes_its_handle_on_early_exit(
    client: ExecClient, tmp_path: Path, how: str
) -> None:
    with trio.fail_after(10):
        path = write(tmp_path / "big", os.urandom(3 * MIB))
        blocks_seen = 0
        if how == "break":
            async with client.fs.open_read(path) as blocks:
                async for _ in blocks:
                    blocks_seen += 1
                    break
        elif how == "exception":
            with pytest.raises(Stop):
                async with client.fs.open_read(path) as blocks:
                    async for _ in blocks:
                        blocks_seen += 1
                        raise Stop
        elif how == "cancel":
            with trio.CancelScope() as scope:
                async with client.fs.open_read(path) as blocks:
                    async for _ in blocks:
                        blocks_seen += 1
                        scope.cancel()
                        await trio.sleep(1)  # a checkpoint: cancelled here
            assert scope.cancelled_caught
        else:
            async with client.fs.open_read(path) as blocks:
                await blocks.__anext__()
                blocks_seen += 1
                await blocks.aclose()
                await blocks.aclose()  # idempotent
                with pytest.raises(trio.ClosedResourceError):
                    await blocks.__anext__()
        assert blocks_seen == 1
        if HAVE_PROC_FD:
            await wait_no_fds_on(path)
        # Were the handle still open, the 128th of these opens would fail.
        await assert_all_handles_free(client, path)


async def test_open_read_closes_its_handle_when_cancelled_while_opening(
    client: ExecClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon is slow to open: the client gives up (cancelled) with fs/open in
    # flight and sends fs/close for the id. The connection's request order makes that
    # close wait for the open, then close the handle it opened: no descriptor is left.
    # (FsService's own closed-while-opening branch, which a close reaching the service
    # mid-open takes, is tested directly in test_handles_close_while_opening.py.)
    path = write(tmp_path / "slow", b"x")
    started = threading.Event()
    proceed = threading.Event()
    real = daemon_fs._open_regular

    def slow_open(native: str, flags: int, *, follow_symlinks: bool = True) -> int:
        if native == str(path):
            started.set()
            assert proceed.wait(5)
        return real(native, flags, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(daemon_fs, "_open_regular", slow_open)
    with trio.fail_after(10):
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def enter() -> None:
                        async with client.fs.open_read(path):
                            raise AssertionError("the open should not have completed")

                    nursery.start_soon(enter)
                    await trio.to_thread.run_sync(started.wait)
                    scope.cancel()
            assert scope.cancelled_caught
        finally:
            proceed.set()
        if HAVE_PROC_FD:
            await wait_no_fds_on(path)
        await assert_all_handles_free(client, path)


async def test_open_read_must_be_entered_and_is_single_use(
    client: ExecClient, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        path = write(tmp_path / "f", b"x")
        reader = client.fs.open_read(path)
        with pytest.raises(RuntimeError, match="async with"):
            await reader.__anext__()
        async with reader:
            pass
        with pytest.raises(RuntimeError, match="once"):
            await reader.__aenter__()
        with pytest.raises(trio.ClosedResourceError):
            await reader.__anext__()
        await assert_all_handles_free(client, path)


async def test_open_read_rejects_concurrent_iteration(
    client: ExecClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    proceed = threading.Event()
    real = daemon_fs._pread

    def slow_pread(fd: int, offset: int, length: int, native: str) -> Any:
        started.set()
        assert proceed.wait(5)
        return real(fd, offset, length, native)

    monkeypatch.setattr(daemon_fs, "_pread", slow_pread)
    with trio.fail_after(10):
        path = write(tmp_path / "f", b"abc")
        got: list[bytes] = []
        async with client.fs.open_read(path) as blocks, trio.open_nursery() as nursery:

            async def first() -> None:
                got.append(await blocks.__anext__())

            nursery.start_soon(first)
            await trio.to_thread.run_sync(started.wait)
            with pytest.raises(trio.BusyResourceError):
                await blocks.__anext__()
            proceed.set()
        assert got == [b"abc"]


@pytest.mark.skipif(not HAVE_PROC_FD, reason="counts the daemon's descriptors in /proc/self/fd")
async def test_handles_close_when_the_connection_ends(backend: Backend, tmp_path: Path) -> None:
    with trio.fail_after(10):
        path = write(tmp_path / "f", b"0123456789")
        async with backend.connect() as first:
            for index in range(MAX_HANDLES - 1):
                await raw_open(first, path, f"h{index}")
            reader = first.fs.open_read(path)
            await reader.__aenter__()  # the 128th, left open on purpose
            assert fds_open_on(path) == MAX_HANDLES
            await first.aclose()  # the connection ends with every handle open
            await wait_no_fds_on(path)  # ... and the daemon closed all 128
            await reader.aclose()  # the client is closed: nothing to do, no error
        async with backend.connect() as second:
            await assert_all_handles_free(second, path)
            assert fds_open_on(path) == 0


# ---------------------------------------------------------------------------
# Whole files, directories, copies, removes, metadata


async def test_read_and_write_file_round_trip(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        data = bytes(range(256)) * 1000
        for name in ["plain", "with space", "50% ünïcödé #?&"]:
            path = tmp_path / name
            await client.fs.write_file(path, data)
            assert path.read_bytes() == data
            assert await client.fs.read_file(path) == data
            assert await client.fs.read_file(str(path)) == data
            assert await client.fs.read_file(file_uri(path)) == data  # a file: URI string
            assert await client.fs.canonicalize(path) == str(path.resolve())
        await client.fs.write_file(tmp_path / "empty", b"")
        assert await client.fs.read_file(tmp_path / "empty") == b""


async def test_read_file_missing_and_directory(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        assert (await error_of(client.fs.read_file(tmp_path / "missing"))).code == NOT_FOUND
        error = await error_of(client.fs.read_file(tmp_path))
        assert (error.code, error.message) == (INVALID_REQUEST, f"path {tmp_path} is not a file")


async def test_write_file_missing_parent_not_found(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        path = tmp_path / "missing" / "f"
        error = await error_of(client.fs.write_file(path, b"x"))
        assert error.code == NOT_FOUND
        assert not path.parent.exists()


async def test_write_file_overwrites(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        path = write(tmp_path / "f", b"a much longer original content")
        await client.fs.write_file(path, b"short")
        assert path.read_bytes() == b"short"
        assert await client.fs.read_file(path) == b"short"


async def test_create_directory_is_recursive_by_default(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        deep = tmp_path / "a" / "b" / "c"
        await client.fs.create_directory(deep)
        assert deep.is_dir()
        await client.fs.create_directory(deep)  # already there: fine
        error = await error_of(client.fs.create_directory(tmp_path / "x" / "y", recursive=False))
        assert error.code == NOT_FOUND
        error = await error_of(client.fs.create_directory(deep, recursive=False))
        assert error.code == INTERNAL_ERROR  # EEXIST: -32603, as Codex
        assert isinstance(error, FileExistsError)
        await client.fs.create_directory(tmp_path / "single", recursive=False)
        assert (tmp_path / "single").is_dir()


async def test_copy_rules(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        source = make_source(tmp_path)
        (source / "link").symlink_to("root.txt")
        error = await error_of(client.fs.copy(source, tmp_path / "copy"))
        assert error.code == INVALID_REQUEST
        assert not (tmp_path / "copy").exists()

        script = write(tmp_path / "script", b"#!/bin/sh\n")
        script.chmod(0o750)
        await client.fs.copy(script, tmp_path / "script2")
        assert (tmp_path / "script2").read_bytes() == b"#!/bin/sh\n"
        assert stat.S_IMODE((tmp_path / "script2").stat().st_mode) == 0o750

        await client.fs.copy(source, tmp_path / "copy", recursive=True)
        assert (tmp_path / "copy" / "root.txt").read_text() == "root"
        assert (tmp_path / "copy" / "nested" / "note.txt").read_text() == "note"
        assert os.readlink(tmp_path / "copy" / "link") == "root.txt"

        error = await error_of(client.fs.copy(tmp_path / "missing", tmp_path / "x"))
        assert error.code == NOT_FOUND


async def test_remove_rules(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        source = make_source(tmp_path)
        target = write(tmp_path / "target", b"x")
        (tmp_path / "link").symlink_to(target)
        await client.fs.remove(tmp_path / "link")
        assert not (tmp_path / "link").is_symlink()
        assert target.exists()  # the link went, not its target

        await client.fs.remove(tmp_path / "missing", force=True)  # rm -f
        await client.fs.remove(source, recursive=True)  # rm -r
        assert not source.exists()


async def test_remove_defaults_are_os_remove_and_rmdir(
    client: ExecClient, tmp_path: Path
) -> None:
    """Without flags, ``fs.remove`` is ``os.remove`` for a file and ``os.rmdir`` for a
    directory, and fails as they do, with the same OSError subclass and errno: the
    wire's defaults (Codex's, both true) are ``rm -rf``, so the client sends both flags
    false. Before, a bare ``remove(dir)`` deleted a whole tree and a missing path was a
    success."""
    with trio.fail_after(10):
        source = make_source(tmp_path)
        with pytest.raises(OSError) as caught:
            await client.fs.remove(source)
        assert isinstance(caught.value, exec_runtime.RemoteOSError)
        assert caught.value.errno == errno.ENOTEMPTY  # os.rmdir's error
        assert caught.value.code == INTERNAL_ERROR  # -32603, as Codex
        assert (source / "nested" / "note.txt").read_text() == "note"

        with pytest.raises(FileNotFoundError) as missing:
            await client.fs.remove(tmp_path / "missing")
        assert isinstance(missing.value, exec_runtime.RemoteFileNotFoundError)
        assert missing.value.errno == errno.ENOENT
        assert missing.value.code == NOT_FOUND

        (tmp_path / "empty").mkdir()
        await client.fs.remove(tmp_path / "empty")  # os.rmdir
        assert not (tmp_path / "empty").exists()
        await client.fs.remove(source / "root.txt")  # os.remove
        assert not (source / "root.txt").exists()
        assert (source / "nested" / "note.txt").exists()


async def test_walk_limits_default_to_the_protocol_maxima(
    client: ExecClient, tmp_path: Path
) -> None:
    """``walk(path)`` needs no limits: each defaults to the protocol's maximum (64,
    10,000, 50,000), which both daemons accept."""
    with trio.fail_after(10):
        source = make_source(tmp_path)
        result = await client.fs.walk(source)
        assert [(e.path.removeprefix(f"{source}/"), e.kind) for e in result.entries] == FULL
        assert (result.errors, result.truncated) == ([], False)
        assert (WALK_MAX_DEPTH, WALK_MAX_DIRECTORIES, WALK_MAX_ENTRIES) == (64, 10_000, 50_000)
        with pytest.raises(ProtocolError) as caught:  # one above: refused, as documented
            await client.fs.walk(source, max_depth=WALK_MAX_DEPTH + 1)
        assert caught.value.code == INVALID_REQUEST


async def test_metadata_file_directory_symlink(client: ExecClient, tmp_path: Path) -> None:
    def created_ms(st: os.stat_result) -> int:
        birth = getattr(st, "st_birthtime", None)
        return int(birth * 1000) if birth is not None else st.st_ctime_ns // 1_000_000

    with trio.fail_after(10):
        now_ms = time.time() * 1000
        path = write(tmp_path / "f", b"12345")
        mtime_ns = 1_700_000_000_123_456_789
        os.utime(path, ns=(mtime_ns, mtime_ns))
        meta = await client.fs.get_metadata(path)
        assert isinstance(meta, FsMetadata)
        assert (meta.is_file, meta.is_directory, meta.is_symlink) == (True, False, False)
        assert meta.size == 5
        assert meta.modified_at_ms == 1_700_000_000_123
        assert meta.created_at_ms == created_ms(path.stat())
        assert abs(meta.created_at_ms - now_ms) < 60_000

        directory = tmp_path / "d"
        directory.mkdir()
        os.utime(directory, ns=(mtime_ns, mtime_ns))
        meta = await client.fs.get_metadata(directory)
        assert (meta.is_file, meta.is_directory, meta.is_symlink) == (False, True, False)
        assert meta.size == directory.stat().st_size
        assert meta.modified_at_ms == 1_700_000_000_123

        link = tmp_path / "link"
        link.symlink_to(path)
        link_mtime_ns = 1_600_000_000_987_000_000
        os.utime(link, ns=(link_mtime_ns, link_mtime_ns), follow_symlinks=False)
        # The public method follows the link: the flags say symlink, the rest is the file.
        meta = await client.fs.get_metadata(link)
        assert (meta.is_file, meta.is_directory, meta.is_symlink) == (True, False, True)
        assert (meta.size, meta.modified_at_ms) == (5, 1_700_000_000_123)
        # The link itself (followSymlinks false, on the raw method).
        params = FsGetMetadataParams(path=file_uri(link), follow_symlinks=False)
        meta = await client._call("fs/getMetadata", params, FsMetadata)
        assert (meta.is_file, meta.is_directory, meta.is_symlink) == (False, False, True)
        assert meta.size == len(str(path))
        assert meta.modified_at_ms == 1_600_000_000_987

        assert (await error_of(client.fs.get_metadata(tmp_path / "missing"))).code == NOT_FOUND


async def test_canonicalize_and_read_directory(client: ExecClient, tmp_path: Path) -> None:
    with trio.fail_after(10):
        source = make_source(tmp_path)
        (tmp_path / "alias").symlink_to(source)
        canonical = await client.fs.canonicalize(tmp_path / "alias" / "nested" / ".." / "root.txt")
        assert canonical == str((source / "root.txt").resolve())
        assert not canonical.startswith("file:")
        error = await error_of(client.fs.canonicalize(tmp_path / "missing"))
        assert error.code == NOT_FOUND

        (source / "to_nested").symlink_to("nested")
        assert await client.fs.read_directory(tmp_path / "alias") == [
            FsDirectoryEntry(file_name="nested", is_directory=True, is_file=False),
            FsDirectoryEntry(file_name="root.txt", is_directory=False, is_file=True),
            FsDirectoryEntry(file_name="to_nested", is_directory=True, is_file=False),
        ]
        assert (await error_of(client.fs.read_directory(tmp_path / "missing"))).code == NOT_FOUND


# ---------------------------------------------------------------------------
# Paths that are not absolute file paths


async def _enter_open_read(client: ExecClient, path: Any) -> None:
    async with client.fs.open_read(path):
        pass


CALLS: dict[str, Callable[[ExecClient, Any, Path], Awaitable[Any]]] = {
    "read_file": lambda c, p, t: c.fs.read_file(p),
    "write_file": lambda c, p, t: c.fs.write_file(p, b"x"),
    "create_directory": lambda c, p, t: c.fs.create_directory(p),
    "get_metadata": lambda c, p, t: c.fs.get_metadata(p),
    "canonicalize": lambda c, p, t: c.fs.canonicalize(p),
    "read_directory": lambda c, p, t: c.fs.read_directory(p),
    "walk": lambda c, p, t: walk(c, p),
    "remove": lambda c, p, t: c.fs.remove(p),
    "copy-source": lambda c, p, t: c.fs.copy(p, t / "dst"),
    "copy-destination": lambda c, p, t: c.fs.copy(t / "src", p),
    "open_read": lambda c, p, t: _enter_open_read(c, p),
}
BAD_PATHS = {
    "relative-str": "relative/path",
    "relative-Path": Path("relative") / "path",
    "dot": ".",
    "http-uri": "http://example.com/etc/passwd",
    "relative-file-uri": "file:relative/path",
    "remote-host-uri": "file://elsewhere/etc/passwd",
}


@pytest.mark.parametrize("bad", list(BAD_PATHS))
@pytest.mark.parametrize("method", list(CALLS))
async def test_relative_path_or_non_file_uri_is_invalid_params(
    client: ExecClient, tmp_path: Path, method: str, bad: str
) -> None:
    with trio.fail_after(10):
        write(tmp_path / "src", b"x")
        error = await error_of(CALLS[method](client, BAD_PATHS[bad], tmp_path))
        assert error.code == INVALID_PARAMS
        field = "destinationPath" if method == "copy-destination" else "sourcePath"
        assert (field if method.startswith("copy") else "path") in error.message
        assert sorted(os.listdir(tmp_path)) == ["src"]  # nothing was written anywhere


def make_non_utf8_tree(tmp_path: Path) -> None:
    """tmp/{dir\\xfe/bad\\xff, good}: two names that are not UTF-8."""
    root = os.fsencode(tmp_path)
    os.mkdir(os.path.join(root, b"dir\xfe"))
    fd = os.open(os.path.join(root, b"dir\xfe", b"bad\xff"), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    (tmp_path / "good").write_text("g")


async def test_names_that_are_not_utf8_are_listed_lossily_and_nothing_breaks(
    client: ExecClient, tmp_path: Path
) -> None:
    """Linux names are bytes; JSON and msgpack strings are UTF-8. A name that is not
    UTF-8 is listed by fs/readDirectory with U+FFFD for its bad bytes (as ``ls`` shows
    it), instead of a reply that cannot be encoded taking down the connection (or,
    in-process, the runtime), and everything else goes on. fs/walk sends URIs, whose
    %XX escapes carry the bytes: the client's paths hold them as surrogate escapes
    (``os.fsdecode``), so they name the files."""
    with trio.fail_after(10):
        make_non_utf8_tree(tmp_path)
        proc = await client.start(["sleep", "30"])
        entries = await client.fs.read_directory(tmp_path)
        assert [(e.file_name, e.is_directory) for e in entries] == [
            ("dir\ufffd", True),
            ("good", False),
        ]
        result = await walk(client, tmp_path)
        assert listed(result) == [
            (os.fsdecode(b"dir\xfe"), "directory"),
            ("good", "file"),
            (os.fsdecode(b"dir\xfe/bad\xff"), "file"),
        ]
        assert client.statistics().reconnects == 0
        assert await proc.kill() is True
        assert await proc.wait() == 137
