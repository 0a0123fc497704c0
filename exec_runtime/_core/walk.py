"""The pure part of ``fs/walk`` (PROTOCOL.md §8): option checks and the traversal rules.

Nothing here touches the filesystem or imports trio. The caller supplies the directory
listing, either through :func:`walk` (a synchronous driver, used by tests and anything
that may block) or by driving :class:`WalkState` itself, one directory at a time (the
daemon lists each directory in a worker thread).

Rules:

- Breadth-first. Each directory's entries are sorted by name (code point order) and
  appear together, and directories are read in the order their entries were emitted.
- Paths are relative to the root, ``/``-separated. The root is never an entry.
- Depth: the root's children are at depth 0. An entry is emitted when its depth is at
  most ``max_depth``; a directory at depth *d* is descended into only when
  *d* < ``max_depth``. So ``max_depth`` 0 lists the root's children and nothing deeper.
- ``max_directories`` counts the directories read, the root included, and unreadable
  ones too (each read attempt counts). A directory that would be read past the limit
  sets ``truncated`` and ends the walk.
- ``max_entries`` counts the names seen, as Codex 0.147 does: every listed name counts,
  symlinks that are omitted (below) included; a name that would be the
  ``max_entries + 1``-th sets ``truncated`` and ends the walk. Exactly ``max_entries``
  names and nothing more is not truncated. Broken and looping links are not in the
  listing at all (the lister leaves out a link it cannot stat), so they do not count.
- Response budget: each entry costs its path's UTF-8 length + 64 bytes, each error its
  path + message + 64 bytes; an item that would take the total past 4 MiB sets
  ``truncated`` and ends the walk.
- Symlinks are omitted (neither emitted nor descended into) unless
  ``follow_directory_symlinks`` is set and the link resolves to a directory; such a link
  is emitted with kind ``"directory"`` and descended into like one. Symlinks to files,
  broken links and all links when not following are never emitted.
- Every directory is read at most once, keyed by its ``(st_dev, st_ino)`` identity (the
  root's too): a directory reached again (a symlink cycle, a second link to the same
  directory, a bind mount loop) is still emitted but not read again, so cycles end.
- ``prune_hidden_directories``: a directory whose name starts with ``.`` is still
  **emitted** as an entry (like ``find -prune``) but never descended into. Hidden files
  are unaffected; the root is never pruned.
- A directory whose listing fails becomes an ``errors`` item (relative path, message)
  and the walk goes on. Sockets, FIFOs and devices are emitted with kind ``"other"``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Final, Literal

import attrs

__all__ = [
    "ITEM_OVERHEAD",
    "MAX_DEPTH_LIMIT",
    "MAX_DIRECTORIES_LIMIT",
    "MAX_ENTRIES_LIMIT",
    "RESPONSE_BUDGET",
    "DirectoryIdentity",
    "InvalidWalkOptions",
    "ListedEntry",
    "PendingDirectory",
    "WalkEntry",
    "WalkError",
    "WalkKind",
    "WalkLimits",
    "WalkOutcome",
    "WalkState",
    "validate_options",
    "walk",
]

MAX_DEPTH_LIMIT: Final = 64
MAX_DIRECTORIES_LIMIT: Final = 10_000
MAX_ENTRIES_LIMIT: Final = 50_000
RESPONSE_BUDGET: Final = 4 * 1024 * 1024
"""Bytes of paths and messages (plus :data:`ITEM_OVERHEAD` per item) one walk may return."""
ITEM_OVERHEAD: Final = 64

WalkKind = Literal["file", "directory", "symlink", "other"]
DirectoryIdentity = tuple[int, int]
"""``(st_dev, st_ino)`` of a directory."""


class InvalidWalkOptions(ValueError):
    """The options break a limit; the daemon answers -32600 without touching the root."""


@attrs.frozen(slots=True)
class WalkLimits:
    max_depth: int
    max_directories: int
    max_entries: int
    follow_directory_symlinks: bool = False
    prune_hidden_directories: bool = False


def validate_options(
    max_depth: int,
    max_directories: int,
    max_entries: int,
    *,
    follow_directory_symlinks: bool = False,
    prune_hidden_directories: bool = False,
) -> WalkLimits:
    """Check the limits, or raise :class:`InvalidWalkOptions` naming the field.

    ``maxDepth`` may be 0 (children of the root only), up to 64. ``maxDirectories``
    must be 1..10,000 and ``maxEntries`` 1..50,000.
    """
    if not 0 <= max_depth <= MAX_DEPTH_LIMIT:
        raise InvalidWalkOptions(
            f"fs/walk options.maxDepth must be between 0 and {MAX_DEPTH_LIMIT}, got {max_depth}"
        )
    if not 1 <= max_directories <= MAX_DIRECTORIES_LIMIT:
        raise InvalidWalkOptions(
            "fs/walk options.maxDirectories must be between 1 and "
            f"{MAX_DIRECTORIES_LIMIT}, got {max_directories}"
        )
    if not 1 <= max_entries <= MAX_ENTRIES_LIMIT:
        raise InvalidWalkOptions(
            "fs/walk options.maxEntries must be between 1 and "
            f"{MAX_ENTRIES_LIMIT}, got {max_entries}"
        )
    return WalkLimits(
        max_depth=max_depth,
        max_directories=max_directories,
        max_entries=max_entries,
        follow_directory_symlinks=follow_directory_symlinks,
        prune_hidden_directories=prune_hidden_directories,
    )


@attrs.frozen(slots=True)
class ListedEntry:
    """One name in a directory listing, as the injected listing function reports it.

    ``kind`` comes from lstat (never follows). For a symlink, ``target_is_directory``
    says whether it resolves to a directory; a symlink that does not resolve (broken,
    looping) is left out of the listing. ``identity`` is the ``(st_dev, st_ino)`` of
    the directory the entry is or points to; ``None`` means unknown (then the entry is
    never treated as visited).
    """

    name: str
    kind: WalkKind
    target_is_directory: bool = False
    identity: DirectoryIdentity | None = None


@attrs.frozen(slots=True)
class PendingDirectory:
    """A directory to read: ``path`` relative to the root (``""`` is the root itself)."""

    path: str
    depth: int
    """The depth of this directory's entries (0 for the root's children)."""


@attrs.frozen(slots=True)
class WalkEntry:
    path: str
    kind: WalkKind


@attrs.frozen(slots=True)
class WalkError:
    path: str
    message: str


@attrs.define(slots=True)
class WalkOutcome:
    entries: list[WalkEntry] = attrs.Factory(list)
    errors: list[WalkError] = attrs.Factory(list)
    truncated: bool = False


def _cost(*texts: str) -> int:
    return ITEM_OVERHEAD + sum(len(text.encode("utf-8", "surrogateescape")) for text in texts)


class WalkState:
    """The breadth-first traversal as a state machine.

    Loop: ``directory = state.next_directory()``; when it is ``None`` the walk is over
    and :meth:`outcome` holds the result. Otherwise list that directory (at most
    :meth:`entry_limit` names are useful; returning more is fine) and hand the listing
    to :meth:`add_listing`, or the failure to :meth:`add_error`.
    """

    def __init__(
        self,
        limits: WalkLimits,
        root_identity: DirectoryIdentity | None = None,
        *,
        budget: int = RESPONSE_BUDGET,
        path_prefix: int = 0,
    ) -> None:
        """``path_prefix``: bytes the caller adds to each path it sends (the daemon sends
        absolute URIs); counted against ``budget`` with each item."""
        self._limits = limits
        self._budget_left = budget
        self._path_prefix = path_prefix
        self._queue: deque[PendingDirectory] = deque([PendingDirectory("", 0)])
        self._visited: set[DirectoryIdentity] = set()
        if root_identity is not None:
            self._visited.add(root_identity)
        self._directories_read = 0
        self._names_counted = 0  # against max_entries: emitted or omitted
        self._outstanding: PendingDirectory | None = None
        self._done = False
        self._outcome = WalkOutcome()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def directories_read(self) -> int:
        return self._directories_read

    def outcome(self) -> WalkOutcome:
        return self._outcome

    def next_directory(self) -> PendingDirectory | None:
        """The next directory to read, or ``None`` when the walk is finished."""
        if self._outstanding is not None:
            raise RuntimeError("the previous directory has not been reported yet")
        if self._done:
            return None
        if not self._queue:
            self._done = True
            return None
        if self._directories_read >= self._limits.max_directories:
            self._stop_truncated()
            return None
        self._directories_read += 1
        self._outstanding = self._queue.popleft()
        return self._outstanding

    def entry_limit(self) -> int:
        """How many names of the next listing can matter: the smallest, by name.

        Every name counts against ``max_entries``, an omitted symlink too, so a lister
        may trim its listing to this many names, once it has left out the symlinks that
        do not resolve (which do not count).
        """
        return self._limits.max_entries - self._names_counted + 1

    def add_listing(self, directory: PendingDirectory, listing: Iterable[ListedEntry]) -> None:
        self._take(directory)
        limits = self._limits
        entries = self._outcome.entries
        for item in sorted(listing, key=lambda e: e.name):
            if self._names_counted >= limits.max_entries:
                self._stop_truncated()
                return
            self._names_counted += 1
            if item.kind == "symlink":
                if not (limits.follow_directory_symlinks and item.target_is_directory):
                    continue
                is_directory = True
            else:
                is_directory = item.kind == "directory"
            path = f"{directory.path}/{item.name}" if directory.path else item.name
            cost = _cost(path) + self._path_prefix
            if not self._spend(cost):
                self._stop_truncated()
                return
            entries.append(WalkEntry(path, "directory" if is_directory else item.kind))
            if not is_directory or directory.depth >= limits.max_depth:
                continue
            if limits.prune_hidden_directories and item.name.startswith("."):
                continue
            if item.identity is not None:
                if item.identity in self._visited:
                    continue
                self._visited.add(item.identity)
            self._queue.append(PendingDirectory(path, directory.depth + 1))

    def add_error(self, directory: PendingDirectory, message: str) -> None:
        self._take(directory)
        path = directory.path or "."
        if not self._spend(_cost(path, message) + self._path_prefix):
            self._stop_truncated()
            return
        self._outcome.errors.append(WalkError(path, message))

    def _take(self, directory: PendingDirectory) -> None:
        if self._outstanding is None or directory != self._outstanding:
            raise RuntimeError(f"directory {directory.path!r} was not the one handed out")
        self._outstanding = None

    def _spend(self, cost: int) -> bool:
        if cost > self._budget_left:
            return False
        self._budget_left -= cost
        return True

    def _stop_truncated(self) -> None:
        self._outcome.truncated = True
        self._done = True
        self._queue.clear()


ListDirectory = Callable[[PendingDirectory, int], Iterable[ListedEntry]]
"""``(directory, entry_limit) -> listing``; raises :class:`OSError` when unreadable.

See :meth:`WalkState.entry_limit` for the one rule a trimming lister must follow.
"""


def walk(
    limits: WalkLimits,
    list_directory: ListDirectory,
    root_identity: DirectoryIdentity | None = None,
    *,
    budget: int = RESPONSE_BUDGET,
) -> WalkOutcome:
    """Run a whole walk synchronously with an injected listing function.

    An :class:`OSError` from ``list_directory`` becomes an ``errors`` item (for the root
    too, with path ``"."``; the daemon handles a failing root itself).
    """
    state = WalkState(limits, root_identity, budget=budget)
    while (directory := state.next_directory()) is not None:
        try:
            listing = list(list_directory(directory, state.entry_limit()))
        except OSError as exc:
            state.add_error(directory, f"cannot read directory: {exc.strerror or exc}")
        else:
            state.add_listing(directory, listing)
    return state.outcome()
