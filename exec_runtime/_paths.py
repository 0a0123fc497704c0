"""File URIs on the wire, native absolute paths inside."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from ._errors import RpcError

_REPEATED_SLASHES = re.compile("/{2,}")
_URI_PATH_SAFE = "/!$&'()*+,:;=@[]^|"
"""Printable ASCII the url crate leaves as is in a path (``quote`` adds ``_.-~``)."""


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


def file_uri(path: str | os.PathLike[str]) -> str:
    """An absolute file URI for a local path (relative paths resolve against the cwd)."""
    absolute = os.path.abspath(os.fspath(path))
    # Quoted as bytes: a name that is not UTF-8 (surrogate escapes) becomes %XX escapes
    # of its bytes, which path_from_file_uri turns back into the same name. Escaped as
    # Codex (Rust's url crate, path segments) escapes: only controls, space, "#%<>?`{}\
    # and non-ASCII bytes, so both daemons spell a URI alike.
    return "file://" + quote(os.fsencode(absolute), safe=_URI_PATH_SAFE)


def uri_for_remote(path: str | os.PathLike[str]) -> str:
    """A file URI for a path on the daemon's host; it must already be absolute there."""
    return _uri_for_remote_text(os.fspath(path))


@lru_cache(maxsize=256)
def _uri_for_remote_text(text: str) -> str:
    # Cached: every start sends a cwd, nearly always the same one, and pathlib's
    # parsing was a tenth of the client's CPU per one-shot command.
    if text.startswith("file:"):
        return text
    if not PurePosixPath(text).is_absolute():
        raise ValueError(f"path {text!r} must be absolute on the daemon's host")
    return "file://" + quote(os.fsencode(str(Path(text))))
