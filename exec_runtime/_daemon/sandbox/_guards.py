"""Mount points for guards: the empty read-only directories bwrap puts where an absent
``.codex`` or ``.agents`` would be created (``ConfinementPlan.absent``).

bwrap needs the mount point to exist, inside a writable bind, so on the host. We make
it (an empty directory) before the spawn and remove it once the last sandboxed process
that guards it is reaped: removing a directory that another running sandbox still has
a mount on would lift that sandbox's guard (the kernel detaches it). Only directories
we made are removed, and only while empty (``rmdir``).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable

_lock = threading.Lock()  # more than one trio run (daemon) may spawn in this process
_users: Counter[str] = Counter()
_made: set[str] = set()


def held(path: str) -> bool:
    """A guard's mount point of ours, in use: for the compiler the name is still
    absent (a second sandbox must take the guard too, not bind what the first made)."""
    with _lock:
        return _users[path] > 0


def acquire(paths: Iterable[str]) -> list[str]:
    """Make sure each mount point exists; returns what to pass to :func:`release`."""
    taken: list[str] = []
    with _lock:
        try:
            for path in paths:
                if not _users[path]:
                    try:
                        os.mkdir(path, 0o555)
                        _made.add(path)
                    except FileExistsError:
                        pass  # made meanwhile: bwrap mounts over whatever is there
                _users[path] += 1
                taken.append(path)
        except BaseException:
            _release_locked(taken)
            raise
    return taken


def release(paths: Iterable[str]) -> None:
    with _lock:
        _release_locked(paths)


def _release_locked(paths: Iterable[str]) -> None:
    for path in paths:
        _users[path] -= 1
        if _users[path] > 0:
            continue
        del _users[path]
        if path in _made:
            _made.discard(path)
            try:
                os.rmdir(path)
            except OSError:
                pass  # not empty (the host put something there), or gone
