"""A request's ``file:`` URI → an absolute native path on this host, or -32602."""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from .rpc_error import RpcError

_REPEATED_SLASHES = re.compile("/{2,}")


def path_from_file_uri(uri: str, what: str = "path") -> str:
    """Parse a ``file:`` URI into an absolute native path, or raise -32602.

    ``what`` names the field in the error message (``cwd`` uses the protocol's wording).
    """
    problem = _uri_problem(uri)
    if problem is not None:
        if what == "cwd":
            raise RpcError.invalid_params(f"cwd URI {uri} is not valid on this host: {problem}")
        raise RpcError.invalid_params(f"{what} URI {uri} is not valid on this host: {problem}")
    # Taken as the OS will take it: no textual ``..`` folding (``a/link/..`` is not
    # ``a`` when ``link`` is a symlink), no dropped trailing ``/`` (``file/`` is ENOTDIR).
    # Percent-escapes are bytes: ``%FF`` names the byte 0xFF, as a Linux name may hold.
    return _REPEATED_SLASHES.sub("/", os.fsdecode(unquote_to_bytes(urlsplit(uri).path)))


def _uri_problem(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return "not a file: URI"
    if parts.netloc not in ("", "localhost"):
        return f"host {parts.netloc!r} is not this host"
    if parts.query or parts.fragment:
        return "a file URI has no query or fragment"
    path = unquote(parts.path)
    if not PurePosixPath(path).is_absolute():
        return "the path is not absolute"
    if "\x00" in path:
        return "the path contains a NUL byte"
    return None
