"""The sandbox intent a host sends with ``process/start`` and ``fs/*`` (PROTOCOL.md §11).

The outer intent is camelCase like every other wire struct; the permission profile
inside it is snake_case and tagged by ``type``, exactly as Codex sends it. Decoding
checks only the shape: the daemon's policy compiler (``exec_runtime._core.sandbox_policy``)
checks meaning (absolute paths, subpaths without ``..``) and answers -32602 naming the field.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ._base import WireStruct

__all__ = [
    "FileSystemAccess",
    "FileSystemEntry",
    "FileSystemGlob",
    "FileSystemPath",
    "FileSystemPathEntry",
    "FileSystemPolicy",
    "FileSystemRestricted",
    "FileSystemSpecial",
    "FileSystemUnrestricted",
    "ManagedNetwork",
    "NetworkMode",
    "PermissionProfile",
    "ProfileDisabled",
    "ProfileExternal",
    "ProfileManaged",
    "SandboxIntent",
    "SandboxType",
    "SpecialKind",
    "SpecialPath",
    "WindowsSandboxLevel",
]

NetworkMode = Literal["restricted", "enabled"]
FileSystemAccess = Literal["read", "write", "deny", "none"]
"""``none`` is the old spelling of ``deny``."""
WindowsSandboxLevel = Literal["disabled", "restricted-token", "elevated"]
SandboxType = Literal["none", "linuxSeccomp"]
"""What ``process/start`` answers: ``linuxSeccomp`` whenever the daemon enforced a
sandbox on Linux, whichever mechanism (bubblewrap or Landlock) did it (Codex's name)."""


class _Snake(msgspec.Struct, omit_defaults=True, kw_only=True, tag_field="type"):
    """Profile members keep their snake_case names on the wire (as Codex sends them)."""


SpecialKind = Literal[
    "root",
    "minimal",
    "project_roots",
    "current_working_directory",
    "tmpdir",
    "slash_tmp",
    "unknown",
]
"""``current_working_directory`` is the old spelling of ``project_roots``; ``unknown``
(a kind the sender did not know, with its ``path``) grants nothing. Any other kind is
refused, as Codex refuses it."""


class SpecialPath(msgspec.Struct, omit_defaults=True, kw_only=True):
    """``path`` travels with ``unknown``."""

    kind: SpecialKind
    subpath: str | None = None
    path: str | None = None


class FileSystemPathEntry(_Snake, tag="path"):
    path: str


class FileSystemGlob(_Snake, tag="glob_pattern"):
    pattern: str


class FileSystemSpecial(_Snake, tag="special"):
    value: SpecialPath


FileSystemPath = FileSystemPathEntry | FileSystemGlob | FileSystemSpecial


class FileSystemEntry(msgspec.Struct, omit_defaults=True, kw_only=True):
    path: FileSystemPath
    access: FileSystemAccess


class FileSystemUnrestricted(_Snake, tag="unrestricted"):
    pass


class FileSystemRestricted(_Snake, tag="restricted"):
    entries: list[FileSystemEntry] = []


FileSystemPolicy = FileSystemUnrestricted | FileSystemRestricted


class ProfileDisabled(_Snake, tag="disabled"):
    """No confinement: the same as sending no ``sandbox``."""


class ProfileExternal(_Snake, tag="external"):
    """The host confines the command itself; the daemon applies only the network rule."""

    network: NetworkMode


class ProfileManaged(_Snake, tag="managed"):
    """``network`` is required, as Codex requires it."""

    file_system: FileSystemPolicy
    network: NetworkMode


PermissionProfile = ProfileDisabled | ProfileExternal | ProfileManaged


class SandboxIntent(WireStruct, omit_defaults=False):
    """``windowsSandboxLevel`` means nothing on Linux but is required, as Codex
    requires it."""

    permissions: PermissionProfile
    windows_sandbox_level: WindowsSandboxLevel
    cwd: str | msgspec.UnsetType | None = msgspec.UNSET
    workspace_roots: list[str] | msgspec.UnsetType | None = msgspec.UNSET
    windows_sandbox_private_desktop: bool | msgspec.UnsetType | None = msgspec.UNSET
    use_legacy_landlock: bool | msgspec.UnsetType | None = msgspec.UNSET

    @property
    def cwd_value(self) -> str | None:
        return self.cwd if isinstance(self.cwd, str) else None

    @property
    def workspace_roots_value(self) -> list[str] | None:
        return self.workspace_roots if isinstance(self.workspace_roots, list) else None

    @property
    def use_legacy_landlock_value(self) -> bool:
        return self.use_legacy_landlock is True


class ManagedNetwork(WireStruct):
    loopback_ports: list[int] = []
    allow_local_binding: bool = False
