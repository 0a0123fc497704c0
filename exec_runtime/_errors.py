"""The public exceptions a host sees (the daemon's own error is ``_daemon/rpc_error.py``).

Public hierarchy (exported from ``exec_runtime``; README.md shows the same tree, and
tests/test_docs.py checks both against the classes)::

    ExecRuntimeError
    ├── ProtocolError        the daemon answered with a JSON-RPC error (keeps code, message)
    │   ├── SessionLostError the session could not be resumed
    │   └── RemoteOSError    an OS error on the daemon's host (also an OSError, with errno
    │       │                and filename): a start or fs call that failed
    │       ├── RemoteFileNotFoundError    (also FileNotFoundError)
    │       ├── RemotePermissionError      (also PermissionError)
    │       ├── RemoteNotADirectoryError   (also NotADirectoryError)
    │       ├── RemoteIsADirectoryError    (also IsADirectoryError)
    │       └── RemoteFileExistsError      (also FileExistsError)
    ├── TransportError       the connection failed or dropped with the outcome unknown
    │   └── ConnectError     connecting failed (also a ConnectionError, so an OSError)
    │       └── ConnectionRejectedError  the daemon refused the upgrade (.status_code)
    ├── ProcessFailed        a process's event stream could not be completed
    ├── StdinClosedError     a write to a closed stdin, or to a process without
    │                        pipe_stdin (defined in _client/process.py)
    ├── CalledProcessError   run(check=True): non-zero exit (also a
    │   │                    subprocess.CalledProcessError)
    │   └── SandboxDeniedError  the sandbox stopped the command
    ├── ClientClosedError    the client was used after it closed
    ├── NoEndpointError      a pool found no endpoint to take the work in time
    │                        (defined in _client/pool.py)
    └── TimeoutExpired       run(timeout=...) ran out: the process was killed (also a
                             subprocess.TimeoutExpired and a TimeoutError)

One class in two trees: ``except FileNotFoundError`` and ``except ExecRuntimeError`` both
catch a missing command. The errno travels in the JSON-RPC error's ``data``
(``{"errno": 2, "errnoName": "ENOENT", "filename": ...}``, an extension); a daemon that
sends none (Codex) is understood from its message (``[Errno 2] ...``, ``... (os error
2)``, ``<path>: <strerror>``), else the error stays a plain ProtocolError.
"""

from __future__ import annotations

import errno as errno_codes
import os
import re
import subprocess
from typing import Any, Final
from urllib.parse import unquote_to_bytes, urlsplit


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


class ConnectError(TransportError, ConnectionError):
    """Connecting to the daemon failed: refused, unreachable, timed out, a TLS failure
    or a ``ws://``/``wss://`` mismatch, or the peer is not an exec daemon. Also a
    ``ConnectionError`` (an ``OSError``; ``errno`` is the socket's when there is one).
    The message names the likely cause; ``__cause__`` is the underlying error."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        TransportError.__init__(self, message)
        if errno is not None:
            OSError.__init__(self, errno, message)
        else:
            OSError.__init__(self, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConnectionRejectedError(ConnectError):
    """The daemon refused the WebSocket upgrade with an HTTP status: 401 (missing or
    wrong token), 403 (a browser origin), ... ``status_code`` and ``body`` say which."""

    def __init__(self, message: str, status_code: int, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ProcessFailed(ExecRuntimeError):
    """A process's events could not be completed (gap no longer retained, recovery failed)."""


class ClientClosedError(ExecRuntimeError):
    """The client was used after it was closed or after recovery failed for good."""


