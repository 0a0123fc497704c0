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

from ._client import ClientState, ClientStatistics, CompletedProcess, ExecClient
from ._client_args import EnvPolicy
from ._client_process import ProcessHandle, StdinClosedError
from ._config import ServerConfig
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
from ._open import open_client, open_local
from ._pool import ExecPool, NoEndpointError, PoolProcessHandle, PoolStatistics, open_pool
from ._sandbox_intent import Sandbox
from ._server import serve

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
