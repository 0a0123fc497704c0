"""The daemon side of the filesystem methods (PROTOCOL.md §8).

One :class:`FsService` per connection: it owns that connection's open read handles and
answers every ``fs/*`` request. Each method takes the params struct and returns the
result struct; failures raise :class:`RpcError`:

- not found (``ENOENT``) and an unknown read handle → -32004;
- invalid input or permission denied (``EACCES``, ``EPERM``, ``EINVAL``), limits, bad
  base64, bad handle ids → -32600;
- any other OS error (``ENOTDIR``, ``EISDIR``, ``EEXIST``, ``ENOTEMPTY``, ``ELOOP``,
  ``ENAMETOOLONG``, ``EROFS``, ...) → -32603 with the OS message, as Codex 0.147;
- a malformed path URI or a negative number → -32602.

Every message names the path. Blocking calls run in worker threads through one
:class:`trio.CapacityLimiter` shared by every connection of a Trio run (so a burst of
file I/O cannot take all of Trio's default threads); only ``close(2)`` of a read-only
descriptor runs inline, so cleanup works even in a cancelled scope.
"""

from __future__ import annotations

import base64
import binascii
import errno
import heapq
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from typing import Final, TypeVar, TypeVarTuple, Unpack

import attrs
import trio
from trio.lowlevel import RunVar

from protocol_schema import EmptyResult
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
    FsReadBlockParams,
    FsReadBlockResult,
    FsReadDirectoryParams,
    FsReadDirectoryResult,
    FsReadFileParams,
    FsReadFileResult,
    FsRemoveParams,
    FsWalkEntry,
    FsWalkError,
    FsWalkParams,
    FsWalkResult,
    FsWriteFileParams,
)

from .._core.walk import InvalidWalkOptions, ListedEntry, WalkState, validate_options
from .._wire.uris import file_uri
from .fds import FD_BUDGET
from .paths import path_from_file_uri
from .rpc_error import RpcError

__all__ = [
    "FS_THREADS",
    "MAX_BLOCK_LEN",
    "MAX_DIRECTORY_ENTRIES",
    "MAX_HANDLE_ID_BYTES",
    "MAX_OPEN_HANDLES",
    "MAX_READ_FILE_BYTES",
    "FsService",
    "shared_limiter",
]

MAX_OPEN_HANDLES: Final = 128
MAX_HANDLE_ID_BYTES: Final = 32
MAX_BLOCK_LEN: Final = 1024 * 1024
MAX_DIRECTORY_ENTRIES: Final = 50_000
MAX_READ_FILE_BYTES: Final = 32 * 1024 * 1024
"""fs/readFile refuses bigger files (-32600): base64 would push the reply towards the
64 MiB message limit. Use fs/open + fs/readBlock for those."""
FS_THREADS: Final = 16

# As Codex 0.147 maps Rust's io::ErrorKind: NotFound; InvalidInput and PermissionDenied;
# everything else (ENOTDIR, EISDIR, EEXIST, ENOTEMPTY, ...) is an internal error.
_NOT_FOUND_ERRNOS: Final = frozenset({errno.ENOENT})
_INVALID_ERRNOS: Final = frozenset({errno.EACCES, errno.EPERM, errno.EINVAL})
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY: Final = getattr(os, "O_NOCTTY", 0)
_O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)

_LIMITER: RunVar[trio.CapacityLimiter] = RunVar("exec_runtime_fs_limiter")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def shared_limiter() -> trio.CapacityLimiter:
    """The thread limiter every FsService of the current Trio run shares."""
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(FS_THREADS)
        _LIMITER.set(limiter)
        return limiter


# ---------------------------------------------------------------------------
# Error mapping


