"""The daemon's filesystem methods (PROTOCOL.md §8), called on FsService with real files."""

from __future__ import annotations

import base64
import errno
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import trio

from exec_runtime._daemon import fs_service as _fs
from exec_runtime._daemon.fs_service import FsService
from exec_runtime._daemon.rpc_error import RpcError
from exec_runtime._wire.uris import file_uri
from protocol_schema import EmptyResult
from protocol_schema.fs import (
    FsCanonicalizeParams,
    FsCloseParams,
    FsCopyParams,
    FsCreateDirectoryParams,
    FsGetMetadataParams,
    FsOpenParams,
    FsReadBlockParams,
    FsReadDirectoryParams,
    FsReadFileParams,
    FsRemoveParams,
    FsWalkOptions,
    FsWalkParams,
    FsWalkResult,
    FsWriteFileParams,
)
from tests.support.unprivileged import IS_ROOT, deny_as_the_os_denies_nobody, world_traversable_dir

NOT_FOUND = -32004
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
MIB = 1024 * 1024


def uri(path: Path | str) -> str:
    return file_uri(path)


def make_source(tmp_path: Path) -> Path:
    """The issue's tree: source/{nested/, root.txt, nested/note.txt}."""
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    (source / "root.txt").write_text("root")
    (source / "nested" / "note.txt").write_text("note")
    return source


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def walk(
    fs: FsService,
    root: Path,
    *,
    max_depth: int = 64,
    max_directories: int = 10_000,
    max_entries: int = 50_000,
    follow: bool = False,
    prune: bool = False,
) -> FsWalkResult:
    options = FsWalkOptions(
        max_depth=max_depth,
        max_directories=max_directories,
        max_entries=max_entries,
        follow_directory_symlinks=follow,
        prune_hidden_directories=prune,
    )
    return relative(await fs.walk(FsWalkParams(path=uri(root), options=options)), root)


def relative(result: FsWalkResult, root: Path) -> FsWalkResult:
    """The result with each path (an absolute file: URI under the root, as Codex sends
    it: checked here) made relative to the root, for shorter assertions."""
    prefix = uri(root) + "/"
    for item in [*result.entries, *result.errors]:
        assert item.path.startswith(prefix), (item.path, prefix)
        item.path = unquote(item.path[len(prefix) :])
    return result


def listed(result: FsWalkResult) -> list[tuple[str, str]]:
    return [(e.path, e.kind) for e in result.entries]


