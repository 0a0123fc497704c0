"""``client.fs``: the filesystem methods on the daemon's host (PROTOCOL.md §8).

Paths
    Every ``path`` argument is a ``str`` or an ``os.PathLike[str]`` naming a file **on
    the daemon's host**, and travels as a ``file:`` URI:

    - an absolute path becomes ``file://`` + its percent-encoded text;
    - a ``str`` that already has a URI scheme (``file:///tmp/x``, ``http://h/x``) is sent
      unchanged;
    - a relative path, or a relative ``file:`` URI (``file:tmp``), is refused by the
      client, ``ProtocolError`` -32602 naming the field, and never sent: Codex 0.147
      would read ``file:tmp`` as ``/tmp``. The client never resolves it against its own
      working directory (the daemon's host may be another machine).

    The daemon judges the rest: a non-``file:`` URI or one naming another host is
    answered with ``ProtocolError`` -32602 (its message names the field).

Errors
    Every method raises :class:`~exec_runtime.ProtocolError` for a JSON-RPC error:
    -32004 not found, -32600 invalid input / permission denied / limits, -32602 bad
    params, -32603 any other OS error (EEXIST, EISDIR, ENOTDIR, ENOTEMPTY, ...), as Codex
    0.147 answers. An OS error is raised as the matching ``OSError`` subclass too
    (``RemoteFileExistsError``, ...), from the error's ``data`` or, from Codex, its
    message. A connection that drops while a mutating call (write, create, remove, copy,
    open, close) is in flight raises ``TransportError`` (the outcome is unknown); reads
    are retried on the recovered connection.

Handles
    :meth:`FsClient.open_read` reads through a daemon-side handle. Handles belong to one
    connection: the daemon closes them when it ends, so a reconnect in the middle of a
    read makes the next block fail with -32004 (unknown file read handle); the file is not silently
    reopened (it may have been replaced since).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeAlias, TypeVar
from urllib.parse import quote, unquote_to_bytes, urlsplit

import trio

from protocol_schema import EmptyResult
from protocol_schema import errors as codes
from protocol_schema.fs import (
    FsCanonicalizeParams,
    FsCanonicalizeResult,
    FsCloseParams,
    FsCopyParams,
    FsCreateDirectoryParams,
    FsDirectoryEntry,
    FsGetMetadataParams,
    FsMetadata,
    FsOpenParams,
    FsOpenResult,
    FsParams,
    FsReadBlockParams,
    FsReadBlockResult,
    FsReadDirectoryParams,
    FsReadDirectoryResult,
    FsReadFileParams,
    FsReadFileResult,
    FsRemoveParams,
    FsWalkEntry,
    FsWalkError,
    FsWalkOptions,
    FsWalkParams,
    FsWalkResult,
    FsWriteFileParams,
)
from protocol_schema.sandbox import SandboxIntent

from .._errors import ExecRuntimeError, ProtocolError, os_error_from
from .._wire.sandbox_intent import Sandbox, sandbox_intent
from .args import check_bool, check_bytes, check_int

if TYPE_CHECKING:
    from .link import Calls

__all__ = [
    "BLOCK_SIZE",
    "CLOSE_TIMEOUT",
    "WALK_MAX_DEPTH",
    "WALK_MAX_DIRECTORIES",
    "WALK_MAX_ENTRIES",
    "BlockReader",
    "FsClient",
    "StrPath",
]

log = logging.getLogger("exec_runtime.client.fs")

StrPath: TypeAlias = "str | os.PathLike[str]"
"""A path on the daemon's host, or a ``file:`` URI string."""

