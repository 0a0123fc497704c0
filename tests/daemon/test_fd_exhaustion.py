"""File descriptors run out: no single failure takes the daemon down.

A real daemon runs with a small RLIMIT_NOFILE. Every resource a process start takes
(pipes, PTY, pidfds, epoll, the watchdog's registration) either is had or the start
is answered ``-32603`` with everything released; the daemon keeps answering. And with
its reserve of descriptors (``--fd-reserve``), ``fs/open`` and starts are refused
first, so a new connection can still be accepted when clients took the rest."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.daemon_process import Daemon, eventually, fd_count
from tests.support.wire_client import RawClient, WireError, output_of

LIMIT = 64
"""The daemon's fd limit, soft and hard: about 12 of them are taken once it serves
one connection."""


async def fill(client: RawClient, path: Path, daemon: Daemon, free: int) -> list[str]:
    """Open file handles until the daemon has ``free`` descriptors left; their ids."""
    handles: list[str] = []
    while LIMIT - fd_count(daemon.pid) > free:
        handle = f"h{len(handles)}"
        await client.call("fs/open", {"handleId": handle, "path": f"file://{path}"})
        handles.append(handle)
    return handles


@asynccontextmanager
async def alive(daemon: Daemon) -> AsyncIterator[None]:
    """Fail at once, with its log, if the daemon exits inside the block (a client
    would otherwise wait for an answer forever)."""

    async def watch() -> None:
        await daemon.process.wait()
        raise AssertionError(
            f"the daemon exited ({daemon.process.returncode}): {daemon.stderr.decode()[-3000:]}"
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        yield
        nursery.cancel_scope.cancel()


async def release(client: RawClient, handles: list[str]) -> None:
    for handle in handles:
        await client.call("fs/close", {"handleId": handle})


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
async def test_a_start_at_every_free_fd_count_fails_cleanly_or_runs(
    daemons: Any, connect: Any, tmp_path: Path, tty: bool
) -> None:
    """No reserve (``--fd-reserve 0``): the start meets EMFILE at each of its steps in
    turn. It is answered (success, or -32603 naming the OS error), the daemon keeps
    serving, and once the handles are closed it holds as many fds as before: nothing
    leaked, not even by a start that had spawned its child."""
    path = tmp_path / "file"
    path.write_bytes(b"x")
    with trio.fail_after(120):
        daemon: Daemon = await daemons("--fd-reserve", "0", nofile=(LIMIT, LIMIT))
        client: RawClient = await connect(url=daemon.url)
        await client.call("environment/status")
        baseline = fd_count(daemon.pid)
        outcomes: dict[int, str] = {}
        async with alive(daemon):
            for free in range(13):
                handles = await fill(client, path, daemon, free)
                process_id = f"p{free}"
                argv = ["sh", "-c", "echo ran$((20+1))"]
                reply = await client.start_request(process_id, argv, tty=tty)
                if "error" in reply:
                    assert reply["error"]["code"] == -32603, reply
                    assert "Too many open files" in reply["error"]["message"], reply
                    outcomes[free] = "refused"
                else:
                    outcomes[free] = "ran"
                assert await client.call("environment/status") == {"status": "ready"}
                await release(client, handles)
                if outcomes[free] == "ran":
                    with trio.move_on_after(10) as waited:
                        events = await client.wait_closed(process_id)
                    assert not waited.cancelled_caught, daemon.stderr.decode()[-3000:]
                    stream = "pty" if tty else "stdout"
                    assert b"ran21" in output_of(events, stream), events
                # Everything the start took is given back (a closed process keeps no fd).
                await eventually(lambda: fd_count(daemon.pid) == baseline)
                assert daemon.process.returncode is None
        # Both outcomes were met: the sweep crossed the point where a start fits.
        assert outcomes[0] == "refused" and outcomes[12] == "ran", outcomes
        await client.start("after", ["true"], tty=tty)
        await client.wait_closed("after")
        assert daemon.process.returncode is None


async def test_the_reserve_refuses_opens_and_starts_first_and_keeps_accepting(
    daemons: Any, connect: Any, tmp_path: Path
) -> None:
    """With the default reserve (an eighth of a 64-fd limit: 8), handles are refused
    while 8 fds are still free: a new connection is accepted and served, starts are
    refused with -32600 (not -32603, not a crash), and all works again once a client
    lets go."""
    path = tmp_path / "file"
    path.write_bytes(b"x")
    with trio.fail_after(60):
        daemon: Daemon = await daemons(nofile=(LIMIT, LIMIT))
        client: RawClient = await connect(url=daemon.url)
        handles: list[str] = []
        with pytest.raises(WireError) as refused:
            while True:
                handle = f"h{len(handles)}"
                await client.call("fs/open", {"handleId": handle, "path": f"file://{path}"})
                handles.append(handle)
        assert refused.value.code == -32600
        assert "file descriptors" in refused.value.message
        assert LIMIT - fd_count(daemon.pid) >= 8
        with pytest.raises(WireError) as start_refused:
            await client.start("p", ["true"])
        assert start_refused.value.code == -32600
        assert "file descriptors" in start_refused.value.message
        # Accepting still works, and the new connection is served.
        other: RawClient = await connect(url=daemon.url)
        assert await other.call("environment/status") == {"status": "ready"}
        await release(client, handles[:16])
        await other.start("q", ["sh", "-c", "echo fine"])
        assert output_of(await other.wait_closed("q")) == b"fine\n"
        assert daemon.process.returncode is None


async def test_the_fd_limit_is_raised_to_the_hard_limit_at_start_up(daemons: Any) -> None:
    with trio.fail_after(20):
        daemon: Daemon = await daemons(nofile=(LIMIT, 4 * LIMIT))
        limits = await trio.Path(f"/proc/{daemon.pid}/limits").read_text()
        (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert line.split()[3:5] == [str(4 * LIMIT), str(4 * LIMIT)], line
        await eventually(lambda: b"open file limit" in daemon.stderr)
        assert re.search(rb"open file limit raised from 64 to 256", daemon.stderr)


async def test_a_burst_of_starts_is_not_refused_for_descriptors_only_promised(
    daemons: Any, connect: Any
) -> None:
    """Each start counts its ~10 descriptors as taken from its check until its child
    runs. Starts queued for a spawn thread used to count too: a burst of 200 at a 2,048
    limit was refused with -32600 while most of the table was free. Now only the starts
    being spawned hold a promise (``fds.START_SLOTS``); the rest wait for a slot."""
    with trio.fail_after(120):
        daemon: Daemon = await daemons(nofile=(2048, 2048))
        client: RawClient = await connect(url=daemon.url)
        refused: list[str] = []

        async def start(n: int) -> None:
            reply = await client.start_request(f"p{n}", ["true"])
            if "error" in reply:
                refused.append(reply["error"]["message"])
            else:
                await client.wait_closed(f"p{n}")

        async with alive(daemon), trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(start, n)
        assert refused == []
