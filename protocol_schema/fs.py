"""Filesystem methods (PROTOCOL.md §8)."""

from __future__ import annotations

from typing import Literal

import msgspec

from ._base import WireStruct
from .sandbox import SandboxIntent

__all__ = [
    "FsCanonicalizeParams",
    "FsCanonicalizeResult",
    "FsCloseParams",
    "FsCopyParams",
    "FsCreateDirectoryParams",
    "FsDirectoryEntry",
    "FsGetMetadataParams",
    "FsMetadata",
    "FsOpenParams",
    "FsOpenResult",
    "FsParams",
    "FsReadBlockParams",
    "FsReadBlockResult",
    "FsReadDirectoryParams",
    "FsReadDirectoryResult",
    "FsReadFileParams",
    "FsReadFileResult",
    "FsRemoveParams",
    "FsWalkEntry",
    "FsWalkError",
    "FsWalkOptions",
    "FsWalkParams",
    "FsWalkResult",
    "FsWriteFileParams",
    "WalkKind",
]


class FsParams(WireStruct):
    """Every ``fs/*`` request may carry a sandbox intent (PROTOCOL §8, §11): the
    operation must then stay within what that sandbox grants."""

    sandbox: SandboxIntent | msgspec.UnsetType | None = msgspec.UNSET

    @property
    def sandbox_value(self) -> SandboxIntent | None:
        return self.sandbox if isinstance(self.sandbox, SandboxIntent) else None


class FsReadFileParams(FsParams, kw_only=True):
    path: str
    follow_symlinks: bool = True


class FsReadFileResult(WireStruct, omit_defaults=False):
    data_base64: str


class FsWriteFileParams(FsParams, kw_only=True):
    path: str
    data_base64: str
    follow_symlinks: bool = True


class FsCreateDirectoryParams(FsParams, kw_only=True):
    path: str
    recursive: bool = True


class FsGetMetadataParams(FsParams, kw_only=True):
    path: str
    follow_symlinks: bool = True


class FsMetadata(WireStruct, omit_defaults=False):
    is_directory: bool
    is_file: bool
    is_symlink: bool
    size: int
    created_at_ms: int
    modified_at_ms: int


class FsCanonicalizeParams(FsParams, kw_only=True):
    path: str


class FsCanonicalizeResult(WireStruct, omit_defaults=False):
    path: str


class FsReadDirectoryParams(FsParams, kw_only=True):
    path: str


class FsDirectoryEntry(WireStruct, omit_defaults=False):
    file_name: str
    is_directory: bool
    is_file: bool


class FsReadDirectoryResult(WireStruct, omit_defaults=False):
    entries: list[FsDirectoryEntry]


class FsWalkOptions(WireStruct, omit_defaults=False):
    """Always sent in full: Codex requires ``followDirectorySymlinks`` (PROTOCOL §10)."""

    max_depth: int
    max_directories: int
    max_entries: int
    follow_directory_symlinks: bool = False
    prune_hidden_directories: bool = False


class FsWalkParams(FsParams, kw_only=True):
    path: str
    options: FsWalkOptions


WalkKind = Literal["file", "directory", "symlink", "other"]


class FsWalkEntry(WireStruct, omit_defaults=False):
    path: str
    kind: WalkKind


class FsWalkError(WireStruct, omit_defaults=False):
    path: str
    message: str


class FsWalkResult(WireStruct, omit_defaults=False):
    entries: list[FsWalkEntry]
    errors: list[FsWalkError]
    truncated: bool


# The defaults are the wire's (Codex's ``rm -rf``); both flags are always sent, so the
# client's safer defaults (``os.remove``/``rmdir``) never rest on a peer's defaults.
class FsRemoveParams(FsParams, omit_defaults=False, kw_only=True):
    path: str
    recursive: bool = True
    force: bool = True


class FsCopyParams(FsParams, omit_defaults=False, kw_only=True):
    """``recursive`` is required by the protocol, so it is always sent."""

    source_path: str
    destination_path: str
    recursive: bool = False


class FsOpenParams(FsParams, kw_only=True):
    handle_id: str
    path: str


class FsOpenResult(WireStruct, omit_defaults=False):
    handle_id: str


class FsReadBlockParams(FsParams, kw_only=True):
    handle_id: str
    offset: int
    len: int


class FsReadBlockResult(WireStruct, omit_defaults=False):
    chunk: bytes
    eof: bool


class FsCloseParams(FsParams, kw_only=True):
    handle_id: str