def _os_error(exc: OSError, path: str) -> RpcError:
    """Map an OSError to -32004 / -32600 / -32603, naming the path."""
    if isinstance(exc, shutil.SpecialFileError):
        return RpcError.invalid_request(f"{path}: {exc}")
    if isinstance(exc, shutil.SameFileError):
        return RpcError.invalid_request(f"{path}: source and destination are the same file")
    if isinstance(exc, shutil.Error):
        problems = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        first = f"; first: {problems[0]}" if problems else ""
        return RpcError.internal(f"{path}: {len(problems)} paths failed to copy{first}")
    where = exc.filename if isinstance(exc.filename, str) and exc.filename else path
    message = f"{where}: {exc.strerror or exc}"
    # data: the errno, for the client to raise the matching OSError (an extension).
    if exc.errno in _NOT_FOUND_ERRNOS:
        return RpcError.not_found(message).with_os_error(exc, where)
    if exc.errno in _INVALID_ERRNOS:
        return RpcError.invalid_request(message).with_os_error(exc, where)
    return RpcError.internal(message).with_os_error(exc, where)


def _not_a_file(path: str) -> RpcError:
    return RpcError.invalid_request(f"path {path} is not a file")


# ---------------------------------------------------------------------------
# Blocking helpers (run in worker threads); they raise RpcError themselves.


