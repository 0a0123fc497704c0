"""The daemon's error: raised by handlers, turned into a JSON-RPC error reply by the
connection (PROTOCOL §2). Clients never see this class: they see ``_errors.py``'s."""

from __future__ import annotations

import errno as errno_codes
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

    def with_os_error(self, exc: OSError, filename: str | None = None) -> RpcError:
        """This error, its ``data`` carrying the OS error (see :func:`os_error_data`)."""
        self.data = os_error_data(exc, filename)
        return self


def os_error_data(exc: OSError, filename: str | None = None) -> dict[str, Any] | None:
    """The ``data`` member that lets a client raise the matching OSError subclass:
    ``{"errno": N, "errnoName": "ENOENT", "filename": ...}`` (the name first: numbers
    differ between systems). None when the error carries no errno."""
    if not isinstance(exc.errno, int):
        return None
    data: dict[str, Any] = {"errno": exc.errno}
    if (name := errno_codes.errorcode.get(exc.errno)) is not None:
        data["errnoName"] = name
    name_of_file = filename if filename is not None else exc.filename
    if isinstance(name_of_file, str):
        # Surrogate escapes (a name that is not UTF-8) cannot travel: U+FFFD instead.
        data["filename"] = name_of_file.encode("utf-8", "surrogateescape").decode(
            "utf-8", "replace"
        )
    return data
