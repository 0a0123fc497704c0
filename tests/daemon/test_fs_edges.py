"""Edge cases of the fs/* methods found by an audit, on both backends.

Each test runs against ``open_local()`` and an in-process daemon on a loopback
WebSocket (``open_client(url)``), like ``test_fs_client.py``.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from exec_runtime import ExecClient, ProtocolError

NOT_FOUND = -32004
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mknod of a device node needs root")


async def error_of(awaitable: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        await awaitable  # type: ignore[misc]
    return info.value


def null_device(path: Path, mode: int = 0o666) -> Path:
    """A character device node with /dev/null's numbers (reads give EOF at once, so a
    regression copies an empty file instead of filling the disk as /dev/zero's would)."""
    os.mknod(path, mode | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(path, mode)
    return path


def lexists(path: str | bytes | Path) -> bool:
    return os.path.lexists(path)


def read_bytes(path: bytes) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def realpath(path: str | Path) -> str:
    return os.path.realpath(path)


async def ran_true(client: ExecClient) -> bool:
    return await (await client.start(["true"])).wait() == 0


# ---------------------------------------------------------------------------
# fs/copy and special files


@needs_root
async def test_copy_tree_never_opens_a_device(client: ExecClient, tmp_path: Path) -> None:
    """shutil.copytree's copyfile only refuses FIFOs: it read a character device in the
    tree until EOF, so a tree holding /dev/zero's node (a chroot, a copy of /dev) filled
    the disk, in a worker thread no cancel could stop. Devices, like FIFOs and sockets,
    are now never opened: each is one failure of the -32603 reply, the rest is copied."""
    with trio.fail_after(10):
        source = tmp_path / "tree"
        source.mkdir()
        (source / "file.txt").write_text("kept")
        null_device(source / "device")
        error = await error_of(client.fs.copy(source, tmp_path / "copy", recursive=True))
        assert error.code == INTERNAL_ERROR
        assert "1 paths failed to copy" in error.message
        assert "is a character device" in error.message
        assert (tmp_path / "copy" / "file.txt").read_text() == "kept"
        assert not lexists(tmp_path / "copy" / "device")
        assert await ran_true(client)


@needs_root
async def test_copy_onto_a_device_is_refused_and_leaves_it_alone(
    client: ExecClient, tmp_path: Path
) -> None:
    """Copying a file onto a device node wrote into the device, then chmod'ed the node
    to the source's mode (as root, ``fs.copy(f, "/dev/null")`` made /dev/null 0600). A
    destination that is not a regular file is now ``path <p> is not a file``, as for
    fs/writeFile."""
    with trio.fail_after(10):
        source = tmp_path / "private"
        source.write_bytes(b"secret")
        source.chmod(0o600)
        device = null_device(tmp_path / "null", 0o666)
        error = await error_of(client.fs.copy(source, device))
        assert error.code == INVALID_REQUEST
        assert error.message == f"path {device} is not a file"
        assert stat.S_IMODE(device.lstat().st_mode) == 0o666
        assert stat.S_ISCHR(device.lstat().st_mode)


async def test_copy_onto_a_socket_or_fifo_is_not_a_file(client: ExecClient, tmp_path: Path) -> None:
    """A socket destination was -32603 (ENXIO, "other I/O"); it is invalid input, named
    as fs/writeFile names it. A FIFO without a reader never blocks."""
    with trio.fail_after(10):
        source = tmp_path / "src"
        source.write_bytes(b"x")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(tmp_path / "sock"))
            os.mkfifo(tmp_path / "fifo")
            for target in ("sock", "fifo"):
                error = await error_of(client.fs.copy(source, tmp_path / target))
                assert (error.code, error.message) == (
                    INVALID_REQUEST,
                    f"path {tmp_path / target} is not a file",
                )
        assert stat.S_ISFIFO((tmp_path / "fifo").lstat().st_mode)


async def test_copy_tree_with_fifo_and_socket_does_not_block(
    client: ExecClient, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        source = tmp_path / "tree"
        source.mkdir()
        (source / "a.txt").write_text("a")
        os.mkfifo(source / "fifo")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(source / "sock"))
            error = await error_of(client.fs.copy(source, tmp_path / "copy", recursive=True))
        assert error.code == INTERNAL_ERROR
        assert "2 paths failed to copy" in error.message
        assert sorted(os.listdir(tmp_path / "copy")) == ["a.txt"]
        assert await ran_true(client)


# ---------------------------------------------------------------------------
# fs/remove of `.` and `..`


