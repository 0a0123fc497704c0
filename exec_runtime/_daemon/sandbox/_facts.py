"""What the policy compiler may ask of the daemon's filesystem, for real; glob entries
are expanded (bounded) beforehand, in a worker thread."""

from __future__ import annotations

import glob as globbing
import itertools
import os
from collections.abc import Mapping
from typing import Final

from protocol_schema import sandbox as wire

from ..._core.sandbox_policy import PolicyError, Unenforceable
from ..paths import path_from_file_uri
from ..rpc_error import RpcError
from . import _guards

MAX_GLOB_MATCHES: Final = 4096
"""A glob entry matching more paths is refused (a mask that covers only some of them
would fail open, and each match is a mount)."""
MAX_ENTRIES: Final = 1024


def restricted_entries(intent: wire.SandboxIntent) -> list[wire.FileSystemEntry]:
    profile = intent.permissions
    if isinstance(profile, wire.ProfileManaged) and isinstance(
        profile.file_system, wire.FileSystemRestricted
    ):
        return profile.file_system.entries
    return []


def glob_patterns(intent: wire.SandboxIntent) -> list[str]:
    entries = restricted_entries(intent)
    return [e.path.pattern for e in entries if isinstance(e.path, wire.FileSystemGlob)]


def expand_glob(pattern: str) -> list[str]:
    """Every existing path ``pattern`` matches; blocking (a worker thread runs it)."""
    matches = list(itertools.islice(globbing.iglob(pattern, recursive=True), MAX_GLOB_MATCHES + 1))
    if len(matches) > MAX_GLOB_MATCHES:
        raise Unenforceable(f"the glob {pattern!r} matches more than {MAX_GLOB_MATCHES} paths")
    return sorted(matches)


class HostFilesystem:
    """The compiler's :class:`~exec_runtime._core.sandbox_policy.HostFacts`, for real.

    Globs come expanded beforehand (``SandboxEnforcer.facts_for``, in a worker thread):
    a pattern can walk a whole tree, which must not stall the event loop."""

    def __init__(self, globs: Mapping[str, list[str]] | None = None) -> None:
        self._globs = dict(globs or {})

    def path_from_uri(self, uri: str, field: str) -> str:
        try:
            return path_from_file_uri(uri, field)
        except RpcError as exc:
            raise PolicyError(exc.message) from None

    def exists(self, path: str) -> bool:
        return os.path.lexists(path) and not _guards.held(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def gitdir_of(self, path: str) -> str | None:
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                first = file.readline(4096).strip()
        except OSError:
            return None
        if not first.startswith("gitdir:"):
            return None
        target = first.removeprefix("gitdir:").strip()
        return os.path.normpath(os.path.join(os.path.dirname(path), target))

    def glob(self, pattern: str) -> list[str]:
        if pattern in self._globs:
            return self._globs[pattern]
        return expand_glob(pattern)