BLOCK_SIZE: Final = 1024 * 1024
"""The ``len`` of every ``fs/readBlock`` :meth:`FsClient.open_read` sends (the maximum)."""
CLOSE_TIMEOUT: Final = 2.0
"""How long a cancelled or failing :class:`BlockReader` waits for ``fs/close``."""
WALK_MAX_DEPTH: Final = 64
""":meth:`FsClient.walk`'s default ``max_depth``: the protocol's maximum."""
WALK_MAX_DIRECTORIES: Final = 10_000
""":meth:`FsClient.walk`'s default ``max_directories``: the protocol's maximum."""
WALK_MAX_ENTRIES: Final = 50_000
""":meth:`FsClient.walk`'s default ``max_entries``: the protocol's maximum."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")


def _to_uri(path: StrPath, field: str = "path") -> str:
    """The wire form of a path argument (see the module docstring)."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"expected a str path or os.PathLike[str], got {type(text).__name__}")
    if isinstance(path, str) and _SCHEME.match(text):
        if text[:5].lower() == "file:" and not text[5:].startswith("/"):
            raise _relative(field, text)
        return text  # a URI: the daemon checks it is a local file: URI
    # Quoted as bytes: a name that is not UTF-8 (a str with surrogate escapes, as
    # os.fsdecode gives it) travels as %XX escapes of its bytes.
    if text.startswith("/"):
        return "file://" + quote(os.fsencode(text))
    raise _relative(field, text)


def _relative(field: str, text: str) -> ProtocolError:
    # Not sent: our daemon refuses a relative file: URI (-32602), but Codex 0.147 parses
    # ``file:tmp`` as ``file:///tmp``, so the same call would act on another file there.
    return ProtocolError(
        codes.INVALID_PARAMS,
        f"{field} {text!r} is relative: a path on the daemon's host must be absolute",
    )


def _from_uri(uri: str, method: str) -> str:
    """A native path from a ``file:`` URI the daemon returned."""
    parts = urlsplit(uri)
    path = os.fsdecode(unquote_to_bytes(parts.path))  # %FF: the byte, as the daemon meant
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not path.startswith("/"):
        raise ProtocolError(
            codes.INTERNAL_ERROR, f"bad {method} result from the daemon: {uri!r} is not a file URI"
        )
    return path


SandboxArg = Sandbox | SandboxIntent | Mapping[str, Any] | None
P = TypeVar("P", bound=FsParams)
T = TypeVar("T")


def _sandboxed(params: P, sandbox: SandboxArg) -> P:
    if (intent := sandbox_intent(sandbox)) is not None:
        params.sandbox = intent
    return params