def _open_regular(path: str, flags: int, *, follow_symlinks: bool = True) -> int:
    """Open without ever blocking on a FIFO or device, and only keep regular files."""
    flags |= os.O_NONBLOCK | _O_CLOEXEC | _O_NOCTTY
    if not follow_symlinks:
        flags |= _O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, a socket
            raise _not_a_file(path) from None
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise RpcError.invalid_request(
                f"path {path} is a symlink and followSymlinks is false"
            ) from None
        raise _os_error(exc, path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_a_file(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_file(path: str, follow_symlinks: bool) -> str:
    fd = _open_regular(path, os.O_RDONLY, follow_symlinks=follow_symlinks)
    try:
        size = os.fstat(fd).st_size
        if size > MAX_READ_FILE_BYTES:
            raise _too_big(path, size)
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, max(size - total, 0) + 65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_READ_FILE_BYTES:
                raise _too_big(path, total)
    except OSError as exc:
        raise _os_error(exc, path) from None
    finally:
        os.close(fd)
    return base64.b64encode(b"".join(chunks)).decode("ascii")


def _too_big(path: str, size: int) -> RpcError:
    return RpcError.invalid_request(
        f"path {path} is too large for fs/readFile ({size} bytes, at most "
        f"{MAX_READ_FILE_BYTES}); read it with fs/open and fs/readBlock"
    )


def _write_file(path: str, data_base64: str, follow_symlinks: bool) -> None:
    try:
        data = base64.b64decode(data_base64, validate=True)
    except (binascii.Error, ValueError):
        # -32600 as Codex (invalid input, not a malformed request).
        raise RpcError.invalid_request(f"dataBase64 for {path} is not valid base64") from None
    fd = _open_regular(path, os.O_WRONLY | os.O_CREAT, follow_symlinks=follow_symlinks)
    try:
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise _os_error(exc, path) from None
    finally:
        os.close(fd)


def _create_directory(path: str, recursive: bool) -> None:
    try:
        if recursive:
            _make_directories(path)
        else:
            os.mkdir(path)
    except OSError as exc:
        raise _os_error(exc, path) from None


def _make_directories(path: str) -> None:
    """``mkdir -p`` as Rust's ``create_dir_all`` (Codex 0.147) does it: an existing
    path that is not a directory (a broken symlink too) is EEXIST. ``os.makedirs``
    swallows a parent's EEXIST and fails later with ENOENT instead."""
    try:
        os.mkdir(path)
        return
    except FileNotFoundError:
        parent = os.path.dirname(path.rstrip(os.sep))
        if not parent or parent == path:
            raise
    except FileExistsError:
        if os.path.isdir(path):
            return
        raise
    _make_directories(parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):  # created meanwhile by someone else: fine if a directory
            raise


def _created_ms(st: os.stat_result) -> int:
    birth_ns = getattr(st, "st_birthtime_ns", None)
    if isinstance(birth_ns, int):
        return birth_ns // 1_000_000
    birth = getattr(st, "st_birthtime", None)
    if isinstance(birth, int | float):
        return int(birth * 1000)
    return st.st_ctime_ns // 1_000_000


def _get_metadata(path: str, follow_symlinks: bool) -> FsMetadata:
    try:
        link = os.lstat(path)
        is_symlink = stat.S_ISLNK(link.st_mode)
        st = os.stat(path) if follow_symlinks and is_symlink else link
    except OSError as exc:
        raise _os_error(exc, path) from None
    return FsMetadata(
        is_directory=stat.S_ISDIR(st.st_mode),
        is_file=stat.S_ISREG(st.st_mode),
        is_symlink=is_symlink,
        size=st.st_size,
        created_at_ms=_created_ms(st),
        modified_at_ms=st.st_mtime_ns // 1_000_000,
    )


def _canonicalize(path: str) -> str:
    try:
        # The kernel's lookup first: realpath alone drops a trailing ``/`` and folds
        # ``file/..`` without checking that ``file`` is a directory (ENOTDIR here).
        os.stat(path)
        return os.path.realpath(path, strict=True)
    except OSError as exc:
        raise _os_error(exc, path) from None


def _flags(entry: os.DirEntry[str], *, follow_symlinks: bool) -> tuple[bool, bool, bool]:
    """``(is_symlink, is_dir, is_file)``; an entry that vanished or cannot be stat'ed is
    none of them, but a symlink stays one (a link that loops, ELOOP, is no "other" file)."""
    try:
        is_symlink = entry.is_symlink()
    except OSError:
        return False, False, False
    try:
        return (
            is_symlink,
            entry.is_dir(follow_symlinks=follow_symlinks),
            entry.is_file(follow_symlinks=follow_symlinks),
        )
    except OSError:
        return is_symlink, False, False


def _read_directory(path: str) -> list[FsDirectoryEntry]:
    """The first 50,000 names by name order; is_directory/is_file follow symlinks."""
    try:
        with os.scandir(path) as it:
            smallest = heapq.nsmallest(MAX_DIRECTORY_ENTRIES, it, key=lambda e: e.name)
    except OSError as exc:
        raise _os_error(exc, path) from None
    listing: list[FsDirectoryEntry] = []
    for entry in smallest:
        _, is_dir, is_file = _flags(entry, follow_symlinks=True)
        name = _wire_name(entry.name)
        listing.append(FsDirectoryEntry(file_name=name, is_directory=is_dir, is_file=is_file))
    return listing


def _wire_name(name: str) -> str:
    """A name as the wire can carry it. Linux names are bytes; one that is not UTF-8
    (held by Python as surrogate escapes, which neither JSON nor msgpack can encode)
    is sent with U+FFFD for its undecodable bytes, as ``ls`` shows it."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return name


def _stat_walk_root(path: str, follow_symlinks: bool) -> os.stat_result | None:
    """The root's stat (following a symlink: a broken one is -32004), or None when it
    is not a directory, or is a symlink and symlinks are not followed (as Codex 0.147:
    like any other link not followed, it is not descended into)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _os_error(exc, path) from None
    if not stat.S_ISDIR(st.st_mode):
        return None
    if not follow_symlinks and os.path.islink(path.rstrip(os.sep) or os.sep):
        return None
    return st


def _list_walk_directory(path: str, follow_symlinks: bool, limit: int) -> list[ListedEntry]:
    """One directory for fs/walk: its ``limit`` smallest names that count.

    Every name counts against maxEntries, a symlink fs/walk will omit too (see
    ``WalkState.entry_limit``), except a symlink that does not resolve (broken,
    looping): as Codex 0.147, it is left out, before trimming. Raises OSError when the
    directory cannot be read.
    """

    def candidates(
        it: Iterator[os.DirEntry[str]],
    ) -> Iterator[tuple[os.DirEntry[str], os.stat_result | None]]:
        for entry in it:
            is_symlink, _, _ = _flags(entry, follow_symlinks=False)
            if not is_symlink:
                yield entry, None
                continue
            try:
                yield entry, os.stat(entry.path)
            except OSError:
                continue  # broken or looping

    with os.scandir(path) as it:
        kept = heapq.nsmallest(limit, candidates(it), key=lambda pair: pair[0].name)
    listing: list[ListedEntry] = []
    for entry, target in kept:
        if target is not None:  # a symlink, and what it resolves to
            if follow_symlinks and stat.S_ISDIR(target.st_mode):
                identity = (target.st_dev, target.st_ino)
                listing.append(ListedEntry(entry.name, "symlink", True, identity))
            else:
                listing.append(ListedEntry(entry.name, "symlink"))  # counted, omitted
            continue
        _, is_dir, is_file = _flags(entry, follow_symlinks=False)
        if is_dir:
            try:
                own = entry.stat(follow_symlinks=False)
            except OSError:
                listing.append(ListedEntry(entry.name, "directory"))
            else:
                own_id = (own.st_dev, own.st_ino)
                listing.append(ListedEntry(entry.name, "directory", identity=own_id))
        else:
            listing.append(ListedEntry(entry.name, "file" if is_file else "other"))
    return listing


def _remove(path: str, recursive: bool, force: bool) -> None:
    if os.path.realpath(path) == os.path.realpath(os.sep):
        # As ``rm --preserve-root``: one request (recursive and force are the defaults)
        # must not be able to empty the filesystem.
        raise RpcError.invalid_request(f"{path}: refusing to remove the root directory")
    if os.path.basename(path.rstrip(os.sep)) in (os.curdir, os.pardir):
        # As POSIX rm: ``dir/..`` names dir's parent (and ``dir/.`` dir), whose whole
        # content rmtree would delete before its final rmdir fails (or, for ``..``,
        # looks like a success once the path stops resolving).
        raise RpcError.invalid_request(f"{path}: refusing to remove '.' or '..'")
    if path.endswith(os.sep) and os.path.islink(path.rstrip(os.sep)):
        # "link/" resolves to the directory the link points to: rmtree would delete
        # that directory's content, then fail to rmdir "link/" (ENOTDIR).
        raise RpcError.invalid_request(
            f"{path}: a symbolic link with a trailing '/': remove "
            f"{path.rstrip(os.sep)} for the link, or the directory by its own path"
        )
    try:
        st = os.lstat(path)
    except OSError as exc:
        if force and exc.errno in _NOT_FOUND_ERRNOS:
            return
        raise _os_error(exc, path) from None
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
        elif not recursive:
            os.rmdir(path)
        else:
            for attempt in range(3):
                try:
                    shutil.rmtree(path)
                    break
                except FileNotFoundError:
                    # Something vanished under us; with force, finish the job.
                    if not force or attempt == 2:
                        raise
                    if not os.path.lexists(path):
                        break
    except OSError as exc:
        if force and exc.errno in _NOT_FOUND_ERRNOS and not os.path.lexists(path):
            return
        raise _os_error(exc, path) from None


_SPECIAL_KINDS: Final = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class _NotRegular(shutil.SpecialFileError):
    def __init__(self, path: str, mode: int | None) -> None:
        kinds = (name for test, name in _SPECIAL_KINDS if mode is not None and test(mode))
        super().__init__(f"`{path}` is {next(kinds, 'not a regular file')}")
        self.path = path


def _open_for_copy(path: str, flags: int) -> tuple[int, os.stat_result]:
    """Open one end of a file copy; anything but a regular file is a SpecialFileError.

    Non-blocking and checked on the descriptor: a FIFO or a device is never read or
    written (``shutil.copyfile`` only spots FIFOs, and reads a device such as
    ``/dev/zero`` until the disk is full).
    """
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | _O_CLOEXEC | _O_NOCTTY, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO without a reader
            try:
                mode: int | None = os.stat(path).st_mode
            except OSError:
                mode = None
            raise _NotRegular(path, mode) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _copy_regular(source: str, destination: str, *, keep_stat: bool) -> None:
    """Copy a regular file's content and mode (with ``keep_stat``, as ``shutil.copy2``:
    times and extended attributes too). Raises OSError only."""
    src_fd, src_st = _open_for_copy(source, os.O_RDONLY)
    try:
        dst_fd, dst_st = _open_for_copy(destination, os.O_WRONLY | os.O_CREAT)
        try:
            if (src_st.st_dev, src_st.st_ino) == (dst_st.st_dev, dst_st.st_ino):
                raise shutil.SameFileError(f"{source!r} and {destination!r} are the same file")
            os.ftruncate(dst_fd, 0)
            _copy_data(src_fd, dst_fd)
            os.fchmod(dst_fd, stat.S_IMODE(src_st.st_mode))
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    if keep_stat:
        shutil.copystat(source, destination)


def _copy_data(src_fd: int, dst_fd: int) -> None:
    offset = 0
    try:
        while sent := os.sendfile(dst_fd, src_fd, offset, 1 << 30):
            offset += sent
        return
    except OSError as exc:
        if offset or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src_fd, 1024 * 1024):  # a filesystem without sendfile
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view) :]


