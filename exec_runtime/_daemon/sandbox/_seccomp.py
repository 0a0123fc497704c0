"""The seccomp filters, compiled once per daemon to classic BPF by libseccomp.

Two programs: ``base`` refuses ``ptrace`` and ``io_uring_*`` (io_uring runs I/O that
other filters do not see); ``no_network`` also refuses every socket that is not
``AF_UNIX``. Refused calls fail with EPERM, which a command reports as "Operation not
permitted" (a ``sandboxDenied`` keyword). System calls of another architecture (32-bit
on x86-64) kill the process: libseccomp's default for a foreign architecture.

The same bytes go to bubblewrap on a file descriptor (``--seccomp FD``) or are loaded
in the child with ``prctl`` (the Landlock mechanism): no interpreter starts per process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import tempfile

import attrs

NETWORK_SYSCALLS_CHECKED = ("socket", "socketpair")
ALWAYS_REFUSED = ("ptrace", "io_uring_setup", "io_uring_enter", "io_uring_register")


@attrs.frozen
class SeccompPrograms:
    base: bytes
    no_network: bytes

    def for_network(self, network: str) -> bytes:
        return self.no_network if network == "restricted" else self.base


def compile_programs() -> SeccompPrograms:
    """Raises OSError (or ImportError) when libseccomp cannot be loaded."""
    return SeccompPrograms(
        base=_compile(block_network=False), no_network=_compile(block_network=True)
    )


def _compile(*, block_network: bool) -> bytes:
    import pyseccomp as seccomp  # type: ignore[import-untyped]  # libseccomp via ctypes

    refuse = seccomp.ERRNO(errno.EPERM)
    program = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in ALWAYS_REFUSED:
        program.add_rule(refuse, name)
    if block_network:
        for name in NETWORK_SYSCALLS_CHECKED:
            program.add_rule(refuse, name, seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    with tempfile.TemporaryFile() as out:
        program.export_bpf(out)
        out.seek(0)
        return out.read()


def program_fd(program: bytes) -> int:
    """A memfd holding ``program``, positioned at its start: bwrap reads it to the end."""
    fd = os.memfd_create("exec-runtime-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class LoadableProgram:
    """A program laid out for ``prctl(PR_SET_SECCOMP)``, built in the parent so the
    forked child only makes the call."""

    def __init__(self, program: bytes) -> None:
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._fprog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))
        self._libc = ctypes.CDLL(None, use_errno=True)

    def load(self) -> None:  # pragma: no cover - runs in the forked child
        if self._libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._fprog), 0, 0):
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
