"""``exec_runtime.testing.fault_proxy`` passes on every message the client accepts."""

from __future__ import annotations

import os
from pathlib import Path

import trio

import exec_runtime
from exec_runtime import ServerConfig
from exec_runtime.testing import fault_proxy


async def test_a_reply_over_a_mebibyte_passes_the_proxy(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """trio-websocket's default limit is 1 MiB: a bigger reply (here a 3 MiB
    ``fs/readFile``, 4 MiB of base64) closed the proxy's upstream connection, and the
    client, retrying the read on every reconnect, never got it."""
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "big").write_bytes(data)
    url = await nursery.start(exec_runtime.serve, ServerConfig())
    with trio.fail_after(15):
        async with fault_proxy(url) as proxy, exec_runtime.open_client(proxy.url) as client:
            assert await client.fs.read_file(tmp_path / "big") == data
            assert client.statistics().reconnects == 0
            assert proxy.controller.connections == 1