def _copy_tree_file(source: str, destination: str) -> None:
    _copy_regular(source, destination, keep_stat=True)


def _resolved_destination(path: str) -> str:
    """Where a copy to ``path`` would land, as Codex 0.147 judges "into itself": the
    path resolved if it exists, else its parent resolved if that exists, else the path
    as written (a broken symlink is not followed)."""
    if os.path.exists(path):
        return os.path.realpath(path)
    parent, name = os.path.split(path.rstrip(os.sep))
    if parent and os.path.exists(parent):
        return os.path.join(os.path.realpath(parent), name)
    return os.path.normpath(path)


def _blocked_directory(path: str) -> str | None:
    """Where ``mkdir -p path`` would meet something that exists and is no directory:
    ``path`` itself, or the nearest existing ancestor; None when nothing is in the way."""
    current = path.rstrip(os.sep) or os.sep
    while True:
        if os.path.isdir(current):
            return None
        if os.path.lexists(current):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _copy(source: str, destination: str, recursive: bool) -> None:
    try:
        st = os.stat(source)
    except OSError as exc:
        raise _os_error(exc, source) from None
    if stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise RpcError.invalid_request(
                f"path {source} is a directory; copying it needs recursive"
            )
        real_source = os.path.realpath(source)
        real_destination = _resolved_destination(destination)
        if real_destination == real_source or real_destination.startswith(
            real_source.rstrip(os.sep) + os.sep
        ):
            raise RpcError.invalid_request(
                f"cannot copy directory {source} into itself ({destination})"
            )
        if (blocked := _blocked_directory(destination)) is not None:
            # A file or a (broken) symlink where a directory must be made (the
            # destination or a missing parent's place): EEXIST, as Codex 0.147's
            # create_dir_all answers.
            exists = FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), blocked)
            raise _os_error(exists, blocked)
        try:
            # The missing parents first, as Codex's create_dir_all makes them: a broken
            # symlink on the way is EEXIST there (copytree's makedirs gives ENOENT).
            _make_directories(os.path.dirname(destination.rstrip(os.sep)) or os.sep)
            # Symlinks are copied as links; FIFOs, sockets and devices are not copied
            # (never opened): each is one failure in the -32603 reply.
            shutil.copytree(source, destination, symlinks=True, copy_function=_copy_tree_file)
        except OSError as exc:
            raise _os_error(exc, destination) from None
        return
    if not stat.S_ISREG(st.st_mode):
        raise _not_a_file(source)
    try:
        _copy_regular(source, destination, keep_stat=False)
    except _NotRegular as exc:
        raise _not_a_file(exc.path) from None
    except OSError as exc:
        raise _os_error(exc, destination) from None


