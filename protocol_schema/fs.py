"""Filesystem methods (PROTOCOL.md §8)."""

from __future__ import annotations

from typing import Literal

from ._base import WireStruct

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


class FsReadFileParams(WireStruct):
    path: str
    follow_symlinks: bool = True


class FsReadFileResult(WireStruct, omit_defaults=False):
    data_base64: str


class FsWriteFileParams(WireStruct):
    path: str
    data_base64: str
    follow_symlinks: bool = True


class FsCreateDirectoryParams(WireStruct):
    path: str
    recursive: bool = True


class FsGetMetadataParams(WireStruct):
    path: str
    follow_symlinks: bool = True


class FsMetadata(WireStruct, omit_defaults=False):
    is_directory: bool
    is_file: bool
    is_symlink: bool
    size: int
    created_at_ms: int
    modified_at_ms: int


class FsCanonicalizeParams(WireStruct):
    path: str


class FsCanonicalizeResult(WireStruct, omit_defaults=False):
    path: str


class FsReadDirectoryParams(WireStruct):
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


class FsWalkParams(WireStruct):
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


class FsRemoveParams(WireStruct):
    path: str
    recursive: bool = True
    force: bool = True


class FsCopyParams(WireStruct, omit_defaults=False):
    """``recursive`` is required by the protocol, so it is always sent."""

    source_path: str
    destination_path: str
    recursive: bool = False


class FsOpenParams(WireStruct):
    handle_id: str
    path: str


class FsOpenResult(WireStruct, omit_defaults=False):
    handle_id: str


class FsReadBlockParams(WireStruct):
    handle_id: str
    offset: int
    len: int


class FsReadBlockResult(WireStruct, omit_defaults=False):
    chunk: bytes
    eof: bool


class FsCloseParams(WireStruct):
    handle_id: str