class CalledProcessError(subprocess.CalledProcessError, ExecRuntimeError):
    """``run(check=True)``: the command failed. A ``subprocess.CalledProcessError``
    (``returncode``, ``cmd``, ``output``/``stdout``, ``stderr``) whose ``returncode``
    follows subprocess: ``-N`` for a death by signal N. ``exit_code`` is the code as
    the wire reported it (128+N for signal N, as a shell's ``$?``)."""

    def __init__(
        self,
        returncode: int,
        cmd: Any,
        output: bytes | None = None,
        stderr: bytes | None = None,
        *,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(returncode, cmd, output, stderr)
        self.exit_code = returncode if exit_code is None else exit_code


class SandboxDeniedError(CalledProcessError):
    """``run(check=True)`` of a sandboxed command that failed because of its sandbox
    (the daemon's ``sandboxDenied``, PROTOCOL §11). A host may ask its user and run
    the command again without the sandbox, as Codex does."""

    def __str__(self) -> str:
        return f"{super().__str__()} The sandbox denied it (sandboxDenied)."


class TimeoutExpired(subprocess.TimeoutExpired, ExecRuntimeError, TimeoutError):
    """``run(timeout=...)``: the process did not finish in time and was killed (its
    process group got SIGKILL). As ``subprocess.run`` raises it: ``cmd``, ``timeout``,
    and the ``output``/``stderr`` captured so far. Also a ``TimeoutError``."""


class RemoteOSError(ProtocolError, OSError):
    """The daemon failed an operation with an OS error (a start whose command is
    missing or not executable, a bad ``cwd``, an fs call on a missing path, ...).

    Both a :class:`ProtocolError` (``code``, ``message``, ``data`` as the daemon sent
    them) and an ``OSError`` (``errno``, ``strerror``, ``filename``); ``str()`` is the
    OSError's, as ``subprocess`` and ``open`` would say it. Raised as the subclass that
    matches the errno (``RemoteFileNotFoundError`` for ENOENT, ...), else as this.
    """

    def __init__(
        self,
        code: int,
        message: str,
        data: Any = None,
        *,
        errno: int | None = None,
        filename: str | None = None,
    ) -> None:
        ProtocolError.__init__(self, code, message, data)
        strerror = os.strerror(errno) if errno is not None else message
        if filename is not None:
            OSError.__init__(self, errno, strerror, filename)
        else:
            OSError.__init__(self, errno, strerror)


class RemoteFileNotFoundError(RemoteOSError, FileNotFoundError):
    """ENOENT on the daemon's host."""


class RemotePermissionError(RemoteOSError, PermissionError):
    """EACCES or EPERM on the daemon's host."""


class RemoteNotADirectoryError(RemoteOSError, NotADirectoryError):
    """ENOTDIR on the daemon's host."""


class RemoteIsADirectoryError(RemoteOSError, IsADirectoryError):
    """EISDIR on the daemon's host."""


class RemoteFileExistsError(RemoteOSError, FileExistsError):
    """EEXIST on the daemon's host."""


_BY_ERRNO: Final[dict[int, type[RemoteOSError]]] = {
    errno_codes.ENOENT: RemoteFileNotFoundError,
    errno_codes.EACCES: RemotePermissionError,
    errno_codes.EPERM: RemotePermissionError,
    errno_codes.ENOTDIR: RemoteNotADirectoryError,
    errno_codes.EISDIR: RemoteIsADirectoryError,
    errno_codes.EEXIST: RemoteFileExistsError,
}
_PYTHON_MESSAGE: Final = re.compile(r"\[Errno (\d+)\] [^:]*(?:: '(.*)')?\Z", re.DOTALL)
_BAD_CWD: Final = re.compile(r"cwd URI (\S+) is not valid on this host: not a directory\Z")
_RUST_MESSAGE: Final = re.compile(r"\(os error (\d+)\)\Z")
_BY_STRERROR: Final = {
    os.strerror(n): n for n in sorted(errno_codes.errorcode, reverse=True)
}  # reversed: the lowest number wins a shared text (EAGAIN, not EWOULDBLOCK)


def _errno_of(exc: ProtocolError) -> tuple[int, str | None] | None:
    data = exc.data
    if isinstance(data, dict):
        name = data.get("errnoName")
        number = getattr(errno_codes, name, None) if isinstance(name, str) else None
        if not isinstance(number, int):
            number = data.get("errno")
        if isinstance(number, int) and not isinstance(number, bool):
            filename = data.get("filename")
            if not isinstance(filename, str):  # a command not found: named in the message
                match = _PYTHON_MESSAGE.search(exc.message)
                filename = match[2] if match is not None else None
            return number, filename
    message = exc.message
    if (match := _PYTHON_MESSAGE.search(message)) is not None:
        return int(match[1]), match[2]
    if (match := _RUST_MESSAGE.search(message)) is not None:
        return int(match[1]), None
    if (match := _BAD_CWD.match(message)) is not None:  # missing or not a directory
        path = os.fsdecode(unquote_to_bytes(urlsplit(match[1]).path))
        return errno_codes.ENOTDIR, path
    # Our daemon's fs errors before data carried the errno: "<path>: <strerror>".
    path, sep, text = message.rpartition(": ")
    if sep and path.startswith("/") and text in _BY_STRERROR:
        return _BY_STRERROR[text], path
    return None


def os_error_from(exc: ProtocolError) -> ProtocolError:
    """The :class:`RemoteOSError` subclass for a daemon error that carries an OS error
    (in ``data``, or in a message of a known form); else ``exc`` itself."""
    if isinstance(exc, RemoteOSError) or type(exc) is not ProtocolError:
        return exc
    found = _errno_of(exc)
    if found is None:
        return exc
    number, filename = found
    kind = _BY_ERRNO.get(number, RemoteOSError)
    return kind(exc.code, exc.message, exc.data, errno=number, filename=filename)