def _pread(fd: int, offset: int, length: int, path: str) -> FsReadBlockResult:
    try:
        parts: list[bytes] = []
        got = 0
        while got < length:
            part = os.pread(fd, length - got, offset + got)
            if not part:
                break
            parts.append(part)
            got += len(part)
    except OSError as exc:
        raise _os_error(exc, path) from None
    chunk = b"".join(parts)
    # As Codex 0.147: the end is reported by a short read, not by a block that ends
    # exactly at the end of the file (the next read returns it, empty).
    return FsReadBlockResult(chunk=chunk, eof=len(chunk) < length)


# ---------------------------------------------------------------------------
# Handles


@attrs.define(eq=False)
class _Handle:
    fd: int
    path: str
    users: int = 0
    closed: bool = False

    def release(self) -> None:
        if self.closed and self.users == 0 and self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


# ---------------------------------------------------------------------------
# The service


class FsService:
    """The fs/* methods of one connection, and the read handles it owns."""

    def __init__(self, *, limiter: trio.CapacityLimiter | None = None) -> None:
        self._limiter_override = limiter
        self._handles: dict[str, _Handle] = {}
        self._opening: set[str] = set()
        self._closed_while_opening: set[str] = set()
        self._closed = False

    @property
    def open_handles(self) -> int:
        return len(self._handles)

    async def _run(self, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        limiter = self._limiter_override or shared_limiter()
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)

    # -- whole-file and path methods ------------------------------------------

    async def read_file(self, params: FsReadFileParams) -> FsReadFileResult:
        path = path_from_file_uri(params.path)
        data = await self._run(_read_file, path, params.follow_symlinks)
        return FsReadFileResult(data_base64=data)

    async def write_file(self, params: FsWriteFileParams) -> EmptyResult:
        path = path_from_file_uri(params.path)
        await self._run(_write_file, path, params.data_base64, params.follow_symlinks)
        return EmptyResult()

    async def create_directory(self, params: FsCreateDirectoryParams) -> EmptyResult:
        path = path_from_file_uri(params.path)
        await self._run(_create_directory, path, params.recursive)
        return EmptyResult()

    async def get_metadata(self, params: FsGetMetadataParams) -> FsMetadata:
        path = path_from_file_uri(params.path)
        return await self._run(_get_metadata, path, params.follow_symlinks)

    async def canonicalize(self, params: FsCanonicalizeParams) -> FsCanonicalizeResult:
        path = path_from_file_uri(params.path)
        real = await self._run(_canonicalize, path)
        return FsCanonicalizeResult(path=file_uri(real))

    async def read_directory(self, params: FsReadDirectoryParams) -> FsReadDirectoryResult:
        path = path_from_file_uri(params.path)
        return FsReadDirectoryResult(entries=await self._run(_read_directory, path))

    async def walk(self, params: FsWalkParams) -> FsWalkResult:
        root = path_from_file_uri(params.path)
        options = params.options
        for name, value in (
            ("maxDepth", options.max_depth),
            ("maxDirectories", options.max_directories),
            ("maxEntries", options.max_entries),
        ):
            if value < 0:  # Codex's limits are unsigned: a wrong type, not a bad limit
                raise RpcError.invalid_params(f"fs/walk options.{name} must not be negative")
        try:
            limits = validate_options(
                options.max_depth,
                options.max_directories,
                options.max_entries,
                follow_directory_symlinks=options.follow_directory_symlinks,
                prune_hidden_directories=options.prune_hidden_directories,
            )
        except InvalidWalkOptions as exc:
            raise RpcError.invalid_request(str(exc)) from None
        root_stat = await self._run(_stat_walk_root, root, limits.follow_directory_symlinks)
        if root_stat is None:
            return FsWalkResult(entries=[], errors=[], truncated=False)
        identity = (root_stat.st_dev, root_stat.st_ino)
        state = WalkState(limits, identity, path_prefix=len(file_uri(root)) + 1)
        while (directory := state.next_directory()) is not None:
            native = os.path.join(root, directory.path) if directory.path else root
            try:
                listing = await self._run(
                    _list_walk_directory,
                    native,
                    limits.follow_directory_symlinks,
                    state.entry_limit(),
                )
            except OSError as exc:
                if not directory.path:
                    raise _os_error(exc, root) from None
                state.add_error(directory, f"cannot read directory {native}: {exc.strerror or exc}")
            else:
                state.add_listing(directory, listing)
        outcome = state.outcome()

        def uri(relative: str) -> str:
            # Absolute file: URIs, as Codex sends them (a name that is not UTF-8
            # travels as %XX escapes of its bytes).
            return file_uri(os.path.join(root, relative))

        return FsWalkResult(
            entries=[FsWalkEntry(path=uri(e.path), kind=e.kind) for e in outcome.entries],
            errors=[
                FsWalkError(path=uri(e.path), message=_wire_name(e.message))
                for e in outcome.errors
            ],
            truncated=outcome.truncated,
        )

    async def remove(self, params: FsRemoveParams) -> EmptyResult:
        path = path_from_file_uri(params.path)
        await self._run(_remove, path, params.recursive, params.force)
        return EmptyResult()

    async def copy(self, params: FsCopyParams) -> EmptyResult:
        source = path_from_file_uri(params.source_path, "sourcePath")
        destination = path_from_file_uri(params.destination_path, "destinationPath")
        await self._run(_copy, source, destination, params.recursive)
        return EmptyResult()

    # -- handles ----------------------------------------------------------------

    async def open(self, params: FsOpenParams) -> FsOpenResult:
        handle_id = params.handle_id
        size = len(handle_id.encode("utf-8", "surrogatepass"))
        if size > MAX_HANDLE_ID_BYTES:  # empty is a valid id, as in Codex
            raise RpcError.invalid_request(
                f"handle id must be at most {MAX_HANDLE_ID_BYTES} bytes of UTF-8, got {size} bytes"
            )
        path = path_from_file_uri(params.path)
        if self._closed:
            raise RpcError.invalid_request("the connection's file handles are closed")
        if handle_id in self._opening:  # the same id, opening concurrently
            raise RpcError.invalid_request(f"handle id {handle_id!r} is already open")
        if len(self._handles) + len(self._opening) >= MAX_OPEN_HANDLES:
            raise RpcError.invalid_request(
                f"too many open file handles: at most {MAX_OPEN_HANDLES} per connection; "
                "close one with fs/close first"
            )
        self._opening.add(handle_id)
        try:
            async with FD_BUDGET.claim(1, "fs/open"):  # not the daemon's reserve
                fd = await self._run(_open_regular, path, os.O_RDONLY)
        finally:
            self._opening.discard(handle_id)
            closed_early = handle_id in self._closed_while_opening
            self._closed_while_opening.discard(handle_id)
        if self._closed:
            os.close(fd)
            raise RpcError.invalid_request("the connection's file handles are closed")
        if closed_early:
            # Requests run concurrently: a client that gave up on this open (cancelled)
            # may send fs/close before the open finishes. The close wins.
            os.close(fd)
            raise RpcError.invalid_request(f"handle {handle_id!r} was closed while opening")
        if handle_id in self._handles:
            # Checked after the open, as Codex does: a bad path is its own error
            # (-32004, -32603) even when the id is taken.
            os.close(fd)
            raise RpcError.invalid_request(f"handle id {handle_id!r} is already open")
        self._handles[handle_id] = _Handle(fd, path)
        return FsOpenResult(handle_id=handle_id)

    async def read_block(self, params: FsReadBlockParams) -> FsReadBlockResult:
        if params.offset < 0 or params.len < 0:  # unsigned in Codex: a wrong type
            raise RpcError.invalid_params("fs/readBlock offset and len must not be negative")
        if not 1 <= params.len <= MAX_BLOCK_LEN:
            raise RpcError.invalid_request(
                f"fs/readBlock len must be between 1 and {MAX_BLOCK_LEN}, got {params.len}"
            )
        handle = self._handles.get(params.handle_id)
        if handle is None:
            raise RpcError.not_found(f"unknown file read handle `{params.handle_id}`")
        handle.users += 1
        try:
            return await self._run(_pread, handle.fd, params.offset, params.len, handle.path)
        finally:
            handle.users -= 1
            handle.release()

    async def close(self, params: FsCloseParams) -> EmptyResult:
        """Idempotent: closing an unknown or already closed handle succeeds.

        Closing a handle whose fs/open is still running makes that open fail (-32600)
        and release its descriptor.
        """
        if params.handle_id in self._opening:
            self._closed_while_opening.add(params.handle_id)
        handle = self._handles.pop(params.handle_id, None)
        if handle is not None:
            handle.closed = True
            handle.release()  # or the last in-flight readBlock does it
        return EmptyResult()

    async def aclose(self) -> None:
        """Close every handle (the connection ended). Later opens get -32600."""
        self._closed = True
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.closed = True
            handle.release()
