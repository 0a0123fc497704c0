"""A client whose link runs through a proxy the test can break, and a polled wait."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

import exec_runtime
from exec_runtime import ExecClient, ServerConfig
from tests.support.ws_proxy import WsProxy

PY = sys.executable


@asynccontextmanager
async def proxied_client(
    nursery: trio.Nursery, config: ServerConfig, **client_options: Any
) -> AsyncIterator[tuple[ExecClient, WsProxy]]:
    daemon_url = await nursery.start(exec_runtime.serve, config)
    proxy = WsProxy(daemon_url)
    url = await nursery.start(proxy.run)
    async with exec_runtime.open_client(url, **client_options) as client:
        yield client, proxy


async def until(predicate: Callable[[], bool]) -> None:
    """Poll client or proxy state (or files a child writes); callers bound the wait."""
    while not predicate():  # noqa: ASYNC110 - nothing to wait on for these conditions
        await trio.sleep(0.01)

