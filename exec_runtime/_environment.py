"""``environment/info``: facts about the daemon's host."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from importlib import metadata

import protocol_schema as wire

from ._paths import file_uri


def executor_version() -> str:
    try:
        return metadata.version("exec-runtime")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0+local"


def environment_info(sandbox_mechanisms: Sequence[str] = ()) -> wire.EnvironmentInfo:
    """``sandbox_mechanisms``: what can enforce a sandbox intent now (PROTOCOL §11)."""
    shell_path = os.environ.get("SHELL") or shutil.which("sh") or "/bin/sh"
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
