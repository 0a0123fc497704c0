"""Logs carry no credentials: a session id is the resume credential (with the token,
anyone holding it can resume a detached session), so the daemon logs only a short
non-reversible fingerprint of it; the token is never logged."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from typing import Any

import pytest
import trio

from exec_runtime import ClientState, ServerConfig
from exec_runtime._core.redact import fingerprint
from tests.support.daemon_process import Daemon, eventually
from tests.support.recovery import proxied_client, until
from tests.support.wire_client import RawClient, WireError

TOKEN = "tok-5e1d7a9c03b24f68a1c7"


def test_fingerprint_is_short_stable_and_not_the_id() -> None:
    session_id = "0f4c2a4e-8d1b-4c3a-9e57-2b6f1d0a9c88"
    assert fingerprint(session_id) == hashlib.sha256(session_id.encode()).hexdigest()[:8]
    assert fingerprint(session_id) != fingerprint(session_id.replace("0f", "1f", 1))


async def test_the_default_log_holds_no_session_id_and_no_token(daemons: Any, connect: Any) -> None:
    """Every path that logs about a session at the default level (INFO): attach,
    resume, a resume refused while attached, an unknown resume, eviction past
    ``--max-detached-sessions``, expiry, the SIGUSR1 summary, shutdown."""
    with trio.fail_after(30):
        env = {**os.environ, "EXEC_RUNTIME_TOKEN": TOKEN}
        daemon: Daemon = await daemons(
            "--detached-ttl", "0.2", "--max-detached-sessions", "1", env=env
        )
        headers = [("Authorization", f"Bearer {TOKEN}")]

        async def client() -> RawClient:
            return await connect(url=daemon.url, extra_headers=headers)  # type: ignore[no-any-return]

        first = await client()
        assert first.session_id is not None
        await first.start("p", ["sh", "-c", "echo hi"])
        await first.wait_closed("p")
        again = await connect(url=daemon.url, extra_headers=headers, handshake=False)
        with pytest.raises(WireError) as refused:  # still attached elsewhere: -32010
            await again.handshake(resume=first.session_id)
        assert refused.value.code == -32010
        await first.ws.aclose()
        await eventually(lambda: first.session_id is not None)
        resumed = await connect(url=daemon.url, extra_headers=headers, handshake=False)
        # Retried until the daemon has seen the first connection go (-32010 until then).
        while True:
            try:
                await resumed.handshake(resume=first.session_id)
                break
            except WireError as exc:
                assert exc.code == -32010
        unknown = await connect(url=daemon.url, extra_headers=headers, handshake=False)
        with pytest.raises(WireError):
            await unknown.handshake(resume="00000000-0000-4000-8000-000000000000")
        sessions = [first.session_id]
        # Two more sessions, both detached: the older is evicted (one may stay detached),
        # the other expires after 0.2 s.
        for _ in range(2):
            other = await client()
            assert other.session_id is not None
            sessions.append(other.session_id)
            await other.ws.aclose()
        await eventually(lambda: b"expired" in daemon.stderr)
        daemon.process.send_signal(signal.SIGUSR1)
        await eventually(lambda: b"state:" in daemon.stderr)
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0

        log = daemon.stderr.decode()
        assert "attached to session" in log and "ending session" in log, log
        for session_id in sessions:
            assert session_id not in log, log
            # The hyphen-less form too, and no half of it.
            assert session_id.replace("-", "") not in log
            assert session_id[:18] not in log
        assert TOKEN not in log
        assert fingerprint(first.session_id) in log


async def test_the_client_logs_no_session_id_when_its_recovery_fails(
    caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    """A client that cannot resume fails with an error naming the session (for its
    caller, who has the id anyway); what it logs names only the fingerprint."""
    with trio.fail_after(20), caplog.at_level(logging.DEBUG, logger="exec_runtime"):
        options = {"recovery_deadline": 0.5}
        async with proxied_client(nursery, ServerConfig(), **options) as (client, proxy):
            session_id = client.session_id
            assert session_id is not None
            assert await client.run(["true"], check=False)
            proxy.refusing = True
            await proxy.drop()
            await until(lambda: client.state is ClientState.FAILED)
        assert "could not resume session" in caplog.text
        assert session_id not in caplog.text
        assert fingerprint(session_id) in caplog.text
