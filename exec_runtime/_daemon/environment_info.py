"""``environment/info``: facts about the daemon's host."""

from __future__ import annotations

import functools
import os
import platform
import pwd
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata

import protocol_schema as wire

from .._wire.uris import file_uri


@functools.cache
def executor_version() -> str:
    """The installed package's version, read once: ``importlib.metadata`` scans the
    path's distributions on every call (0.9 ms here, half of an ``initialize``), and the
    running code does not change when the installed package does."""
    try:
        return metadata.version("exec-runtime")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0+local"


# The shells a host knows how to quote for; anything else (nologin, fish) is not offered.
_KNOWN_SHELLS = ("bash", "zsh", "sh")


def user_shell(
    login_shell: str | None, which: Callable[[str], str | None] = shutil.which
) -> str:
    """The shell ``environment/info`` names, chosen as Codex chooses it.

    The account's login shell when it is one a host can drive, else ``bash`` then ``sh``
    from ``PATH``. ``$SHELL`` is not consulted: it describes whoever started the daemon,
    is often unset under a service manager, and Codex ignores it too (the differential
    suite found this when CI ran without ``SHELL``).
    """
    if login_shell and os.path.basename(login_shell) in _KNOWN_SHELLS and os.access(
        login_shell, os.X_OK
    ):
        return login_shell
    return which("bash") or which("sh") or "/bin/sh"


def _login_shell() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_shell or None
    except KeyError:  # a uid with no passwd entry (common in containers)
        return None


def environment_info(sandbox_mechanisms: Sequence[str] = ()) -> wire.EnvironmentInfo:
    """``sandbox_mechanisms``: what can enforce a sandbox intent now (PROTOCOL §11)."""
    shell_path = user_shell(_login_shell())
    return wire.EnvironmentInfo(
        shell=wire.ShellInfo(name=os.path.basename(shell_path), path=shell_path),
        executor_version=executor_version(),
        cwd=file_uri(os.getcwd()),  # a file: URI, as Codex sends it
        user_home_dir=os.path.expanduser("~"),
        platform_os=platform.system().lower(),
        temp_dir=tempfile.gettempdir(),
        capabilities={
            "tty": True,
            "ttySize": True,
            "resize": True,
            "closeStdin": True,
            "signals": ["interrupt", "terminate", "kill", "hangup"],
            "earliestRetainedSeq": True,
            "msgpack": True,
            "processAck": True,
            # Codex's members: a sandbox can be enforced now; proxy ports are not bridged.
            "capabilityDiscoverySandbox": bool(sandbox_mechanisms),
            "networkProxyLaunch": False,
            "sandbox": list(sandbox_mechanisms),
        },
    )
