"""Shared fixtures: an in-process daemon on a loopback port and a raw wire client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio_websocket
import wsproto.connection
import wsproto.utilities
from hypothesis import HealthCheck, settings

from exec_runtime import ExecClient, ServerConfig, serve
from tests.support.wire_client import BACKENDS, RawClient, open_backend

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# CI's second, randomized run (.ci/run, over tests/core, the pure modules that run in
# seconds): new examples every time, three times as many, replayable from the seed
# .ci/run prints (``--hypothesis-seed``); no database, so the seed alone decides.
settings.register_profile(
    "ci-random",
    max_examples=300,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.register_profile("soak", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))






@pytest.fixture(params=BACKENDS)
async def client(
    request: pytest.FixtureRequest, nursery: trio.Nursery, server_config: ServerConfig
) -> AsyncIterator[ExecClient]:
    async with open_backend(request.param, nursery, server_config) as c:
        yield c










@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig()


@pytest.fixture
async def daemon(server_config: ServerConfig, nursery: trio.Nursery) -> AsyncIterator[str]:
    url = await nursery.start(serve, server_config)
    yield url


@pytest.fixture
async def connect(daemon: str) -> AsyncIterator[Any]:
    """A factory of RawClients. Each client's WebSocket is closed at teardown: a client
    whose tasks were just cancelled never answers the daemon's close handshake, which
    would hold the daemon's shutdown for its close timeout."""
    clients: list[RawClient] = []
    async with trio.open_nursery() as nursery:

        async def _connect(
            handshake: bool = True, url: str | None = None, **kwargs: Any
        ) -> RawClient:
            ws = await trio_websocket.connect_websocket_url(nursery, url or daemon, **kwargs)
            client = RawClient(ws, nursery)
            clients.append(client)
            if handshake:
                await client.handshake()
            return client

        yield _connect
        for client in clients:
            await client.ws.aclose()
        nursery.cancel_scope.cancel()


def _no_pong_once_closing() -> None:
    """trio-websocket (0.12) answers a ping that arrives after it sent its own close
    frame, and wsproto refuses that pong: LocalProtocolError in the reader task, which
    crashes the nursery the connection lives in (and so the test or fixture). The
    daemons here ping every 50 ms in the keepalive tests, so a test client's close
    sometimes meets one. It is the test peer's bug, not the daemon's: a closing
    endpoint may drop the pong (RFC 6455 §5.5.2), so ours does."""
    answer_ping = trio_websocket.WebSocketConnection._handle_ping_event

    async def answer_unless_closing(self: Any, event: Any) -> None:
        try:
            await answer_ping(self, event)
        except wsproto.utilities.LocalProtocolError:
            if self._wsproto.state is not wsproto.connection.ConnectionState.LOCAL_CLOSING:
                raise

    trio_websocket.WebSocketConnection._handle_ping_event = answer_unless_closing  # type: ignore[method-assign]


_no_pong_once_closing()


@pytest.fixture
async def daemons(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    """Spawn real ``exec-runtime serve`` subprocesses; each is killed at teardown."""
    from tests.support.daemon_process import Daemon, spawn_daemon

    started: list[Daemon] = []

    async def spawn(*args: str, **kwargs: Any) -> Daemon:
        daemon = await spawn_daemon(nursery, *args, **kwargs)
        started.append(daemon)
        return daemon

    yield spawn
    for daemon in started:
        await daemon.kill()




