"""Landlock: the fallback where bubblewrap is missing or user namespaces are off.

The daemon builds the ruleset (one rule per granted path) and the forked child only
restricts itself with it, then loads the seccomp program. Landlock grants access
beneath a path and cannot take it back below: a plan that makes a path inside a
granted root *less* accessible (``.git`` read-only in a writable workspace, a denied
directory inside a readable one) is refused, never approximated, and so is a private
network namespace (``allowLocalBinding``), which Landlock has no notion of.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from ..._core.sandbox_policy import ConfinementPlan, is_within
from ._seccomp import LoadableProgram

SYS_CREATE_RULESET: Final = 444  # the same number on every Linux architecture
SYS_ADD_RULE: Final = 445
SYS_RESTRICT_SELF: Final = 446
CREATE_RULESET_VERSION: Final = 1
RULE_PATH_BENEATH: Final = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE = 1 << 13, 1 << 14
FILE_RIGHTS: Final = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE
"""The rights a rule on a file (not a directory) may carry."""
READ_RIGHTS: Final = EXECUTE | READ_FILE | READ_DIR
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

DEVICES_READ_WRITE: Final = (
    "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
    "/dev/tty", "/dev/ptmx", "/dev/pts",
)  # fmt: skip
"""What bubblewrap's fresh /dev offers read-write; granted the same way here."""

_libc = ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI, 0 when Landlock is unavailable (disabled or too old)."""
    version = _libc.syscall(SYS_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION)
    return max(int(version), 0)


def handled_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM: ABI 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    return rights


def why_not_expressible(plan: ConfinementPlan) -> str | None:
    """Why Landlock cannot enforce ``plan`` exactly, or None if it can."""
    if plan.absent:
        names = ", ".join(sorted(plan.absent))
        return f"Landlock cannot keep {names} from being created in a writable root"
    if plan.network == "local":
        return "Landlock cannot give a command a private network (managedNetwork.allowLocalBinding)"
    rank = {"deny": 0, "read": 1, "write": 2}
    for inner in plan.grants:
        for outer in plan.grants:
            if (
                outer.path != inner.path
                and is_within(inner.path, outer.path)
                and rank[inner.access] < rank[outer.access]
            ):
                return (
                    f"Landlock cannot make {inner.path} ({inner.access}) less accessible than "
                    f"{outer.path} ({outer.access}) around it"
                )
    return None


@contextmanager
def ruleset(plan: ConfinementPlan, abi: int) -> Iterator[int]:
    """A ruleset fd for ``plan`` (filesystem rules only when the plan confines files;
    the network is the seccomp program's job). Closed on exit."""
    handled = handled_rights(abi) if plan.confines_files else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    size = 24 if abi >= 6 else 8
    attr = struct.pack("<QQQ", handled, 0, scoped)[:size]
    fd = _libc.syscall(SYS_CREATE_RULESET, attr, size, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        if plan.confines_files:
            write_rights = handled
            for grant in plan.grants:
                if grant.access != "deny":
                    _allow(fd, grant.path, write_rights if grant.access == "write" else READ_RIGHTS)
            if any(g.access != "deny" and is_within("/dev", g.path) for g in plan.grants):
                for device in DEVICES_READ_WRITE:
                    _allow(fd, device, READ_FILE | WRITE_FILE | READ_DIR, missing_ok=True)
        yield fd
    finally:
        os.close(fd)


def _allow(ruleset_fd: int, path: str, rights: int, *, missing_ok: bool = False) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        if not stat.S_ISDIR(os.fstat(target).st_mode):
            rights &= FILE_RIGHTS
        attr = struct.pack("<Qi", rights, target)  # packed: 12 bytes
        if _libc.syscall(SYS_ADD_RULE, ruleset_fd, RULE_PATH_BENEATH, attr, 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
    finally:
        os.close(target)


class Restrictor:
    """The child's part, run between fork and exec: restrict itself with the ruleset,
    then load the seccomp program. Everything is prepared in the parent."""

    def __init__(self, ruleset_fd: int, program: LoadableProgram) -> None:
        self._ruleset_fd = ruleset_fd
        self._program = program

    def __call__(self) -> None:  # pragma: no cover - runs in the forked child
        if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS, needed by both
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _libc.syscall(SYS_RESTRICT_SELF, self._ruleset_fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
        os.close(self._ruleset_fd)
        self._program.load()
