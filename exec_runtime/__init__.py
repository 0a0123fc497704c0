"""exec-runtime: run processes for a remote client, with Trio structured concurrency.

Public API::

    async with exec_runtime.open_client("ws://127.0.0.1:PORT") as client:   # remote
    async with exec_runtime.open_local() as client:                         # in-process
    async with exec_runtime.open_pool(["ws://svc.ns:8765"]) as pool:      # many daemons
        result = await client.run(["echo", "hi"])
        proc = await client.start(["sh", "-c", "..."])
        await client.run(["make"], sandbox=exec_runtime.Sandbox.workspace_write(["/src"]))
        async for event in proc.events(): ...

    url = await nursery.start(exec_runtime.serve, exec_runtime.ServerConfig())  # embed the daemon

    exec_runtime.tune_malloc()  # opt in, once, in a host that streams a lot of output (glibc)
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._client.args import EnvPolicy
from ._client.client import ClientState, ClientStatistics, CompletedProcess, ExecClient
from ._client.connect import open_client
from ._client.pool import ExecPool, NoEndpointError, PoolProcessHandle, PoolStatistics, open_pool
from ._client.process import ProcessHandle, StdinClosedError
from ._core.events import Closed, Event, Exited, Failed, Output
from ._errors import (
    CalledProcessError,
    ClientClosedError,
    ConnectError,
    ConnectionRejectedError,
    ExecRuntimeError,
    ProcessFailed,
    ProtocolError,
    RemoteFileExistsError,
    RemoteFileNotFoundError,
    RemoteIsADirectoryError,
    RemoteNotADirectoryError,
    RemoteOSError,
    RemotePermissionError,
    SandboxDeniedError,
    SessionLostError,
    TimeoutExpired,
    TransportError,
)
from ._malloc import tune_malloc
from ._wire.sandbox_intent import Sandbox

# The daemon side loads on first use: a host that only connects never imports it.
_LAZY = {
    "ServerConfig": ("._daemon.config", "ServerConfig"),
    "serve": ("._daemon.server", "serve"),
    "open_local": ("._local", "open_local"),
}

if TYPE_CHECKING:
    from ._daemon.config import ServerConfig
    from ._daemon.server import serve
    from ._local import open_local


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), attribute)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CalledProcessError",
    "ClientClosedError",
    "ClientState",
    "ClientStatistics",
    "Closed",
    "CompletedProcess",
    "ConnectError",
    "ConnectionRejectedError",
    "EnvPolicy",
    "Event",
    "ExecClient",
    "ExecPool",
    "ExecRuntimeError",
    "Exited",
    "Failed",
    "NoEndpointError",
    "Output",
    "PoolProcessHandle",
    "PoolStatistics",
    "ProcessFailed",
    "ProcessHandle",
    "ProtocolError",
    "RemoteFileExistsError",
    "RemoteFileNotFoundError",
    "RemoteIsADirectoryError",
    "RemoteNotADirectoryError",
    "RemoteOSError",
    "RemotePermissionError",
    "Sandbox",
    "SandboxDeniedError",
    "ServerConfig",
    "SessionLostError",
    "StdinClosedError",
    "TimeoutExpired",
    "TransportError",
    "open_client",
    "open_local",
    "open_pool",
    "serve",
    "tune_malloc",
]