class FsClient:
    """The filesystem of the daemon's host. Reach it as ``client.fs``.

    Results are the wire structs of :mod:`protocol_schema.fs` (``msgspec`` structs with
    snake_case attributes), except where a method says otherwise.

    Every path method takes ``sandbox=`` (a :class:`~exec_runtime.Sandbox` or the raw
    Codex dict): the daemon then does only what that sandbox allows (-32600
    otherwise). Streaming reads (:meth:`open_read`) cannot be sandboxed.
    """

    def __init__(self, calls: Calls) -> None:
        self._calls = calls  # the client's (or the pool's router): see ``link.py``

    async def _call(self, method: str, params: Any, result_type: type[T]) -> T:
        """A call whose OS errors are raised as such (``RemoteFileNotFoundError``, a
        ``FileNotFoundError`` and a ``ProtocolError``, ...)."""
        try:
            return await self._calls.call(method, params, result_type)
        except ProtocolError as exc:
            mapped = os_error_from(exc)
            if mapped is exc:
                raise
            raise mapped from None

    # -- whole files -----------------------------------------------------------------

    async def read_file(self, path: StrPath, *, sandbox: SandboxArg = None) -> bytes:
        """The whole content of a regular file (symlinks followed).

        A non-regular file (directory, FIFO, device) is -32600 ``path <p> is not a
        file``; the daemon refuses files above 32 MiB (-32600): use :meth:`open_read`.
        """
        result = await self._call(
            "fs/readFile",
            _sandboxed(FsReadFileParams(path=_to_uri(path)), sandbox),
            FsReadFileResult,
        )
        try:
            return base64.b64decode(result.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(
                codes.INTERNAL_ERROR, "bad fs/readFile result from the daemon: invalid base64"
            ) from None

    async def write_file(self, path: StrPath, data: bytes, *, sandbox: SandboxArg = None) -> None:
        """Create or truncate the file and write ``data``, in place (not atomic: a
        concurrent read can see a short file). A missing parent is -32004."""
        params = FsWriteFileParams(
            path=_to_uri(path),
            data_base64=base64.b64encode(check_bytes(data, "data")).decode("ascii"),
        )
        await self._call("fs/writeFile", _sandboxed(params, sandbox), EmptyResult)

    # -- paths and directories -------------------------------------------------------

    async def create_directory(
        self, path: StrPath, recursive: bool = True, *, sandbox: SandboxArg = None
    ) -> None:
        """``mkdir -p`` by default (an existing directory is fine). With
        ``recursive=False``: a missing parent is -32004, an existing path -32603
        (EEXIST, a ``FileExistsError``)."""
        params = FsCreateDirectoryParams(
            path=_to_uri(path), recursive=check_bool(recursive, "recursive")
        )
        await self._call("fs/createDirectory", _sandboxed(params, sandbox), EmptyResult)

    async def get_metadata(self, path: StrPath, *, sandbox: SandboxArg = None) -> FsMetadata:
        """The wire :class:`~protocol_schema.fs.FsMetadata` struct.

        Fields: ``is_directory``, ``is_file``, ``is_symlink``, ``size``,
        ``created_at_ms``, ``modified_at_ms`` (ms since the epoch). Symlinks are
        followed: for a link, ``is_symlink`` is true and the other fields describe its
        target (a broken link is -32004). ``created_at_ms`` is the birth time where the
        host has one, else the inode change time.
        """
        return await self._call(
            "fs/getMetadata",
            _sandboxed(FsGetMetadataParams(path=_to_uri(path)), sandbox),
            FsMetadata,
        )

    async def canonicalize(self, path: StrPath, *, sandbox: SandboxArg = None) -> str:
        """The absolute native path with every symlink resolved; it must exist (-32004)."""
        result = await self._call(
            "fs/canonicalize",
            _sandboxed(FsCanonicalizeParams(path=_to_uri(path)), sandbox),
            FsCanonicalizeResult,
        )
        return _from_uri(result.path, "fs/canonicalize")

    async def read_directory(
        self, path: StrPath, *, sandbox: SandboxArg = None
    ) -> list[FsDirectoryEntry]:
        """The directory's entries sorted by name (at most 50,000), each a wire
        :class:`~protocol_schema.fs.FsDirectoryEntry` (``file_name``, ``is_directory``,
        ``is_file``; symlinks followed)."""
        result = await self._call(
            "fs/readDirectory",
            _sandboxed(FsReadDirectoryParams(path=_to_uri(path)), sandbox),
            FsReadDirectoryResult,
        )
        return result.entries

    async def walk(
        self,
        path: StrPath,
        *,
        max_depth: int = WALK_MAX_DEPTH,
        max_directories: int = WALK_MAX_DIRECTORIES,
        max_entries: int = WALK_MAX_ENTRIES,
        follow_directory_symlinks: bool = False,
        prune_hidden_directories: bool = False,
        sandbox: SandboxArg = None,
    ) -> FsWalkResult:
        """A breadth-first listing of the tree under ``path`` (PROTOCOL.md §8).

        Returns a :class:`~protocol_schema.fs.FsWalkResult`: ``entries`` (each a
        ``path`` and a ``kind``), ``errors`` (the directories that could not be read,
        each a ``path`` and a ``message``) and ``truncated`` (a limit or the daemon's
        response budget stopped the walk). Every ``path`` is an **absolute native path
        on the daemon's host** (a ``str``, the root's path joined with the names below
        it, symlinks not resolved): the wire's absolute ``file:`` URIs, decoded. The
        same against Codex and against our daemon (an older one of ours, which sent
        paths relative to the root, is joined to the root here). Limits: 0 ≤
        ``max_depth`` ≤ 64 (0 lists the root's children only), 1 ≤ ``max_directories``
        ≤ 10,000 (the root counts), 1 ≤ ``max_entries`` ≤ 50,000, else -32600 before
        the root is touched. Each defaults to the protocol's maximum
        (:data:`WALK_MAX_DEPTH`, :data:`WALK_MAX_DIRECTORIES`, :data:`WALK_MAX_ENTRIES`):
        as much of the tree as the daemon will list, with ``truncated`` saying whether
        that was all (the wire has no defaults; the client always sends the three). A
        file root gives an empty result; a missing root -32004.
        """
        options = FsWalkOptions(  # types checked here: TypeError, not a -32602 reply
            max_depth=check_int(max_depth, "max_depth"),
            max_directories=check_int(max_directories, "max_directories"),
            max_entries=check_int(max_entries, "max_entries"),
            follow_directory_symlinks=check_bool(
                follow_directory_symlinks, "follow_directory_symlinks"
            ),
            prune_hidden_directories=check_bool(
                prune_hidden_directories, "prune_hidden_directories"
            ),
        )
        uri = _to_uri(path)
        result = await self._call(
            "fs/walk", _sandboxed(FsWalkParams(path=uri, options=options), sandbox), FsWalkResult
        )

        def native(sent: str) -> str:
            if _SCHEME.match(sent):
                return _from_uri(sent, "fs/walk")
            # An older daemon of ours: relative to the root.
            return os.path.join(_from_uri(uri, "fs/walk"), sent)

        return FsWalkResult(
            entries=[FsWalkEntry(path=native(e.path), kind=e.kind) for e in result.entries],
            errors=[FsWalkError(path=native(e.path), message=e.message) for e in result.errors],
            truncated=result.truncated,
        )

    async def remove(
        self,
        path: StrPath,
        recursive: bool = False,
        force: bool = False,
        *,
        sandbox: SandboxArg = None,
    ) -> None:
        """Remove a file, a symlink (not its target) or a directory. A path whose last
        part is ``.`` or ``..`` is refused (-32600), as ``rm`` does, and so is ``/``.

        By default it is ``os.remove`` for a file or a link and ``os.rmdir`` for a
        directory: a non-empty directory raises a ``RemoteOSError`` with errno
        ``ENOTEMPTY`` (-32603), a missing path a ``RemoteFileNotFoundError`` (-32004).
        ``recursive=True`` removes a directory with its content (``rm -r``);
        ``force=True`` makes a missing path a success (``rm -f``). Both flags are always
        sent, because the wire's defaults are Codex's ``rm -rf`` (both true).
        """
        params = FsRemoveParams(
            path=_to_uri(path),
            recursive=check_bool(recursive, "recursive"),
            force=check_bool(force, "force"),
        )
        await self._call("fs/remove", _sandboxed(params, sandbox), EmptyResult)

    async def copy(
        self, src: StrPath, dst: StrPath, recursive: bool = False, *, sandbox: SandboxArg = None
    ) -> None:
        """Copy a file (content and mode) to ``dst``, or with ``recursive`` a directory
        tree (symlinks copied as links; ``dst`` must not exist). A directory without
        ``recursive`` is -32600; so is a FIFO, socket or device as ``src`` or ``dst``
        (never opened). Inside a tree those are skipped: the rest is copied and the
        reply is -32603 counting the failures."""
        params = FsCopyParams(
            source_path=_to_uri(src, "sourcePath"),
            destination_path=_to_uri(dst, "destinationPath"),
            recursive=check_bool(recursive, "recursive"),
        )
        await self._call("fs/copy", _sandboxed(params, sandbox), EmptyResult)

    # -- streaming reads ---------------------------------------------------------------

    def open_read(self, path: StrPath) -> BlockReader:
        """Stream a file's content in blocks of at most 1 MiB, through a daemon handle.

        Use it as an async context manager, then iterate::

            async with client.fs.open_read(path) as blocks:
                async for block in blocks:
                    ...

        Entering sends ``fs/open`` (errors such as -32004 or ``path <p> is not a file``
        surface there); iterating sends ``fs/readBlock`` with increasing offsets and
        never yields an empty block; leaving the block, however it is left (end of file,
        ``break``, an exception, cancellation), sends ``fs/close``. See
        :class:`BlockReader`.
        """
        return BlockReader(self._calls, _to_uri(path))


class BlockReader:
    """The blocks of one file read through one daemon-side handle (``fs/open``).

    An async context manager and, once entered, an async iterator of non-empty
    ``bytes`` of at most :data:`BLOCK_SIZE`. It is a class rather than an async
    generator because ``async for`` does not close an iterator it leaves early, and a
    Trio async generator abandoned that way would only be finalized later, if ever; the
    ``async with`` block makes the close deterministic. Iterating outside the block
    raises ``RuntimeError``.

    The handle is closed (``fs/close``, idempotent on the daemon) as soon as the end of
    the file is reached, and in any case when the block exits, under a shielded
    :data:`CLOSE_TIMEOUT`-second deadline, so a cancelled reader still releases it. A
    failure to close (connection gone, client closed) is ignored: the daemon closes a
    connection's handles when that connection ends. :meth:`aclose` closes it early.

    A second task iterating the same reader concurrently gets ``trio.BusyResourceError``;
    iterating after the reader closed gets ``trio.ClosedResourceError``, unless it had
    reached the end of the file (then iteration simply ends).
    """

    def __init__(self, calls: Calls, uri: str) -> None:
        self._calls = calls
        self._uri = uri
        self.handle_id = uuid.uuid4().hex
        """The daemon-side handle id: 32 hex characters (the protocol's maximum length)."""
        self._entered = False
        self._opened = False
        self._closed = False
        self._eof = False
        self._busy = False
        self._offset = 0

    @property
    def offset(self) -> int:
        """How many bytes have been yielded so far."""
        return self._offset

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a BlockReader can only be entered once")
        self._entered = True
        params = FsOpenParams(handle_id=self.handle_id, path=self._uri)
        try:
            await self._calls.call("fs/open", params, FsOpenResult)
        except ProtocolError as exc:
            self._closed = True  # the daemon refused: there is no handle
            if (mapped := os_error_from(exc)) is not exc:
                raise mapped from None  # FileNotFoundError & co.
            raise
        except BaseException:
            # Cancelled, or the link dropped: the daemon may have opened the handle
            # anyway. fs/close is idempotent, and an fs/close that overtakes its
            # fs/open makes that open fail, so closing by id is always safe.
            self._opened = True
            await self.aclose()
            raise
        self._opened = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._eof:
            await self.aclose()
            raise StopAsyncIteration
        if not self._entered:
            raise RuntimeError(
                "use `async with client.fs.open_read(path) as blocks:` before iterating"
            )
        if self._closed:
            raise trio.ClosedResourceError("this BlockReader is closed")
        if self._busy:
            raise trio.BusyResourceError("another task is already reading this BlockReader")
        self._busy = True
        try:
            params = FsReadBlockParams(
                handle_id=self.handle_id, offset=self._offset, len=BLOCK_SIZE
            )
            result = await self._calls.call("fs/readBlock", params, FsReadBlockResult)
        finally:
            self._busy = False
        chunk = result.chunk
        if result.eof or not chunk:
            self._eof = True
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        self._offset += len(chunk)
        return chunk

    async def aclose(self) -> None:
        """Close the handle now (idempotent; never raises for a failed ``fs/close``)."""
        if self._closed:
            return
        self._closed = True
        if not self._opened:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            try:
                await self._calls.call(
                    "fs/close", FsCloseParams(handle_id=self.handle_id), EmptyResult
                )
            except ExecRuntimeError as exc:
                log.debug("fs/close of handle %s failed: %s", self.handle_id, exc)
        if scope.cancelled_caught:
            log.debug("fs/close of handle %s timed out", self.handle_id)