async def error_of(call: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await call
    return info.value


FULL = [("nested", "directory"), ("root.txt", "file"), ("nested/note.txt", "file")]


# ---------------------------------------------------------------------------
# fs/walk


async def test_walk_tree(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await walk(FsService(), make_source(tmp_path))
        assert listed(result) == FULL
        assert result.errors == []
        assert not result.truncated


async def test_walk_max_depth_zero(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await walk(FsService(), make_source(tmp_path), max_depth=0)
        assert listed(result) == FULL[:2]
        assert not result.truncated


async def test_walk_max_directories_one(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await walk(FsService(), make_source(tmp_path), max_directories=1)
        assert listed(result) == FULL[:2]
        assert result.truncated


async def test_walk_max_entries_one(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await walk(FsService(), make_source(tmp_path), max_entries=1)
        assert listed(result) == FULL[:1]
        assert result.truncated


@pytest.mark.parametrize(
    "limits",
    [
        {"max_directories": 0},
        {"max_entries": 0},
        {"max_depth": 65},
        {"max_directories": 10_001},
        {"max_entries": 50_001},
    ],
)
async def test_walk_invalid_limits_checked_before_the_root(
    tmp_path: Path, limits: dict[str, Any]
) -> None:
    with trio.fail_after(10):
        # The root does not exist: an answer of -32600 (not -32004) shows it was not touched.
        error = await error_of(walk(FsService(), tmp_path / "missing", **limits))
        assert error.code == INVALID_REQUEST
        assert "fs/walk options" in error.message


@pytest.mark.parametrize("limit", ["max_depth", "max_directories", "max_entries"])
async def test_walk_negative_limit_is_invalid_params(tmp_path: Path, limit: str) -> None:
    # Codex's limits are unsigned: a negative one is a wrong type (-32602), not -32600.
    with trio.fail_after(10):
        error = await error_of(walk(FsService(), tmp_path / "missing", **{limit: -1}))
        assert error.code == INVALID_PARAMS


async def test_walk_entries_are_absolute_file_uris(tmp_path: Path) -> None:
    """As Codex sends them (PROTOCOL §8): the root's URI joined with the names."""
    with trio.fail_after(10):
        source = make_source(tmp_path)
        (source / "a b%").mkdir()
        options = FsWalkOptions(max_depth=64, max_directories=100, max_entries=100)
        result = await FsService().walk(FsWalkParams(path=uri(source), options=options))
        assert [e.path for e in result.entries] == [
            (source / "a b%").as_uri(),
            (source / "nested").as_uri(),
            (source / "root.txt").as_uri(),
            (source / "nested" / "note.txt").as_uri(),
        ]


async def test_uris_are_escaped_as_codex_escapes_them(tmp_path: Path) -> None:
    """Rust's url crate (Codex) escapes only controls, space, "#%<>?`{}\\ and non-ASCII
    in a path: fs/canonicalize and fs/walk spell a URI as Codex does."""
    with trio.fail_after(10):
        name = "!\"#$%&'()*+,-.:;<=>?@[\\]^_`{|}~ é"
        write(tmp_path / name, b"x")
        spelled = "!%22%23$%25&'()*+,-.:;%3C=%3E%3F@[%5C]^_%60%7B|%7D~%20%C3%A9"
        result = await FsService().canonicalize(FsCanonicalizeParams(path=uri(tmp_path / name)))
        real = await trio.Path(tmp_path).resolve()
        assert result.path == uri(real) + "/" + spelled
        options = FsWalkOptions(max_depth=0, max_directories=1, max_entries=9)
        walked = await FsService().walk(FsWalkParams(path=uri(tmp_path), options=options))
        assert [e.path for e in walked.entries] == [uri(tmp_path) + "/" + spelled]


async def test_walk_file_root_is_empty(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await walk(FsService(), write(tmp_path / "f", b"x"))
        assert result == FsWalkResult(entries=[], errors=[], truncated=False)


async def test_walk_missing_root_not_found(tmp_path: Path) -> None:
    with trio.fail_after(10):
        error = await error_of(walk(FsService(), tmp_path / "missing"))
        assert error.code == NOT_FOUND
        assert str(tmp_path / "missing") in error.message


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


async def test_walk_skips_symlinks_by_default(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await walk(FsService(), make_links(tmp_path))
        assert listed(result) == [
            ("dir", "directory"),
            ("file.txt", "file"),
            ("dir/inside.txt", "file"),
        ]


async def test_walk_follows_directory_symlinks_when_asked(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await walk(FsService(), make_links(tmp_path), follow=True)
        assert listed(result) == [
            ("dir", "directory"),
            ("file.txt", "file"),
            ("to_outside", "directory"),
            ("dir/inside.txt", "file"),
            ("to_outside/far.txt", "file"),
        ]


async def test_walk_symlink_cycle_terminates(tmp_path: Path) -> None:
    with trio.fail_after(10):
        root = tmp_path / "root"
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "b" / "up").symlink_to(root)
        (root / "a" / "self").symlink_to(root / "a")
        result = await walk(FsService(), root, follow=True)
        assert listed(result) == [
            ("a", "directory"),
            ("a/b", "directory"),
            ("a/self", "directory"),
            ("a/b/up", "directory"),
        ]
        assert not result.truncated


async def test_walk_prune_hidden_directories(tmp_path: Path) -> None:
    with trio.fail_after(10):
        root = tmp_path / "root"
        (root / ".git").mkdir(parents=True)
        (root / ".git" / "HEAD").write_text("x")
        (root / ".env").write_text("x")
        result = await walk(FsService(), root, prune=True)
        # Decision: a pruned directory is listed, but not descended into.
        assert listed(result) == [(".env", "file"), (".git", "directory")]
        unpruned = await walk(FsService(), root)
        assert (".git/HEAD", "file") in listed(unpruned)


async def test_walk_unreadable_directory_is_an_error_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root reads a chmod 000 directory: as root (CI) the listing is checked as nobody,
    # and the walk gets the error the OS gave nobody (tests/support/unprivileged.py).
    with trio.fail_after(10), world_traversable_dir() as base:
        source = make_source(base if IS_ROOT else tmp_path)
        (source / "nested").chmod(0)
        try:
            if IS_ROOT:
                nested = source / "nested"
                deny_as_the_os_denies_nobody(monkeypatch, _fs, "_list_walk_directory", nested)
            result = await walk(FsService(), source)
        finally:
            (source / "nested").chmod(0o755)
        assert listed(result) == FULL[:2]
        assert [e.path for e in result.errors] == ["nested"]


async def test_walk_directory_gone_before_reading_is_an_error_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Works as root too: the directory disappears between its parent's listing and its own.
    real = _fs._list_walk_directory

    def vanishing(path: str, follow: bool, limit: int) -> Any:
        if path.endswith("nested"):
            shutil.rmtree(path)
        return real(path, follow, limit)

    monkeypatch.setattr(_fs, "_list_walk_directory", vanishing)
    with trio.fail_after(10):
        source = make_source(tmp_path)
        result = await walk(FsService(), source)
        assert listed(result) == FULL[:2]
        assert [e.path for e in result.errors] == ["nested"]
        assert str(source / "nested") in result.errors[0].message
        assert not result.truncated


def make_long_tree(tmp_path: Path, files: int) -> tuple[Path, int]:
    """Fourteen 250-character directory levels, then many 250-character file names."""
    root = tmp_path / "r"
    deep = root
    for level in range(14):
        deep = deep / (f"{level:02}" + "d" * 248)
    deep.mkdir(parents=True)
    for index in range(files):
        (deep / (f"{index:05}" + "f" * 245)).touch()
    return root, len(str(deep.relative_to(root))) + 1 + 250


async def test_walk_response_budget(tmp_path: Path) -> None:
    with trio.fail_after(10):
        root, file_path_len = make_long_tree(tmp_path, 1200)
        result = await walk(FsService(), root)
        assert result.truncated
        # Each entry costs its absolute URI (the root's URI, "/", the relative path).
        prefix = len(uri(root)) + 1
        file_path_len += prefix
        spent = sum(prefix + len(e.path.encode()) + 64 for e in result.entries)
        assert spent <= 4 * MIB
        assert spent + file_path_len + 64 > 4 * MIB  # the next one would not have fit
        assert 14 < len(result.entries) < 14 + 1200


# ---------------------------------------------------------------------------
# fs/open, fs/readBlock, fs/close


async def open_handle(fs: FsService, path: Path, handle_id: str = "h") -> str:
    result = await fs.open(FsOpenParams(handle_id=handle_id, path=uri(path)))
    return result.handle_id


async def block(fs: FsService, handle_id: str, offset: int, length: int) -> tuple[bytes, bool]:
    result = await fs.read_block(FsReadBlockParams(handle_id=handle_id, offset=offset, len=length))
    return result.chunk, result.eof


async def test_read_block_is_positional(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        handle = await open_handle(fs, write(tmp_path / "digits", b"0123456789"))
        assert await block(fs, handle, 6, 3) == (b"678", False)
        assert await block(fs, handle, 1, 2) == (b"12", False)
        assert await block(fs, handle, 8, 4) == (b"89", True)
        assert await block(fs, handle, 0, 2) == (b"01", False)
        assert await block(fs, handle, 7, 3) == (b"789", False)  # full: no EOF, as Codex
        assert await block(fs, handle, 20, 3) == (b"", True)


@pytest.mark.parametrize("length", [0, MIB + 1])
async def test_read_block_len_out_of_range(tmp_path: Path, length: int) -> None:
    with trio.fail_after(10):
        fs = FsService()
        handle = await open_handle(fs, write(tmp_path / "digits", b"0123456789"))
        error = await error_of(block(fs, handle, 0, length))
        assert error.code == INVALID_REQUEST
        assert "len" in error.message


@pytest.mark.parametrize(("offset", "length"), [(0, -1), (-1, 1)])
async def test_read_block_negative_is_invalid_params(
    tmp_path: Path, offset: int, length: int
) -> None:
    # Unsigned in Codex: a negative offset or len is a wrong type (-32602).
    with trio.fail_after(10):
        fs = FsService()
        handle = await open_handle(fs, write(tmp_path / "digits", b"0123456789"))
        error = await error_of(block(fs, handle, offset, length))
        assert error.code == INVALID_PARAMS


async def test_two_mib_file_is_two_one_mib_blocks(tmp_path: Path) -> None:
    with trio.fail_after(10):
        data = os.urandom(2 * MIB)
        fs = FsService()
        handle = await open_handle(fs, write(tmp_path / "big", data))
        blocks: list[bytes] = []
        offset, eof = 0, False
        while not eof:
            chunk, eof = await block(fs, handle, offset, MIB)
            blocks.append(chunk)
            offset += len(chunk)
        # Two full blocks, then the empty short read that reports the end (as Codex).
        assert [len(b) for b in blocks] == [MIB, MIB, 0]
        assert b"".join(blocks) == data


async def test_129th_handle_rejected_and_close_frees_capacity(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        path = write(tmp_path / "f", b"x")
        for index in range(128):
            await open_handle(fs, path, f"h{index}")
        error = await error_of(open_handle(fs, path, "one-too-many"))
        assert error.code == INVALID_REQUEST
        assert "at most 128" in error.message
        await fs.close(FsCloseParams(handle_id="h7"))
        assert await open_handle(fs, path, "one-too-many") == "one-too-many"
        await fs.aclose()


async def test_handle_id_length(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        path = write(tmp_path / "f", b"x")
        assert await open_handle(fs, path, "a" * 32) == "a" * 32
        assert await open_handle(fs, path, "é" * 16) == "é" * 16  # 32 bytes of UTF-8
        assert await open_handle(fs, path, "") == ""  # as Codex: an empty id is an id
        for bad in ["a" * 33, "é" * 16 + "a"]:
            error = await error_of(open_handle(fs, path, bad))
            assert error.code == INVALID_REQUEST
            assert "32 bytes" in error.message
        await fs.aclose()


async def test_duplicate_handle_id_rejected(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        path = write(tmp_path / "f", b"x")
        await open_handle(fs, path, "same")
        error = await error_of(open_handle(fs, path, "same"))
        assert error.code == INVALID_REQUEST
        await fs.aclose()


async def test_fifo_rejected_promptly(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with trio.fail_after(2):
        fs = FsService()
        error = await error_of(open_handle(fs, fifo))
        assert error.code == INVALID_REQUEST
        assert error.message == f"path {fifo} is not a file"
        error = await error_of(fs.read_file(FsReadFileParams(path=uri(fifo))))
        assert error.message == f"path {fifo} is not a file"
        data = base64.b64encode(b"x").decode()
        error = await error_of(fs.write_file(FsWriteFileParams(path=uri(fifo), data_base64=data)))
        assert error.message == f"path {fifo} is not a file"
        assert fs.open_handles == 0


async def test_directory_is_not_a_file_for_open(tmp_path: Path) -> None:
    with trio.fail_after(10):
        error = await error_of(open_handle(FsService(), tmp_path))
        assert error.code == INVALID_REQUEST
        assert error.message == f"path {tmp_path} is not a file"


async def test_handle_survives_replace_and_remove(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        path = write(tmp_path / "f", b"original")
        handle = await open_handle(fs, path)
        os.replace(write(tmp_path / "g", b"replacement"), path)
        assert await block(fs, handle, 0, 100) == (b"original", True)
        path.unlink()
        assert await block(fs, handle, 4, 100) == (b"inal", True)


async def test_close_is_idempotent_and_unknown_handle_is_rejected(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        handle = await open_handle(fs, write(tmp_path / "f", b"x"))
        assert await fs.close(FsCloseParams(handle_id=handle)) == EmptyResult()
        assert await fs.close(FsCloseParams(handle_id=handle)) == EmptyResult()
        assert await fs.close(FsCloseParams(handle_id="never-opened")) == EmptyResult()
        error = await error_of(block(fs, handle, 0, 1))
        assert (error.code, error.message) == (NOT_FOUND, f"unknown file read handle `{handle}`")


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_handles_close_when_the_connection_ends(tmp_path: Path) -> None:
    with trio.fail_after(10):
        path = write(tmp_path / "f", b"x")
        fs = FsService()
        await open_handle(fs, path, "warm-up")  # starts the worker thread, etc.
        await fs.close(FsCloseParams(handle_id="warm-up"))
        before = open_fd_count()
        for index in range(10):
            await open_handle(fs, path, f"h{index}")
        assert open_fd_count() == before + 10
        await fs.aclose()
        assert open_fd_count() == before
        assert fs.open_handles == 0
        error = await error_of(block(fs, "h0", 0, 1))
        assert error.code == NOT_FOUND  # an unknown handle, as Codex
        error = await error_of(open_handle(fs, path, "late"))
        assert error.code == INVALID_REQUEST


async def test_close_during_a_read_keeps_the_fd_until_the_read_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    proceed = threading.Event()
    real = _fs._pread

    def slow_pread(fd: int, offset: int, length: int, path: str) -> Any:
        started.set()
        assert proceed.wait(5)
        return real(fd, offset, length, path)

    monkeypatch.setattr(_fs, "_pread", slow_pread)
    with trio.fail_after(10):
        fs = FsService()
        handle = await open_handle(fs, write(tmp_path / "f", b"0123456789"))
        results: list[tuple[bytes, bool]] = []

        async def reader() -> None:
            results.append(await block(fs, handle, 0, 4))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.to_thread.run_sync(started.wait)
            await fs.close(FsCloseParams(handle_id=handle))
            assert fs.open_handles == 0
            proceed.set()
        assert results == [(b"0123", False)]


# ---------------------------------------------------------------------------
# Whole files, directories, copies, removes, metadata


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_write_file_missing_parent_not_found(tmp_path: Path) -> None:
    with trio.fail_after(10):
        path = tmp_path / "missing" / "f"
        error = await error_of(
            FsService().write_file(FsWriteFileParams(path=uri(path), data_base64=b64(b"x")))
        )
        assert error.code == NOT_FOUND
        assert str(path) in error.message


async def test_write_file_overwrites(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        path = write(tmp_path / "f", b"a much longer original content")
        result = await fs.write_file(FsWriteFileParams(path=uri(path), data_base64=b64(b"new")))
        assert result == EmptyResult()
        assert path.read_bytes() == b"new"
        read = await fs.read_file(FsReadFileParams(path=uri(path)))
        assert base64.b64decode(read.data_base64) == b"new"


async def test_write_file_bad_base64_is_invalid_request(tmp_path: Path) -> None:
    with trio.fail_after(10):
        path = tmp_path / "f"
        error = await error_of(
            FsService().write_file(FsWriteFileParams(path=uri(path), data_base64="not base64!"))
        )
        assert error.code == INVALID_REQUEST  # as Codex 0.147
        assert not path.exists()


async def test_read_file_missing_and_directory(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        error = await error_of(fs.read_file(FsReadFileParams(path=uri(tmp_path / "nope"))))
        assert error.code == NOT_FOUND
        error = await error_of(fs.read_file(FsReadFileParams(path=uri(tmp_path))))
        assert error.code == INVALID_REQUEST
        assert error.message == f"path {tmp_path} is not a file"


async def test_relative_path_is_invalid_params() -> None:
    with trio.fail_after(10):
        error = await error_of(FsService().read_file(FsReadFileParams(path="file:relative/x")))
        assert error.code == INVALID_PARAMS
        error = await error_of(FsService().read_file(FsReadFileParams(path="http://x/y")))
        assert error.code == INVALID_PARAMS


async def test_create_directory_is_recursive_by_default(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        path = tmp_path / "a" / "b" / "c"
        assert await fs.create_directory(FsCreateDirectoryParams(path=uri(path))) == EmptyResult()
        assert path.is_dir()
        await fs.create_directory(FsCreateDirectoryParams(path=uri(path)))  # exists: fine
        other = tmp_path / "x" / "y"
        error = await error_of(
            fs.create_directory(FsCreateDirectoryParams(path=uri(other), recursive=False))
        )
        assert error.code == NOT_FOUND


async def test_copy_directory_without_recursive_is_invalid(tmp_path: Path) -> None:
    with trio.fail_after(10):
        source = make_source(tmp_path)
        error = await error_of(
            FsService().copy(
                FsCopyParams(source_path=uri(source), destination_path=uri(tmp_path / "dst"))
            )
        )
        assert error.code == INVALID_REQUEST
        assert str(source) in error.message
        assert not (tmp_path / "dst").exists()


async def test_copy_file(tmp_path: Path) -> None:
    with trio.fail_after(10):
        source = write(tmp_path / "src", b"payload")
        source.chmod(0o640)
        destination = tmp_path / "dst"
        params = FsCopyParams(source_path=uri(source), destination_path=uri(destination))
        assert await FsService().copy(params) == EmptyResult()
        assert destination.read_bytes() == b"payload"
        assert destination.stat().st_mode & 0o777 == 0o640


async def test_copy_directory_recursively(tmp_path: Path) -> None:
    with trio.fail_after(10):
        source = make_source(tmp_path)
        destination = tmp_path / "copy"
        params = FsCopyParams(
            source_path=uri(source), destination_path=uri(destination), recursive=True
        )
        await FsService().copy(params)
        assert (destination / "root.txt").read_text() == "root"
        assert (destination / "nested" / "note.txt").read_text() == "note"
        into_itself = FsCopyParams(
            source_path=uri(source), destination_path=uri(source / "inner"), recursive=True
        )
        error = await error_of(FsService().copy(into_itself))
        assert error.code == INVALID_REQUEST


async def test_copy_missing_source_not_found(tmp_path: Path) -> None:
    with trio.fail_after(10):
        params = FsCopyParams(
            source_path=uri(tmp_path / "nope"), destination_path=uri(tmp_path / "dst")
        )
        assert (await error_of(FsService().copy(params))).code == NOT_FOUND


async def test_remove_non_empty_directory_without_recursive(tmp_path: Path) -> None:
    with trio.fail_after(10):
        source = make_source(tmp_path)
        error = await error_of(
            FsService().remove(FsRemoveParams(path=uri(source), recursive=False))
        )
        assert error.code == INTERNAL_ERROR  # ENOTEMPTY: an OS error, -32603 (PROTOCOL §8)
        assert str(source) in error.message
        assert (source / "root.txt").exists()


async def test_remove_rules(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        missing = tmp_path / "missing"
        assert await fs.remove(FsRemoveParams(path=uri(missing))) == EmptyResult()
        error = await error_of(fs.remove(FsRemoveParams(path=uri(missing), force=False)))
        assert error.code == NOT_FOUND
        source = make_source(tmp_path)
        await fs.remove(FsRemoveParams(path=uri(source)))  # recursive by default
        assert not source.exists()
        empty = tmp_path / "empty"
        empty.mkdir()
        await fs.remove(FsRemoveParams(path=uri(empty), recursive=False))
        assert not empty.exists()
        target = make_source(tmp_path)
        link = tmp_path / "link"
        link.symlink_to(target)
        await fs.remove(FsRemoveParams(path=uri(link)))  # the link, not what it points to
        assert not link.is_symlink()
        assert (target / "root.txt").exists()


async def test_metadata_file_directory_symlink(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        before_ms = time.time_ns() // 1_000_000 - 2000
        path = write(tmp_path / "f", b"12345")
        mtime_ns = 1_600_000_000_123_456_789
        os.utime(path, ns=(mtime_ns, mtime_ns))
        meta = await fs.get_metadata(FsGetMetadataParams(path=uri(path)))
        assert (meta.is_file, meta.is_directory, meta.is_symlink) == (True, False, False)
        assert meta.size == 5
        assert meta.modified_at_ms == 1_600_000_000_123
        assert before_ms <= meta.created_at_ms <= time.time_ns() // 1_000_000 + 2000

        directory = tmp_path / "d"
        directory.mkdir()
        os.utime(directory, ns=(mtime_ns, mtime_ns))
        meta = await fs.get_metadata(FsGetMetadataParams(path=uri(directory)))
        assert (meta.is_file, meta.is_directory, meta.is_symlink) == (False, True, False)
        assert meta.size == directory.stat().st_size
        assert meta.modified_at_ms == 1_600_000_000_123

        link = tmp_path / "link"
        link.symlink_to(path)
        link_mtime_ns = 1_500_000_000_987_000_000
        os.utime(link, ns=(link_mtime_ns, link_mtime_ns), follow_symlinks=False)
        meta = await fs.get_metadata(FsGetMetadataParams(path=uri(link), follow_symlinks=False))
        assert (meta.is_file, meta.is_directory, meta.is_symlink) == (False, False, True)
        assert meta.size == len(os.fsencode(path))
        assert meta.modified_at_ms == 1_500_000_000_987
        meta = await fs.get_metadata(FsGetMetadataParams(path=uri(link)))
        assert (meta.is_file, meta.is_directory, meta.is_symlink) == (True, False, True)
        assert meta.size == 5
        assert meta.modified_at_ms == 1_600_000_000_123

        error = await error_of(fs.get_metadata(FsGetMetadataParams(path=uri(tmp_path / "no"))))
        assert error.code == NOT_FOUND


async def test_canonicalize_and_read_directory(tmp_path: Path) -> None:
    with trio.fail_after(10):
        fs = FsService()
        source = make_source(tmp_path)
        (tmp_path / "alias").symlink_to(source)
        result = await fs.canonicalize(FsCanonicalizeParams(path=uri(tmp_path / "alias")))
        assert result.path == uri(source.resolve())
        error = await error_of(fs.canonicalize(FsCanonicalizeParams(path=uri(tmp_path / "no"))))
        assert error.code == NOT_FOUND
        listing = await fs.read_directory(FsReadDirectoryParams(path=uri(source)))
        assert [(e.file_name, e.is_directory, e.is_file) for e in listing.entries] == [
            ("nested", True, False),
            ("root.txt", False, True),
        ]
        error = await error_of(fs.read_directory(FsReadDirectoryParams(path=uri(tmp_path / "n"))))
        assert error.code == NOT_FOUND


async def test_write_file_to_a_directory_is_internal_error(tmp_path: Path) -> None:
    """EISDIR: an OS error neither not-found nor invalid input, -32603 (PROTOCOL §8,
    as Codex), naming the path."""
    with trio.fail_after(10):
        error = await error_of(
            FsService().write_file(FsWriteFileParams(path=uri(tmp_path), data_base64=b64(b"x")))
        )
        assert error.code == INTERNAL_ERROR
        assert str(tmp_path) in error.message


async def test_other_os_errors_are_internal_errors_with_the_os_message(tmp_path: Path) -> None:
    """EEXIST (an existing directory created without recursive) and ENOTDIR (listing a
    file): -32603 with the OS message and errno data, as Codex (PROTOCOL §8)."""
    with trio.fail_after(10):
        fs = FsService()
        params = FsCreateDirectoryParams(path=uri(tmp_path), recursive=False)
        error = await error_of(fs.create_directory(params))
        assert (error.code, error.data["errnoName"]) == (INTERNAL_ERROR, "EEXIST")
        assert error.message == f"{tmp_path}: File exists"
        listing = FsReadDirectoryParams(path=uri(write(tmp_path / "f", b"x")))
        error = await error_of(fs.read_directory(listing))
        assert (error.code, error.data["errnoName"]) == (INTERNAL_ERROR, "ENOTDIR")
        error = await error_of(fs.remove(FsRemoveParams(path=uri(tmp_path / "f" / "x"))))
        assert error.code == INTERNAL_ERROR  # force ignores ENOENT only, as Codex


@pytest.mark.parametrize(
    ("errno_value", "code"),
    [
        (errno.EACCES, INVALID_REQUEST),  # permission denied: -32600
        (errno.EPERM, INVALID_REQUEST),
        (errno.EIO, -32603),  # any other I/O error: internal
        (errno.ENOSPC, -32603),
    ],
)
async def test_os_errors_map_to_the_protocols_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_value: int, code: int
) -> None:
    """Root reads a chmod 000 file anyway (this suite may run as root), so the error is
    injected where the file is opened: every read and write goes through there."""
    path = write(tmp_path / "f", b"data")

    def failing_open(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno_value, os.strerror(errno_value), str(path))

    monkeypatch.setattr(_fs.os, "open", failing_open)
    with trio.fail_after(10):
        fs = FsService()
        for call in (
            fs.read_file(FsReadFileParams(path=uri(path))),
            fs.write_file(FsWriteFileParams(path=uri(path), data_base64=b64(b"x"))),
        ):
            error = await error_of(call)
            assert (error.code, str(path) in error.message) == (code, True)


async def test_read_directory_returns_at_most_the_cap_smallest_names_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROTOCOL §8: at most 50,000 entries (here the cap is lowered to 3): the first
    ones by name, whatever order the directory lists them in."""
    monkeypatch.setattr(_fs, "MAX_DIRECTORY_ENTRIES", 3)
    for name in ("e", "b", "d", "a", "c"):
        (tmp_path / name).write_text(name)
    with trio.fail_after(10):
        result = await FsService().read_directory(FsReadDirectoryParams(path=uri(tmp_path)))
        assert [entry.file_name for entry in result.entries] == ["a", "b", "c"]


@pytest.mark.parametrize("root", ["file:///", "file:///tmp/..", "file:///usr/../"])
async def test_remove_refuses_the_root_directory(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``recursive`` and ``force`` default to true: one request must not be able to
    empty the filesystem (as ``rm --preserve-root``). rmtree is replaced by a recorder,
    so a regression deletes nothing."""
    removed: list[str] = []
    monkeypatch.setattr(_fs.shutil, "rmtree", lambda path, *a, **k: removed.append(path))
    with trio.fail_after(10):
        error = await error_of(FsService().remove(FsRemoveParams(path=root)))
        assert error.code == INVALID_REQUEST
        assert "refusing to remove the root directory" in error.message
    assert removed == []


def make_dotdot_tree(tmp_path: Path) -> tuple[Path, Path]:
    """tmp/a/link -> tmp/real/inner; tmp/a/secret.txt says "in a", tmp/real/secret.txt
    says "in real": the OS resolves a/link/../secret.txt to the second."""
    (tmp_path / "a").mkdir()
    (tmp_path / "real" / "inner").mkdir(parents=True)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "real" / "inner")
    (tmp_path / "a" / "secret.txt").write_text("in a")
    (tmp_path / "real" / "secret.txt").write_text("in real")
    return tmp_path / "a", tmp_path / "real"


async def test_paths_are_taken_as_the_os_takes_them(tmp_path: Path) -> None:
    """No textual ``..`` folding (it is wrong across a symlink), no dropped trailing
    slash, and percent-escapes are bytes."""
    a, _ = make_dotdot_tree(tmp_path)
    with trio.fail_after(10):
        fs = FsService()
        dotdot = f"{uri(a)}/link/../secret.txt"
        read = await fs.read_file(FsReadFileParams(path=dotdot))
        assert base64.b64decode(read.data_base64) == b"in real"  # as `cat` says
        error = await error_of(fs.read_file(FsReadFileParams(path=uri(a / "secret.txt") + "/")))
        assert error.code == INTERNAL_ERROR  # ENOTDIR, as the OS says (-32603, as Codex)
        os.close(os.open(os.path.join(os.fsencode(tmp_path), b"byte\xff"), os.O_CREAT))
        read = await fs.read_file(FsReadFileParams(path=f"{uri(tmp_path)}/byte%FF"))
        assert read.data_base64 == ""
