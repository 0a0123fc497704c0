"""``FsService``'s close-while-opening rule, tested on the service itself.

Over a connection this branch is not reached: ``_daemon/request_order.py`` makes an
``fs/close`` wait for the ``fs/open`` of the same handle id sent before it, so the close
always finds the open finished (``test_fs_client.py``'s cancelled-while-opening test
goes through that ordering, not through this branch). ``FsService`` keeps the rule for
a caller without that ordering (its own contract: "closing a handle whose fs/open is
still running makes that open fail and release its descriptor"), so it is tested here
directly: a close that arrives while the open runs in its thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio

from exec_runtime._daemon import fs_service as daemon_fs
from exec_runtime._daemon.fs_service import FsService
from exec_runtime._daemon.rpc_error import RpcError
from exec_runtime._wire.uris import file_uri
from protocol_schema.fs import FsCloseParams, FsOpenParams, FsReadBlockParams


def fds_on(path: Path) -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                found.append(int(name))
        except OSError:
            pass  # closed since the listing
    return found


async def test_a_close_during_the_open_fails_the_open_and_releases_its_fd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "slow"
    path.write_bytes(b"x")
    started = threading.Event()
    proceed = threading.Event()
    real = daemon_fs._open_regular

    def slow_open(native: str, flags: int, *, follow_symlinks: bool = True) -> int:
        if native == str(path):
            started.set()
            assert proceed.wait(10)
        return real(native, flags, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(daemon_fs, "_open_regular", slow_open)
    service = FsService()
    outcome: list[object] = []

    async def open_it() -> None:
        try:
            outcome.append(await service.open(FsOpenParams(handle_id="h", path=file_uri(path))))
        except RpcError as exc:
            outcome.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_it)
            await trio.to_thread.run_sync(started.wait)  # the open runs in its thread
            await service.close(FsCloseParams(handle_id="h"))  # overtakes it
            proceed.set()
        (error,) = outcome
        assert isinstance(error, RpcError), error
        assert "closed while opening" in str(error)
        assert service.open_handles == 0
        assert fds_on(path) == []  # the late open's descriptor was closed
        with pytest.raises(RpcError, match="unknown file read handle"):
            await service.read_block(FsReadBlockParams(handle_id="h", offset=0, len=1))
        # The id is free again, and the rule does not outlive that one open.
        await service.open(FsOpenParams(handle_id="h", path=file_uri(path)))
        assert service.open_handles == 1
        await service.close(FsCloseParams(handle_id="h"))
        assert fds_on(path) == []
