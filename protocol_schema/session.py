"""Handshake and environment methods (PROTOCOL.md §3, §7)."""

from __future__ import annotations

from typing import Literal

from ._base import WireStruct


class InitializeParams(WireStruct):
    client_name: str
    resume_session_id: str | None = None
    process_ack: bool = False
    """**Extension**: this client sends ``process/ack``; the daemon holds unacknowledged
    output (pausing the process when the window is full) instead of evicting it, so
    nothing is lost across a dropped connection."""


class ShellInfo(WireStruct):
    name: str
    path: str


class EnvironmentInfo(WireStruct):
    shell: ShellInfo
    executor_version: str
    cwd: str
    user_home_dir: str
    platform_os: str
    temp_dir: str
    capabilities: dict[str, bool | int | str | list[str]] = {}


class InitializeResult(WireStruct):
    session_id: str
    environment_info: EnvironmentInfo | None = None


class EmptyParams(WireStruct):
    """Parameterless methods accept params absent, null or {}."""


class EmptyResult(WireStruct):
    pass


class EnvironmentStatusResult(WireStruct):
    status: Literal["ready"] = "ready"
