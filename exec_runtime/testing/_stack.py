"""The whole client ↔ daemon stack in one Trio run, through the fault plan, no socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._client.client import ExecClient
from .._daemon.config import ServerConfig
from .._daemon.session import SessionRegistry
from .._local import LocalConnector
from ._faults import FaultController, FaultPlan, FaultyConnector


@asynccontextmanager
async def open_faulty_local(
    plan: FaultPlan | None = None,
    config: ServerConfig | None = None,
    *,
    recovery_deadline: float = 25.0,
    ack_output: bool = True,
) -> AsyncIterator[tuple[ExecClient, FaultController]]:
    """A real daemon (sessions, processes, sequencers) and a real client, connected by
    an in-memory transport that injects the plan's faults."""
    controller = FaultController(plan or FaultPlan())
    async with trio.open_nursery() as nursery:
        registry = SessionRegistry(nursery, config or ServerConfig())
        connector = FaultyConnector(LocalConnector(registry), controller)
        async with trio.open_nursery() as client_nursery:
            client = ExecClient._create(
                connector,
                client_nursery,
                recovery_deadline=recovery_deadline,
                ack_output=ack_output,
            )
            await client_nursery.start(client._supervise)
            try:
                yield client, controller
            finally:
                controller.resume()
                await client.aclose()
                client_nursery.cancel_scope.cancel()
        registry.close_all()
        nursery.cancel_scope.cancel()
