"""What the OS does to an unprivileged user, checked even when the suite runs as root.

CI runs as root, which reads a ``chmod 000`` directory. A test that needs the denial
runs the file operation itself as ``nobody`` (``setpriv``), and gives the code under
test the error the OS gave that user. The package is not imported as ``nobody``: the
venv's interpreter lives under ``/root``, which ``nobody`` cannot read; ``ls`` runs
instead.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
IS_ROOT = os.geteuid() == 0


@contextmanager
def world_traversable_dir() -> Iterator[Path]:
    """A fresh directory that ``nobody`` can reach (pytest's ``tmp_path`` is under a
    0700 directory of root's, which would deny ``nobody`` for the wrong reason)."""
    path = Path(tempfile.mkdtemp(prefix="exec-runtime-nobody-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        for parent, dirs, _files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(parent, name), 0o755)
        shutil.rmtree(path)


def listing_error_as_nobody(path: Path) -> OSError | None:
    """List ``path`` as ``nobody``: the error the OS gave (EACCES as a PermissionError),
    or None if it could list it."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run this case as nobody")
    done = subprocess.run(
        [*NOBODY, "ls", "-A", str(path)], capture_output=True, text=True, timeout=30
    )
    if done.returncode == 0:
        return None
    assert "Permission denied" in done.stderr, done.stderr
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def deny_as_the_os_denies_nobody(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, denied: Path
) -> None:
    """As root: check as ``nobody`` that the OS refuses to list ``denied`` (and lists
    its parent), then make ``module.name(path, ...)`` raise that same error for it."""
    assert listing_error_as_nobody(denied.parent) is None, "nobody cannot reach the parent"
    error = listing_error_as_nobody(denied)
    assert error is not None, f"nobody could list {denied} (mode 000)"
    real: Callable[..., Any] = getattr(module, name)

    def as_nobody(path: str, *args: Any, **kwargs: Any) -> Any:
        if os.path.realpath(path) == os.path.realpath(denied):
            raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, as_nobody)
