"""Paths that only run when something else fails (issue 21's list of untested paths):
a handler that raises what is not an RpcError, ``fs/copy`` on a filesystem without
``sendfile``, and the orphan watchdog failing to start or dying."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from exec_runtime._daemon import fs_service
from exec_runtime._daemon.fs_service import FsService
from exec_runtime._daemon.orphans import OrphanWatchdog

INTERNAL_ERROR = -32603


async def test_a_handler_bug_is_an_internal_error_and_the_connection_serves_on(
    connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def broken(self: FsService, params: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(FsService, "get_metadata", broken)
    with trio.fail_after(10):
        client = await connect()
        reply = await client.request("fs/getMetadata", {"path": tmp_path.as_uri()})
        assert reply["error"]["code"] == INTERNAL_ERROR
        assert reply["error"]["message"] == "internal error: boom"
        # The same connection, and its session, go on serving.
        listed = await client.request("fs/readDirectory", {"path": tmp_path.as_uri()})
        assert listed["result"] == {"entries": []}
        await client.start("after", ["true"])
        assert (await client.read_all("after"))["exitCode"] == 0


def _copy_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sendfile: Any) -> bytes:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "src").write_bytes(data)
    monkeypatch.setattr(fs_service.os, "sendfile", sendfile)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        fs_service._copy_data(src, dst)
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == data
    return data


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP])
def test_copy_falls_back_to_read_write_without_sendfile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: int
) -> None:
    def no_sendfile(*args: object) -> int:
        raise OSError(code, os.strerror(code))

    _copy_with(monkeypatch, tmp_path, no_sendfile)


def test_copy_does_not_fall_back_after_sendfile_moved_bytes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Half-copied by sendfile, then EINVAL: starting over with read/write from offset 0
    would append a second copy, so the error stands."""
    real = os.sendfile
    calls = []

    def fails_second_time(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        calls.append(offset)
        if len(calls) == 1:
            return real(out_fd, in_fd, offset, 4096)
        raise OSError(errno.EINVAL, "invalid")

    with pytest.raises(OSError) as caught:
        _copy_with(monkeypatch, tmp_path, fails_second_time)
    assert caught.value.errno == errno.EINVAL
    assert calls == [0, 4096]


def test_copy_passes_other_sendfile_errors_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def disk_full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        _copy_with(monkeypatch, tmp_path, disk_full)
    assert caught.value.errno == errno.ENOSPC


def test_a_watchdog_that_cannot_start_leaves_processes_unwatched_not_failing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    watchdog = OrphanWatchdog()
    starts = []
    real_popen = subprocess.Popen

    def no_python(*args: Any, **kwargs: Any) -> Any:
        starts.append(args)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "python")

    monkeypatch.setattr(subprocess, "Popen", no_python)
    with caplog.at_level(logging.WARNING, logger="exec_runtime.process"):
        watchdog.register(12345, tty=False)
        watchdog.unregister(12345)
        watchdog.register(12346, tty=True)
    monkeypatch.setattr(subprocess, "Popen", real_popen)
    assert watchdog.pid is None
    assert len(starts) == 1  # tried once, not on every spawn
    assert "cannot start the orphan watchdog" in caplog.text


def test_a_watchdog_that_dies_stops_being_written_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watchdog = OrphanWatchdog()
    watchdog.start()
    pid = watchdog.pid
    assert pid is not None
    child = subprocess.Popen(["sleep", "100"], start_new_session=True)
    try:
        watchdog.register(child.pid, tty=False)
        os.kill(pid, signal.SIGKILL)
        assert watchdog._watchdog is not None
        watchdog._watchdog.wait(timeout=20)  # its end of the pipe is closed now
        with caplog.at_level(logging.WARNING, logger="exec_runtime.process"):
            # The pipe's reader is gone: EPIPE, a warning, and no more writes.
            watchdog.unregister(child.pid)
            watchdog.register(child.pid, tty=False)
        assert caplog.text.count("the orphan watchdog is gone") == 1
        assert child.poll() is None  # a dead watchdog killed nothing
    finally:
        child.kill()
        child.wait()
