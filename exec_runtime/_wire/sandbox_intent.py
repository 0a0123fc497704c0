"""The public sandbox builder: what a host asks the daemon to enforce (PROTOCOL §11).

Used by the client (``run(..., sandbox=...)``, ``fs`` calls) and by the daemon for
``--default-sandbox``. It only builds the wire intent; the daemon enforces it or
refuses the request.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import msgspec

from protocol_schema import sandbox as wire

from .uris import uri_for_remote


def _special(kind: wire.SpecialKind, access: wire.FileSystemAccess) -> wire.FileSystemEntry:
    return wire.FileSystemEntry(
        path=wire.FileSystemSpecial(value=wire.SpecialPath(kind=kind)), access=access
    )


def _path(path: str | os.PathLike[str], access: wire.FileSystemAccess) -> wire.FileSystemEntry:
    return wire.FileSystemEntry(
        path=wire.FileSystemPathEntry(path=uri_for_remote(path)), access=access
    )


@attrs.frozen
class Sandbox:
    """A sandbox intent. Build one with :meth:`read_only` or :meth:`workspace_write`,
    or from the raw Codex dict with :meth:`from_dict`.

    Paths are paths on the daemon's host and must be absolute there.
    """

    intent: wire.SandboxIntent

    @classmethod
    def read_only(cls, *, network: bool = False) -> Sandbox:
        """Everything readable, nothing writable; no network unless ``network``."""
        return cls._managed([_special("root", "read")], network, roots=())

    @classmethod
    def workspace_write(
        cls,
        roots: Iterable[str | os.PathLike[str]] = (),
        *,
        network: bool = False,
        writable: Iterable[str | os.PathLike[str]] = (),
        writable_tmp: bool = True,
    ) -> Sandbox:
        """Everything readable; the workspace ``roots`` (default: the command's cwd),
        ``writable`` and, with ``writable_tmp``, ``/tmp`` and ``$TMPDIR`` writable.
        ``.git``, ``.codex`` and ``.agents`` in a root stay read-only."""
        entries = [_special("root", "read"), _special("project_roots", "write")]
        if writable_tmp:
            entries += [_special("slash_tmp", "write"), _special("tmpdir", "write")]
        entries += [_path(path, "write") for path in writable]
        return cls._managed(entries, network, roots=tuple(roots))

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Sandbox:
        """The intent as Codex sends it (camelCase outside, snake_case profile)."""
        try:
            return cls(msgspec.convert(dict(value), wire.SandboxIntent))
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid sandbox intent: {exc}") from None

    @classmethod
    def _managed(
        cls,
        entries: list[wire.FileSystemEntry],
        network: bool,
        roots: tuple[str | os.PathLike[str], ...],
    ) -> Sandbox:
        profile = wire.ProfileManaged(
            file_system=wire.FileSystemRestricted(entries=entries),
            network="enabled" if network else "restricted",
        )
        intent = wire.SandboxIntent(permissions=profile, windows_sandbox_level="disabled")
        if roots:
            intent = msgspec.structs.replace(
                intent, workspace_roots=[uri_for_remote(root) for root in roots]
            )
        return cls(intent)

    def with_legacy_landlock(self) -> Sandbox:
        """Prefer the Landlock mechanism over bubblewrap (``useLegacyLandlock``)."""
        return Sandbox(msgspec.structs.replace(self.intent, use_legacy_landlock=True))

    def to_dict(self) -> dict[str, Any]:
        """The wire form (what :meth:`from_dict` reads)."""
        result: dict[str, Any] = msgspec.to_builtins(self.intent)
        return result


def sandbox_intent(
    value: Sandbox | wire.SandboxIntent | Mapping[str, Any] | None,
) -> wire.SandboxIntent | None:
    """What a ``sandbox=`` argument means on the wire."""
    if value is None:
        return None
    if isinstance(value, Sandbox):
        return value.intent
    if isinstance(value, wire.SandboxIntent):
        return value
    if isinstance(value, Mapping):
        return Sandbox.from_dict(value).intent
    raise TypeError(
        f"sandbox must be a Sandbox, a SandboxIntent or a dict, not {type(value).__name__}"
    )
