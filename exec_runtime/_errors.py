"""Errors. The daemon raises :class:`RpcError`; clients see the public hierarchy.

Public hierarchy (exported from ``exec_runtime``)::

    ExecRuntimeError
    ├── ProtocolError        the daemon answered with a JSON-RPC error (keeps code, message)
    │   └── SessionLostError the session could not be resumed
    ├── TransportError       the connection failed or dropped with the outcome unknown
    ├── ProcessFailed        a process's event stream could not be completed
    ├── SandboxDeniedError   run(check=True): the sandbox stopped the command (also a
    │                        subprocess.CalledProcessError)
    └── ClientClosedError    the client was used after it closed
"""

from __future__ import annotations

import subprocess
from typing import Any

from protocol_schema import errors as codes


class RpcError(Exception):
    """Raised by daemon handlers; the dispatcher turns it into a JSON-RPC error reply."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def invalid_request(cls, message: str) -> RpcError:
        return cls(codes.INVALID_REQUEST, message)

    @classmethod
    def invalid_params(cls, message: str) -> RpcError:
        return cls(codes.INVALID_PARAMS, message)

    @classmethod
    def internal(cls, message: str) -> RpcError:
        return cls(codes.INTERNAL_ERROR, message)

    @classmethod
    def not_found(cls, message: str) -> RpcError:
        return cls(codes.NOT_FOUND, message)


class ExecRuntimeError(Exception):
    """The root of every error this package raises to its users."""


class ProtocolError(ExecRuntimeError):
    """The daemon answered a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class SessionLostError(ProtocolError):
    """Recovery could not resume the session (unknown or expired session id)."""


class TransportError(ExecRuntimeError):
    """The transport failed; for an in-flight mutating call the outcome is unknown."""


class ProcessFailed(ExecRuntimeError):
    """A process's events could not be completed (gap no longer retained, recovery failed)."""


class ClientClosedError(ExecRuntimeError):
    """The client was used after it was closed or after recovery failed for good."""


class SandboxDeniedError(subprocess.CalledProcessError, ExecRuntimeError):
    """``run(check=True)`` of a sandboxed command that failed because of its sandbox
    (the daemon's ``sandboxDenied``, PROTOCOL §11). A host may ask its user and run
    the command again without the sandbox, as Codex does."""

    def __str__(self) -> str:
        return f"{super().__str__()} The sandbox denied it (sandboxDenied)."
