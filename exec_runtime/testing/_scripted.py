"""A scripted child: deterministic, self-checking output with chosen chunking and pauses."""

from __future__ import annotations

import sys
from typing import Final

# Runs in the child. argv: chunks chunk_size pause_s exit_code stderr_every grandchild_s
_SCRIPT: Final = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_DFL)  # die like a C program: no traceback
chunks, size, pause, code, err_every, grandchild = sys.argv[1:7]
chunks, size, pause = int(chunks), int(size), float(pause)
code, err_every = int(code), int(err_every)
grandchild = float(grandchild)
def block(stream, i):
    head = f"<{stream}:{i}:".encode()
    body = bytes((i * 7 + j) % 251 for j in range(max(0, size - len(head) - 1)))
    return head + body + b">"
for i in range(chunks):
    to_err = err_every > 0 and i % err_every == err_every - 1
    fd = 2 if to_err else 1
    data = block("err" if to_err else "out", i)
    while data:
        data = data[os.write(fd, data):]
    if pause:
        time.sleep(pause)
if grandchild > 0 and os.fork() == 0:
    time.sleep(grandchild)
    os.write(1, b"<late>")
    os._exit(0)
os._exit(code)
"""


def scripted_argv(
    *,
    chunks: int = 10,
    chunk_size: int = 100,
    pause: float = 0.0,
    exit_code: int = 0,
    stderr_every: int = 0,
    grandchild_delay: float = 0.0,
) -> list[str]:
    """argv for a child that writes ``chunks`` blocks of ``chunk_size`` bytes.

    Every ``stderr_every``-th block goes to stderr (0: none). With ``grandchild_delay``
    a grandchild keeps stdout open after the exit and writes ``<late>`` at the end.
    ``pause`` seconds pass after each block. SIGINT kills the child like any other
    signal (exit code 130, no Python traceback), so a signalled child's output is
    still a prefix of :func:`expected_output`.
    """
    return [
        sys.executable,
        "-I",  # isolated: ignore PYTHON* variables and the user's site directory
        "-S",  # no site import: the script needs only builtins, and starts ~3x faster
        "-c",
        _SCRIPT,
        str(chunks),
        str(chunk_size),
        repr(pause),
        str(exit_code),
        str(stderr_every),
        repr(grandchild_delay),
    ]


def _block(stream: str, index: int, size: int) -> bytes:
    head = f"<{stream}:{index}:".encode()
    body = bytes((index * 7 + j) % 251 for j in range(max(0, size - len(head) - 1)))
    return head + body + b">"


def expected_output(
    *,
    chunks: int = 10,
    chunk_size: int = 100,
    stderr_every: int = 0,
    grandchild_delay: float = 0.0,
    **_: object,
) -> tuple[bytes, bytes]:
    """The exact (stdout, stderr) that :func:`scripted_argv` with these options writes."""
    out: list[bytes] = []
    err: list[bytes] = []
    for i in range(chunks):
        to_err = stderr_every > 0 and i % stderr_every == stderr_every - 1
        (err if to_err else out).append(_block("err" if to_err else "out", i, chunk_size))
    if grandchild_delay > 0:
        out.append(b"<late>")
    return b"".join(out), b"".join(err)


def check_pattern(stdout: bytes, stderr: bytes, *, prefix: bool = False, **options: object) -> None:
    """Raise AssertionError naming the first differing byte if the output is not exact.

    With ``prefix=True`` the output may stop early (a killed child, or a consumer that
    has not seen everything yet), but every byte it has must be the expected one.
    """
    want_out, want_err = expected_output(**options)  # type: ignore[arg-type]
    for name, got, want in (("stdout", stdout, want_out), ("stderr", stderr, want_err)):
        if got == want or (prefix and want.startswith(got)):
            continue
        at = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )
        raise AssertionError(
            f"{name} differs at byte {at}: got {len(got)} bytes, want "
            f"{'a prefix of ' if prefix else ''}{len(want)}; "
            f"got {got[at : at + 24]!r} want {want[at : at + 24]!r}"
        )
