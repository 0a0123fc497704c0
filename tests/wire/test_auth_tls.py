"""Token auth and TLS (PROTOCOL §1 extension): 401 before the upgrade, constant-time
compare, never logged, the non-loopback guard, wss:// with a trustme CA."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trustme

import exec_runtime
from exec_runtime import ServerConfig, open_client, serve
from exec_runtime._daemon.server import StartupError
from exec_runtime._wire.http import bearer_refusal
from tests.support.daemon_process import ROOT, Daemon

TOKEN = "tok-3f9a0c1b7e5d4a2f8c6b"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The daemon's certificate chain and key in one PEM (as --tls-cert accepts)."""
    path = tmp_path_factory.mktemp("tls") / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(path)
    return path


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return path


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def http_exchange(
    url: str, request: bytes, ssl_context: ssl.SSLContext | None = None
) -> bytes:
    """Send raw bytes; return the reply head (or everything until the daemon closes)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    if ssl_context is not None:
        stream = trio.SSLStream(stream, ssl_context, server_hostname=parts.hostname)
    async with stream:
        await stream.send_all(request)
        received = b""
        while b"\r\n\r\n" not in received and (data := await stream.receive_some(65536)):
            received += data
    return received


def upgrade(url: str, *headers: str) -> bytes:
    host = urlsplit(url).netloc
    extra = "".join(f"{header}\r\n" for header in headers)
    return (
        f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


# --- token auth ------------------------------------------------------------------------


def test_bearer_refusal_reasons_never_quote_the_header() -> None:
    assert bearer_refusal({}, TOKEN) == "no Authorization header"
    assert bearer_refusal({"authorization": f"Basic {TOKEN}"}, TOKEN) is not None
    assert bearer_refusal({"authorization": f"Bearer {TOKEN}"}, TOKEN) is None
    assert bearer_refusal({"authorization": f"bearer   {TOKEN} "}, TOKEN) is None
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "\xff" * 8):
        reason = bearer_refusal({"authorization": f"Bearer {wrong}"}, TOKEN)
        assert reason == "wrong token"


@pytest.mark.parametrize("server_config", [ServerConfig(token=TOKEN)])
async def test_a_missing_or_wrong_token_gets_401_before_the_upgrade(daemon: str) -> None:
    with trio.fail_after(10):
        for headers in (
            (),
            ("Authorization: Bearer wrong",),
            (f"Authorization: Basic {TOKEN}",),
            (f"Authorization: Bearer {TOKEN}x",),
            (f"Authorization: Bearer {TOKEN[:-1]}",),
            (f"Authorization: {TOKEN}",),
        ):
            reply = await http_exchange(daemon, upgrade(daemon, *headers))
            assert status_of(reply) == 401, (headers, reply)
            assert b"WWW-Authenticate: Bearer" in reply
            assert b"Sec-WebSocket-Accept" not in reply
        good = await http_exchange(daemon, upgrade(daemon, f"Authorization: Bearer {TOKEN}"))
        assert status_of(good) == 101
        # A plain GET without a token is 401 too; /readyz stays open (for health checks).
        plain = await http_exchange(daemon, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(plain) == 401
        ready = await http_exchange(daemon, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(ready) == 200


@pytest.mark.parametrize("server_config", [ServerConfig(token=TOKEN)])
async def test_the_client_token_works_end_to_end(daemon: str) -> None:
    with trio.fail_after(10):
        async with open_client(daemon, token=TOKEN) as client:
            done = await client.run(["sh", "-c", "echo authorized"])
            assert done.stdout == b"authorized\n"
        for token in (None, "wrong"):
            with pytest.raises(exec_runtime.ConnectionRejectedError) as caught:
                async with open_client(daemon, token=token):
                    pass
            assert caught.value.status_code == 401


@pytest.mark.parametrize("server_config", [ServerConfig(token=TOKEN)])
async def test_the_token_is_never_logged(
    daemon: str, server_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(10):
        assert TOKEN not in repr(server_config)
        with pytest.raises(exec_runtime.ConnectionRejectedError):
            async with open_client(daemon, token=TOKEN[:-1] + "Z"):
                pass
        await http_exchange(daemon, upgrade(daemon, f"Authorization: Bearer {TOKEN}-not"))
        async with open_client(daemon, token=TOKEN) as client:
            assert (await client.run(["true"])).returncode == 0
    messages = [record.getMessage() for record in caplog.records]
    assert any("wrong token" in message for message in messages)  # we did log the refusal
    # Debug logging of the WebSocket layer was on, so a leak there would show here.
    assert any(
        record.name == "exec_runtime.websocket" and record.levelno == logging.DEBUG
        for record in caplog.records
    )
    for record in caplog.records:
        assert TOKEN[:12] not in record.getMessage(), record.getMessage()
        assert TOKEN[:12] not in repr(record.args), record.getMessage()


async def test_serve_refuses_a_non_loopback_address_without_a_token() -> None:
    with trio.fail_after(5):
        with pytest.raises(StartupError, match="without a token"):
            await serve(ServerConfig(listen="ws://0.0.0.0:0"))
        with pytest.raises(StartupError, match="without a token"):
            await serve(ServerConfig(listen="ws://[::]:0"))


async def test_the_cli_refuses_a_non_loopback_address_without_a_token(daemons: Any) -> None:
    with trio.fail_after(20):
        env = {k: v for k, v in os.environ.items() if k != "EXEC_RUNTIME_TOKEN"}
        refused: Daemon = await daemons("--listen", "ws://0.0.0.0:0", env=env, wait_for_url=False)
        assert await refused.wait() == 2
        assert refused.stdout == b""
        assert "without a token" in refused.stderr.decode()
        assert "--allow-unauthenticated" in refused.stderr.decode()
        # Explicitly allowed, or with a token: it serves.
        allowed: Daemon = await daemons(
            "--listen", "ws://0.0.0.0:0", "--allow-unauthenticated", env=env
        )
        assert allowed.url.startswith("ws://0.0.0.0:")
        with_token: Daemon = await daemons(
            "--listen", "ws://0.0.0.0:0", env={**env, "EXEC_RUNTIME_TOKEN": TOKEN}
        )
        for running in (allowed, with_token):
            running.process.send_signal(signal.SIGTERM)
            assert await running.wait() == 0
        assert TOKEN not in with_token.stderr.decode()


async def test_cli_token_from_a_file_or_the_environment(daemons: Any, tmp_path: Path) -> None:
    with trio.fail_after(20):
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")  # a trailing newline is trimmed
        token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if k != "EXEC_RUNTIME_TOKEN"}
        from_file: Daemon = await daemons("--token-file", str(token_file), env=env)
        from_env: Daemon = await daemons(env={**env, "EXEC_RUNTIME_TOKEN": TOKEN})
        for running in (from_file, from_env):
            with pytest.raises(exec_runtime.ConnectionRejectedError):
                async with open_client(running.url):
                    pass
            async with open_client(running.url, token=TOKEN) as client:
                # The daemon dropped the variable from its environment: not even a child
                # that asks for everything (no default excludes) inherits it.
                done = await client.run(
                    ["sh", "-c", 'echo "${EXEC_RUNTIME_TOKEN-unset}"'],
                    env_policy={"inherit": "all", "ignoreDefaultExcludes": True},
                )
                assert done.stdout == b"unset\n"
            running.process.send_signal(signal.SIGTERM)
            assert await running.wait() == 0
            assert TOKEN not in running.stderr.decode()
        # An empty token is a mistake, not "no auth".
        token_file.write_text("\n")
        empty: Daemon = await daemons("--token-file", str(token_file), wait_for_url=False)
        assert await empty.wait() == 2
        assert "empty" in empty.stderr.decode()
        blank: Daemon = await daemons(env={**env, "EXEC_RUNTIME_TOKEN": ""}, wait_for_url=False)
        assert await blank.wait() == 2


async def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "exec_runtime", "run", *args],
        cwd=ROOT,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


@pytest.mark.parametrize("server_config", [ServerConfig(token=TOKEN)])
async def test_exec_runtime_run_takes_a_token(daemon: str) -> None:
    with trio.fail_after(20):
        env = {k: v for k, v in os.environ.items() if k != "EXEC_RUNTIME_TOKEN"}
        done = await run_cli("--url", daemon, "--token", TOKEN, "--", "echo", "via run", env=env)
        assert (done.returncode, done.stdout) == (0, b"via run\n"), done.stderr
        via_env = await run_cli(
            "--url", daemon, "--", "echo", "env", env={**env, "EXEC_RUNTIME_TOKEN": TOKEN}
        )
        assert (via_env.returncode, via_env.stdout) == (0, b"env\n"), via_env.stderr
        refused = await run_cli("--url", daemon, "--token", "nope", "--", "true", env=env)
        assert refused.returncode == 255
        assert b"HTTP 401" in refused.stderr
        assert b"Traceback" not in refused.stderr


# --- TLS --------------------------------------------------------------------------------


async def test_tls_serves_wss_to_a_client_that_trusts_the_ca(
    nursery: trio.Nursery, cert_file: Path, trusting: ssl.SSLContext
) -> None:
    with trio.fail_after(10):
        url = await nursery.start(serve, ServerConfig(tls_cert=str(cert_file), token=TOKEN))
        assert url.startswith("wss://127.0.0.1:")
        async with open_client(url, token=TOKEN, ssl_context=trusting) as client:
            done = await client.run(["sh", "-c", "echo over tls"])
            assert done.stdout == b"over tls\n"
        ready = await http_exchange(url, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", trusting)
        assert status_of(ready) == 200
        # Auth still applies over TLS.
        with pytest.raises(exec_runtime.ConnectionRejectedError):
            async with open_client(url, ssl_context=trusting):
                pass


async def test_a_client_that_does_not_trust_the_certificate_fails_cleanly(
    nursery: trio.Nursery, cert_file: Path, trusting: ssl.SSLContext
) -> None:
    with trio.fail_after(10):
        url = await nursery.start(serve, ServerConfig(tls_cert=str(cert_file)))
        with trio.fail_after(3):
            with pytest.raises(exec_runtime.ConnectError, match="not trusted") as untrusted:
                async with open_client(url):  # the system CAs do not include ours
                    pass
        assert isinstance(untrusted.value.__cause__, ssl.SSLCertVerificationError)
        # A plain ws:// client against the TLS port fails too, and promptly.
        with trio.fail_after(3):
            with pytest.raises((exec_runtime.TransportError, OSError)):
                async with open_client(url.replace("wss://", "ws://")):
                    pass
        # The daemon is unaffected.
        async with open_client(url, ssl_context=trusting) as client:
            assert (await client.run(["true"])).returncode == 0


async def test_the_cli_serves_wss_and_run_connects(
    daemons: Any, cert_file: Path, ca_file: Path, ca: trustme.CA, tmp_path: Path
) -> None:
    with trio.fail_after(20):
        key = tmp_path / "key.pem"
        cert = tmp_path / "cert.pem"
        issued = ca.issue_cert("127.0.0.1")
        issued.private_key_pem.write_to_path(key)
        for blob in issued.cert_chain_pems:
            blob.write_to_path(cert, append=True)
        env = {k: v for k, v in os.environ.items() if k != "EXEC_RUNTIME_TOKEN"}
        daemon: Daemon = await daemons(
            "--tls-cert", str(cert), "--tls-key", str(key), env={**env, "EXEC_RUNTIME_TOKEN": TOKEN}
        )
        assert daemon.url.startswith("wss://127.0.0.1:")
        # `run` uses the default context, which honours SSL_CERT_FILE.
        done = await run_cli(
            "--url", daemon.url, "--", "echo", "wss ok",
            env={**env, "EXEC_RUNTIME_TOKEN": TOKEN, "SSL_CERT_FILE": str(ca_file)},
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (0, b"wss ok\n"), done.stderr
        untrusted = await run_cli("--url", daemon.url, "--token", TOKEN, "--", "true", env=env)
        assert untrusted.returncode == 255
        assert b"CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0
        # A missing key file is a start-up error with a message, not a traceback.
        bad: Daemon = await daemons(
            "--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.pem"), wait_for_url=False
        )
        assert await bad.wait() == 2
        assert "nope.pem" in bad.stderr.decode()
        assert "Traceback" not in bad.stderr.decode()
