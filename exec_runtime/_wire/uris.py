"""File URIs on the wire, native absolute paths inside: building them (both sides).
The daemon's parser, which answers -32602, is ``_daemon/paths.py``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import quote

_URI_PATH_SAFE = "/!$&'()*+,:;=@[]^|"
"""Printable ASCII the url crate leaves as is in a path (``quote`` adds ``_.-~``)."""


def file_uri(path: str | os.PathLike[str]) -> str:
    """An absolute file URI for a local path (relative paths resolve against the cwd)."""
    absolute = os.path.abspath(os.fspath(path))
    # Quoted as bytes: a name that is not UTF-8 (surrogate escapes) becomes %XX escapes
    # of its bytes, which the daemon's path_from_file_uri turns back into the same name. Escaped as
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