@pytest.mark.parametrize("suffix", ["inner/..", "inner/../", ".", "./", "inner/../."])
async def test_remove_refuses_dot_and_dotdot(
    client: ExecClient, tmp_path: Path, suffix: str
) -> None:
    """``victim/inner/..`` names victim: rmtree emptied victim, then its final rmdir
    failed on a path that no longer resolved, which force turned into a success (for
    ``victim/.`` the contents were gone and the reply was EINVAL). Refused up front now,
    as POSIX rm does, and nothing is deleted."""
    with trio.fail_after(10):
        victim = tmp_path / "victim"
        (victim / "inner").mkdir(parents=True)
        (victim / "keep.txt").write_text("k")
        error = await error_of(client.fs.remove(f"{victim}/{suffix}", recursive=True, force=True))
        assert error.code == INVALID_REQUEST
        assert "refusing to remove '.' or '..'" in error.message
        assert (victim / "keep.txt").read_text() == "k"
        assert (victim / "inner").is_dir()
        await client.fs.remove(victim / "inner")  # a plain path still works
        assert not (victim / "inner").exists()


@pytest.mark.parametrize("slashes", ["/", "//"])
async def test_remove_of_a_link_with_a_trailing_slash_deletes_nothing(
    client: ExecClient, tmp_path: Path, slashes: str
) -> None:
    """``link/`` resolves to the directory the link points to: rmtree deleted that
    directory's content, then failed to rmdir ``link/`` (ENOTDIR, answered as not
    found). Refused up front now; without the slash only the link goes."""
    with trio.fail_after(10):
        target = tmp_path / "target"
        target.mkdir()
        (target / "precious").write_text("p")
        link = tmp_path / "link"
        link.symlink_to(target)
        error = await error_of(client.fs.remove(f"{link}{slashes}", recursive=True, force=True))
        assert error.code == INVALID_REQUEST
        assert "a symbolic link with a trailing '/'" in error.message
        assert (target / "precious").read_text() == "p"
        await client.fs.remove(link)
        assert not link.is_symlink() and not link.exists()
        assert (target / "precious").read_text() == "p"


# ---------------------------------------------------------------------------
# Names that are not UTF-8


async def test_str_paths_that_are_not_utf8_reach_the_file(
    client: ExecClient, tmp_path: Path
) -> None:
    """A Linux name is bytes; Python spells a non-UTF-8 one with surrogate escapes
    (os.fsdecode, os.listdir). The client raised UnicodeEncodeError quoting it, and the
    daemon answered fs/canonicalize of such a path with -32603 (its result URI could not
    be quoted); a process cwd failed the same way. They travel as %XX bytes now."""
    with trio.fail_after(10):
        raw = os.path.join(os.fsencode(tmp_path), b"bad\xff")
        os.mkdir(raw)
        directory = os.fsdecode(raw)
        name = os.path.join(directory, "f\udcfe")
        await client.fs.write_file(name, b"hello")
        assert read_bytes(os.path.join(raw, b"f\xfe")) == b"hello"
        assert await client.fs.read_file(name) == b"hello"
        assert (await client.fs.get_metadata(name)).size == 5
        assert await client.fs.canonicalize(name) == realpath(name)
        async with client.fs.open_read(name) as blocks:
            assert [block async for block in blocks] == [b"hello"]
        await client.fs.copy(name, os.path.join(directory, "g\udcfd"))
        assert sorted(os.listdir(raw)) == [b"f\xfe", b"g\xfd"]
        result = await client.run(["pwd", "-P"], cwd=directory)
        assert result.stdout == os.fsencode(realpath(directory)) + b"\n"
        await client.fs.remove(directory, recursive=True)
        assert not lexists(raw)


# ---------------------------------------------------------------------------
# fs/canonicalize takes the path as the OS does


async def test_canonicalize_checks_the_path_as_the_os_does(
    client: ExecClient, tmp_path: Path
) -> None:
    """realpath drops a trailing ``/`` and folds ``file/..`` without checking that
    ``file`` is a directory, so canonicalize answered a path every other method calls
    ENOTDIR (-32603, as Codex) with the file, or its parent."""
    with trio.fail_after(10):
        file = tmp_path / "file.txt"
        file.write_text("x")
        for path in (f"{file}/", f"{file}/..", f"{file}/."):
            error = await error_of(client.fs.canonicalize(path))
            assert error.code == INTERNAL_ERROR, path
            assert isinstance(error, NotADirectoryError), path
            assert (await error_of(client.fs.get_metadata(path))).code == INTERNAL_ERROR
        real = realpath(tmp_path)
        assert await client.fs.canonicalize(f"{tmp_path}/") == real
        assert await client.fs.canonicalize(f"{file}") == os.path.join(real, "file.txt")
