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
    """``shell``, ``cwd`` and ``capabilities`` are Codex's; the rest are our extensions,
    absent from Codex 0.147's answer (so optional here: the client decodes either)."""

    shell: ShellInfo
    cwd: str
    capabilities: dict[str, bool | int | str | list[str]] = {}
    executor_version: str | None = None
    user_home_dir: str | None = None
    platform_os: str | None = None
    temp_dir: str | None = None


class InitializeResult(WireStruct):
    session_id: str
    environment_info: EnvironmentInfo | None = None


class EmptyParams(WireStruct):
    """Parameterless methods accept params absent, null or {}."""


class EmptyResult(WireStruct):
    pass


class EnvironmentStatusResult(WireStruct):
    status: Literal["ready"] = "ready"
