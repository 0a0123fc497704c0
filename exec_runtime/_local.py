"""The in-process runtime: a daemon's session registry in this Trio run, and a client
joined to it by an in-memory transport pair. The only module that joins the two sides
(``_client`` never imports ``_daemon``, nor the reverse)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from opentelemetry.metrics import MeterProvider

import protocol_schema as wire

from ._client.args import check_client_options
from ._client.client import ExecClient
from ._client.connect import client_from, unwrap_lone_exception
from ._daemon.config import ServerConfig
from ._daemon.connection import Connection
from ._daemon.session import SessionRegistry
from ._wire.transport import MessageTransport, memory_transport_pair


class LocalConnector:
    """Connects to a daemon running inside this Trio run, over an in-memory pair."""

    def __init__(self, registry: SessionRegistry, codec: wire.Codec = wire.MSGPACK) -> None:
        self.registry = registry
        self.codec = codec
        self.connections: list[MessageTransport] = []

    async def connect(self, nursery: trio.Nursery) -> MessageTransport:
        client_end, daemon_end = memory_transport_pair(self.codec)
        self.connections.append(client_end)
        nursery.start_soon(_serve_local, Connection(daemon_end, self.registry))
        return client_end


async def _serve_local(connection: Connection) -> None:
    try:
        await connection.serve()
    finally:
        with trio.CancelScope(shield=True):
            await connection.transport.aclose()


@asynccontextmanager
async def open_local(
    config: ServerConfig | None = None,
    *,
    client_name: str = "exec-runtime",
    meter_provider: MeterProvider | None = None,
) -> AsyncIterator[ExecClient]:
    """An in-process runtime with the client's interface: no socket, same code paths.

    Processes belong to this context: leaving it kills every process group. The
    daemon's metrics go to ``config.meter_provider``, the client's ``exec_client_*``
    counters to ``meter_provider``.
    """
    if config is not None and not isinstance(config, ServerConfig):
        raise TypeError(f"config must be a ServerConfig, not {type(config).__name__}")
    check_client_options(client_name=client_name, meter_provider=meter_provider)
    with unwrap_lone_exception():
        async with trio.open_nursery() as nursery:
            registry = SessionRegistry(nursery, config or ServerConfig())
            try:
                async with client_from(
                    LocalConnector(registry), client_name, meter_provider=meter_provider
                ) as client:
                    yield client
            finally:
                registry.close_all()
                nursery.cancel_scope.cancel()
