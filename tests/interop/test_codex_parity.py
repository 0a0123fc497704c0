"""Differential parity with the Codex exec-server 0.147 (issue 14, PROTOCOL §10): the same
raw-wire requests go to Codex and to our daemon, each on its own copy of the same file
tree, and the replies must agree as a Codex host sees them.

Per request: both answer a result or both an error; errors have the same code (messages
differ: Codex sends Rust's ``No such file or directory (os error 2)``, we name the path;
the handshake messages, which PROTOCOL spells out, must be equal too); a result has every
member Codex sends, with the same JSON type, and the same value once normalised
(``tests/interop/differential.py``, shared with the stateful suite).

Every remaining difference is in ``differential.KNOWN``, with its reason (each is in
docs/protocol.md's compatibility section or is PROTOCOL-marked), and is *asserted* here:
a known case must still differ the way it is listed, so a change on either side is
noticed. Every entry of ``KNOWN`` names a case of this file.

Set EXEC_RUNTIME_CODEX to the ``codex`` binary (``tests/interop/install_codex.sh``);
under CI a missing Codex fails these tests.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

import exec_runtime
from exec_runtime import ServerConfig
from tests.interop.codex_wire import DAEMONS, IO_TIMEOUT, open_codex, open_raw, require_codex
from tests.interop.differential import (
    KNOWN,
    Pair,
    Step,
    holds,
    reply_differences,
    send_step,
)

pytestmark = require_codex()

# --- the two daemons -----------------------------------------------------------------------


def build_tree(root: Path) -> None:
    """The same tree for each daemon::

    f ("hello")   d/{a.txt, .hidden/, sub/b}   e/ (empty)
    link -> d     flink -> f     broken -> nowhere     "sp ace+@[x]%" ("odd")
    d/ODD (every printable ASCII punctuation mark and a non-ASCII letter)
    """
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / ".hidden").mkdir()
    (root / "e").mkdir()
    (root / "f").write_text("hello")
    (root / "d" / "a.txt").write_text("a")
    (root / "d" / "sub" / "b").write_text("b")
    (root / "link").symlink_to(root / "d")
    (root / "flink").symlink_to(root / "f")
    (root / "broken").symlink_to(root / "nowhere")
    (root / "sp ace+@[x]%").write_text("odd")
    (root / "d" / ODD).write_text("odd")


ODD = "!\"#$%&'()*+,-.:;<=>?@[\\]^_`{|}~ é"


@pytest.fixture
async def pair(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Pair]:
    async with open_codex(tmp_path / "codex-home") as codex_url:
        with trio.fail_after(20):
            ours_url = await nursery.start(exec_runtime.serve, ServerConfig())
        roots = {}
        for name in DAEMONS:
            roots[name] = tmp_path / name
            roots[name].mkdir()
            build_tree(roots[name])
        yield Pair({"codex": codex_url, "ours": ours_url}, roots)


# --- sending the same steps to both ----------------------------------------------------------


async def run_steps(url: str, root: Path, steps: list[Step], handshake: bool) -> list[Any]:
    replies: list[Any] = []
    async with open_raw(url, handshake=handshake) as client:
        with trio.fail_after(IO_TIMEOUT):
            for method, params in steps:
                reply = await send_step(client, root, method, params)
                if reply is not None:
                    replies.append(reply)
    return replies


@dataclass(frozen=True)
class Case:
    id: str
    steps: list[Step]
    handshake: bool = True
    same_message: bool = False


async def check(pair: Pair, case: Case) -> None:
    replies = {
        name: await run_steps(pair.urls[name], pair.roots[name], case.steps, case.handshake)
        for name in DAEMONS
    }
    found = [
        f"step {i} ({case.steps[i][0]}): {d}"
        for i, (codex, ours) in enumerate(zip(replies["codex"], replies["ours"], strict=True))
        for d in reply_differences(codex, ours, case.same_message)
    ]
    known = KNOWN.get(case.id)
    if known is None:
        assert not found, "\n".join(found)
        return
    # Still the listed difference, on both sides (else update KNOWN and the docs).
    assert found, f"{case.id} is listed as a known difference but both agree now"
    assert holds(known.codex, replies["codex"]), replies["codex"]
    assert holds(known.ours, replies["ours"]), replies["ours"]
    if known.only is not None:
        assert all(known.only in d for d in found), "\n".join(found)


# --- the cases --------------------------------------------------------------------------------

W = {"maxDepth": 64, "maxDirectories": 100, "maxEntries": 100, "followDirectorySymlinks": False}


def walk(path: str = "file://ROOT", **options: Any) -> Step:
    return ("fs/walk", {"path": path, "options": {**W, **options}})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def start(process_id: str, argv: list[str], **extra: Any) -> Step:
    params = {"processId": process_id, "argv": argv, "cwd": "file://ROOT", "env": ENV, "tty": False}
    return ("process/start", {**params, **extra})


ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
OPEN = ("fs/open", {"handleId": "h", "path": "file://ROOT/f"})
STEPPED = "printf a; head -c 1 >/dev/null; printf b >&2; head -c 1 >/dev/null"
LONG_NAME = "file://ROOT/" + "n" * 300

FS_CASES = [
    # fs/readFile
    Case("readFile", [("fs/readFile", {"path": "file://ROOT/f"})]),
    Case("readFile-symlink", [("fs/readFile", {"path": "file://ROOT/flink"})]),
    Case("readFile-odd-name", [("fs/readFile", {"path": "file://ROOT/sp%20ace+@[x]%25"})]),
    Case("readFile-missing", [("fs/readFile", {"path": "file://ROOT/nope"})]),
    Case("readFile-directory", [("fs/readFile", {"path": "file://ROOT/d"})]),
    Case(
        "readFile-nofollow",
        [("fs/readFile", {"path": "file://ROOT/flink", "followSymlinks": False})],
    ),
    Case("readFile-enotdir", [("fs/readFile", {"path": "file://ROOT/f/x"})]),
    Case("readFile-name-too-long", [("fs/readFile", {"path": LONG_NAME})]),
    Case("readFile-no-path", [("fs/readFile", {})]),
    Case("readFile-path-type", [("fs/readFile", {"path": 3})]),
    Case("readFile-relative", [("fs/readFile", {"path": "relative/x"})]),
    Case("readFile-scheme", [("fs/readFile", {"path": "http://x/y"})]),
    Case("readFile-foreign-host", [("fs/readFile", {"path": "file://elsewhere/ROOT/f"})]),
    # fs/writeFile
    Case(
        "writeFile-new",
        [
            ("fs/writeFile", {"path": "file://ROOT/new", "dataBase64": b64(b"data")}),
            ("fs/readFile", {"path": "file://ROOT/new"}),
        ],
    ),
    Case(
        "writeFile-overwrite-through-link",
        [
            ("fs/writeFile", {"path": "file://ROOT/flink", "dataBase64": b64(b"x")}),
            ("fs/readFile", {"path": "file://ROOT/f"}),
        ],
    ),
    Case(
        "writeFile-missing-parent",
        [("fs/writeFile", {"path": "file://ROOT/no/x", "dataBase64": ""})],
    ),
    Case("writeFile-eisdir", [("fs/writeFile", {"path": "file://ROOT/d", "dataBase64": ""})]),
    Case("writeFile-enotdir", [("fs/writeFile", {"path": "file://ROOT/f/x", "dataBase64": ""})]),
    Case("writeFile-bad-base64", [("fs/writeFile", {"path": "file://ROOT/f", "dataBase64": "!!"})]),
    Case("writeFile-no-data", [("fs/writeFile", {"path": "file://ROOT/f"})]),
    # fs/createDirectory
    Case(
        "createDirectory-recursive",
        [("fs/createDirectory", {"path": "file://ROOT/n/m/o"}), walk("file://ROOT/n")],
    ),
    Case("createDirectory-existing", [("fs/createDirectory", {"path": "file://ROOT/d"})]),
    Case(
        "createDirectory-eexist",
        [("fs/createDirectory", {"path": "file://ROOT/d", "recursive": False})],
    ),
    Case("createDirectory-over-file", [("fs/createDirectory", {"path": "file://ROOT/f"})]),
    Case(
        "createDirectory-missing-parent",
        [("fs/createDirectory", {"path": "file://ROOT/no/x", "recursive": False})],
    ),
    Case(
        "createDirectory-through-broken-link",
        [("fs/createDirectory", {"path": "file://ROOT/broken/x"})],
    ),
    Case("createDirectory-enotdir", [("fs/createDirectory", {"path": "file://ROOT/f/x"})]),
    # fs/getMetadata
    Case("getMetadata-file", [("fs/getMetadata", {"path": "file://ROOT/f"})]),
    Case("getMetadata-directory-type", [("fs/getMetadata", {"path": "file://ROOT/e"})]),
    Case("getMetadata-symlink", [("fs/getMetadata", {"path": "file://ROOT/flink"})]),
    Case(
        "getMetadata-symlink-nofollow",
        [("fs/getMetadata", {"path": "file://ROOT/flink", "followSymlinks": False})],
    ),
    Case("getMetadata-broken", [("fs/getMetadata", {"path": "file://ROOT/broken"})]),
    Case("getMetadata-missing", [("fs/getMetadata", {"path": "file://ROOT/nope"})]),
    Case("getMetadata-enotdir", [("fs/getMetadata", {"path": "file://ROOT/f/x"})]),
    # fs/canonicalize
    Case("canonicalize", [("fs/canonicalize", {"path": "file://ROOT/link/../f"})]),
    Case("canonicalize-odd-name", [("fs/canonicalize", {"path": "file://ROOT/sp%20ace+@[x]%25"})]),
    Case(
        "canonicalize-punctuation", [("fs/canonicalize", {"path": f"file://ROOT/d/{quote(ODD)}"})]
    ),
    Case("canonicalize-missing", [("fs/canonicalize", {"path": "file://ROOT/nope"})]),
    Case("canonicalize-enotdir", [("fs/canonicalize", {"path": "file://ROOT/f/"})]),
    # fs/readDirectory
    Case("readDirectory", [("fs/readDirectory", {"path": "file://ROOT/d"})]),
    Case("readDirectory-broken-link", [("fs/readDirectory", {"path": "file://ROOT"})]),
    Case("readDirectory-empty", [("fs/readDirectory", {"path": "file://ROOT/e"})]),
    Case("readDirectory-enotdir", [("fs/readDirectory", {"path": "file://ROOT/f"})]),
    Case("readDirectory-missing", [("fs/readDirectory", {"path": "file://ROOT/nope"})]),
    # fs/walk
    Case("walk", [walk()]),
    Case("walk-depth-0", [walk(maxDepth=0)]),
    Case("walk-depth-1", [walk(maxDepth=1)]),
    Case("walk-max-entries", [walk(maxEntries=3)]),
    Case("walk-max-directories", [walk(maxDirectories=2)]),
    # ROOT holds 7 names, 3 of them symlinks fs/walk omits (broken, flink, link)
    Case("walk-max-entries-links", [walk(maxDepth=0, maxEntries=4)]),
    Case(
        "walk-looping-link",
        [start("p", ["ln", "-s", "loop", "e/loop"]), ("@closed", "p"), walk("file://ROOT/e")],
    ),
    Case("walk-follow", [walk(followDirectorySymlinks=True)]),
    Case("walk-prune-hidden", [walk(pruneHiddenDirectories=True)]),
    Case("walk-file-root", [walk("file://ROOT/f")]),
    Case("walk-link-root", [walk("file://ROOT/link")]),
    Case("walk-link-root-slash", [walk("file://ROOT/link/")]),
    Case("walk-link-root-follow", [walk("file://ROOT/link", followDirectorySymlinks=True)]),
    Case("walk-broken-link-root", [walk("file://ROOT/broken")]),
    Case("walk-missing-root", [walk("file://ROOT/nope")]),
    Case("walk-zero-directories", [walk(maxDirectories=0)]),
    Case("walk-zero-entries", [walk(maxEntries=0)]),
    Case("walk-depth-too-big", [walk(maxDepth=65)]),
    Case("walk-directories-too-big", [walk(maxDirectories=10_001)]),
    Case("walk-entries-too-big", [walk(maxEntries=50_001)]),
    Case("walk-largest-limits", [walk(maxDepth=64, maxDirectories=10_000, maxEntries=50_000)]),
    Case("walk-negative", [walk(maxDepth=-1)]),
    Case("walk-no-options", [("fs/walk", {"path": "file://ROOT"})]),
    Case(
        "walk-no-follow-member",
        [
            (
                "fs/walk",
                {
                    "path": "file://ROOT",
                    "options": {"maxDepth": 1, "maxDirectories": 9, "maxEntries": 9},
                },
            )
        ],
    ),
    # fs/remove
    Case("remove-file", [("fs/remove", {"path": "file://ROOT/f"}), walk(maxDepth=0)]),
    Case("remove-tree", [("fs/remove", {"path": "file://ROOT/d"}), walk(maxDepth=0)]),
    Case("remove-link", [("fs/remove", {"path": "file://ROOT/link"}), walk(maxDepth=0)]),
    Case("remove-empty-directory", [("fs/remove", {"path": "file://ROOT/e", "recursive": False})]),
    Case("remove-enotempty", [("fs/remove", {"path": "file://ROOT/d", "recursive": False})]),
    Case("remove-missing-force", [("fs/remove", {"path": "file://ROOT/nope"})]),
    Case("remove-missing", [("fs/remove", {"path": "file://ROOT/nope", "force": False})]),
    Case("remove-enotdir", [("fs/remove", {"path": "file://ROOT/f/x"})]),
    # fs/copy
    Case(
        "copy-file",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/f",
                    "destinationPath": "file://ROOT/g",
                    "recursive": False,
                },
            ),
            ("fs/readFile", {"path": "file://ROOT/g"}),
        ],
    ),
    Case(
        "copy-tree",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/d",
                    "destinationPath": "file://ROOT/d2",
                    "recursive": True,
                },
            ),
            walk("file://ROOT/d2"),
        ],
    ),
    Case(
        "copy-directory-not-recursive",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/d",
                    "destinationPath": "file://ROOT/d2",
                    "recursive": False,
                },
            )
        ],
    ),
    Case(
        "copy-missing-source",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/nope",
                    "destinationPath": "file://ROOT/g",
                    "recursive": False,
                },
            )
        ],
    ),
    Case(
        "copy-missing-parent",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/f",
                    "destinationPath": "file://ROOT/no/g",
                    "recursive": False,
                },
            )
        ],
    ),
    Case(
        "copy-into-itself",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/d",
                    "destinationPath": "file://ROOT/d/sub/x",
                    "recursive": True,
                },
            )
        ],
    ),
    Case(
        "copy-symlink",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/link",
                    "destinationPath": "file://ROOT/g",
                    "recursive": False,
                },
            )
        ],
    ),
    Case(
        "copy-tree-onto-broken-link-into-it",
        [
            start("p", ["ln", "-s", "d/nowhere", "in"]),
            ("@closed", "p"),
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/d",
                    "destinationPath": "file://ROOT/in",
                    "recursive": True,
                },
            ),
        ],
    ),
    Case(
        "copy-tree-onto-file-inside-it",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/d",
                    "destinationPath": "file://ROOT/d/a.txt",
                    "recursive": True,
                },
            )
        ],
    ),
    Case(
        "copy-tree-under-broken-link",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/d",
                    "destinationPath": "file://ROOT/broken/x",
                    "recursive": True,
                },
            )
        ],
    ),
    Case(
        "copy-tree-onto-directory",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/d",
                    "destinationPath": "file://ROOT/e",
                    "recursive": True,
                },
            )
        ],
    ),
    Case(
        "copy-tree-onto-file",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/d",
                    "destinationPath": "file://ROOT/f",
                    "recursive": True,
                },
            )
        ],
    ),
    Case(
        "copy-onto-itself",
        [
            (
                "fs/copy",
                {
                    "sourcePath": "file://ROOT/f",
                    "destinationPath": "file://ROOT/f",
                    "recursive": False,
                },
            )
        ],
    ),
    # fs/open, fs/readBlock, fs/close
    Case(
        "open-read-close",
        [
            OPEN,
            ("fs/readBlock", {"handleId": "h", "offset": 0, "len": 3}),
            ("fs/readBlock", {"handleId": "h", "offset": 3, "len": 10}),
            ("fs/readBlock", {"handleId": "h", "offset": 99, "len": 1}),
            ("fs/close", {"handleId": "h"}),
            ("fs/close", {"handleId": "h"}),
        ],
    ),
    Case("open-directory", [("fs/open", {"handleId": "h", "path": "file://ROOT/d"})]),
    Case("open-missing", [("fs/open", {"handleId": "h", "path": "file://ROOT/nope"})]),
    Case("open-empty-id", [("fs/open", {"handleId": "", "path": "file://ROOT/f"})]),
    Case("open-long-id", [("fs/open", {"handleId": "x" * 33, "path": "file://ROOT/f"})]),
    Case("open-duplicate-id", [OPEN, OPEN]),
    Case(
        "open-duplicate-bad-path",
        [OPEN, ("fs/open", {"handleId": "h", "path": "file://ROOT/nope"})],
    ),
    Case("readBlock-exact-end", [OPEN, ("fs/readBlock", {"handleId": "h", "offset": 0, "len": 5})]),
    Case("readBlock-len-0", [OPEN, ("fs/readBlock", {"handleId": "h", "offset": 0, "len": 0})]),
    Case(
        "readBlock-len-too-big",
        [OPEN, ("fs/readBlock", {"handleId": "h", "offset": 0, "len": 1048577})],
    ),
    Case(
        "readBlock-negative-offset",
        [OPEN, ("fs/readBlock", {"handleId": "h", "offset": -1, "len": 1})],
    ),
    Case(
        "readBlock-unknown",
        [("fs/readBlock", {"handleId": "zz", "offset": 0, "len": 1})],
        same_message=True,
    ),
    Case(
        "readBlock-closed",
        [
            OPEN,
            ("fs/close", {"handleId": "h"}),
            ("fs/readBlock", {"handleId": "h", "offset": 0, "len": 1}),
        ],
        same_message=True,
    ),
    Case(
        "readBlock-after-remove",
        [
            OPEN,
            ("fs/remove", {"path": "file://ROOT/f"}),
            ("fs/readBlock", {"handleId": "h", "offset": 0, "len": 9}),
        ],
    ),
    Case("close-unknown", [("fs/close", {"handleId": "never"})]),
]

PROCESS_CASES = [
    Case(
        "start-run",
        [start("p", ["sh", "-c", "printf out; printf err >&2; exit 7"]), ("@closed", "p")],
    ),
    Case("start-tty", [start("p", ["sh", "-c", "printf x; exit 3"], tty=True), ("@closed", "p")]),
    Case("start-arg0", [start("p", ["sh", "-c", 'printf "$0"'], arg0="named"), ("@closed", "p")]),
    Case("start-cwd", [start("p", ["pwd"], cwd="file://ROOT/d"), ("@closed", "p")]),
    Case(
        "start-env",
        [start("p", ["sh", "-c", 'printf "$X"'], env={**ENV, "X": "y"}), ("@closed", "p")],
    ),
    Case("start-duplicate", [start("p", ["sleep", "5"]), start("p", ["true"])], same_message=True),
    Case(
        "start-duplicate-bad-cwd",
        [start("p", ["sleep", "5"]), start("p", ["true"], cwd="file://ROOT/nope")],
    ),
    Case("start-empty-argv", [start("p", [])], same_message=True),
    Case("start-missing-program", [start("p", ["/nonexistent/cmd"])]),
    Case("start-cwd-missing", [start("p", ["true"], cwd="file://ROOT/nope")]),
    Case("start-cwd-file", [start("p", ["true"], cwd="file://ROOT/f")]),
    Case("start-cwd-scheme", [start("p", ["true"], cwd="http://x/ROOT")]),
    Case("start-cwd-relative", [start("p", ["true"], cwd="relative")]),
    Case(
        "start-no-tty",
        [("process/start", {"processId": "p", "argv": ["true"], "cwd": "file://ROOT", "env": ENV})],
    ),
    Case(
        "start-no-env",
        [
            (
                "process/start",
                {"processId": "p", "argv": ["true"], "cwd": "file://ROOT", "tty": False},
            )
        ],
    ),
    Case("start-argv-type", [start("p", "true")]),  # type: ignore[arg-type]
    Case("start-empty-id", [start("", ["true"])]),
    Case("read-unknown", [("process/read", {"processId": "nope"})], same_message=True),
    Case(
        "read-negative-max-bytes",
        [start("p", ["true"]), ("process/read", {"processId": "p", "maxBytes": -1})],
    ),
    Case(
        "read-after-seq",
        [
            # Each output waits for a write, so both daemons number a=1, b=2, exit=3.
            start("p", ["sh", "-c", STEPPED], pipeStdin=True),
            ("@outputs", ("p", 1)),
            ("process/write", {"processId": "p", "chunk": b64(b"x"), "writeId": "w1"}),
            ("@outputs", ("p", 2)),
            ("process/write", {"processId": "p", "chunk": b64(b"y"), "writeId": "w2"}),
            ("@closed", "p"),
            ("process/read", {"processId": "p"}),
            ("process/read", {"processId": "p", "afterSeq": 1}),
            ("process/read", {"processId": "p", "afterSeq": 1, "maxBytes": 1}),
        ],
    ),
    Case("write-unknown", [("process/write", {"processId": "nope", "chunk": "", "writeId": "w"})]),
    Case(
        "write-empty-id",
        [("process/write", {"processId": "nope", "chunk": "", "writeId": ""})],
        same_message=True,
    ),
    Case(
        "write-stdin-closed",
        [
            start("p", ["sleep", "5"]),
            ("process/write", {"processId": "p", "chunk": b64(b"x"), "writeId": "w"}),
        ],
    ),
    Case(
        "write-after-exit",
        [
            start("p", ["true"], pipeStdin=True),
            ("@closed", "p"),
            ("process/write", {"processId": "p", "chunk": b64(b"x"), "writeId": "w"}),
        ],
    ),
    Case(
        "write-pipe",
        [
            start("p", ["head", "-c", "2"], pipeStdin=True),
            ("process/write", {"processId": "p", "chunk": b64(b"hi"), "writeId": "w1"}),
            ("@closed", "p"),
        ],
    ),
    Case("signal-unknown", [("process/signal", {"processId": "nope", "signal": "interrupt"})]),
    Case("signal-bogus", [("process/signal", {"processId": "nope", "signal": "bogus"})]),
    Case(
        "signal-extension",
        [
            start("p", ["sleep", "30"]),
            ("process/signal", {"processId": "p", "signal": "terminate"}),
        ],
    ),
    Case(
        "signal-interrupt",
        [
            start("p", ["sleep", "30"]),
            ("process/signal", {"processId": "p", "signal": "interrupt"}),
            ("@closed", "p"),
        ],
    ),
    Case("terminate-unknown", [("process/terminate", {"processId": "nope"})]),
    Case(
        "terminate-running",
        [start("p", ["sleep", "30"]), ("process/terminate", {"processId": "p"}), ("@closed", "p")],
    ),
    Case(
        "terminate-exited",
        [start("p", ["true"]), ("@closed", "p"), ("process/terminate", {"processId": "p"})],
    ),
    Case("unknown-method", [("process/bogus", {})]),
]

ENVIRONMENT_CASES = [
    Case("environment-info", [("environment/info", {})]),
    Case("environment-info-null-params", [("environment/info", None)]),
    Case("environment-status", [("environment/status", {})]),
]

HANDSHAKE_CASES = [
    Case("before-initialize-fs", [("fs/readFile", {"path": "file://ROOT/f"})], False, True),
    Case("before-initialize-process", [("process/read", {"processId": "p"})], False, True),
    Case("before-initialize-environment", [("environment/info", {})], False, True),
    Case(
        "before-initialized",
        [
            ("initialize", {"clientName": "parity"}),
            ("fs/readFile", {"path": "file://ROOT/f"}),
            ("process/read", {"processId": "p"}),
            ("environment/info", {}),
        ],
        False,
        True,
    ),
    Case(
        "initialize-twice",
        [("initialize", {"clientName": "parity"}), ("initialize", {"clientName": "parity"})],
        False,
        True,
    ),
    Case(
        "initialize-twice-after-initialized",
        [("initialize", {"clientName": "parity"})],
        True,
        True,
    ),
    Case(
        "resume-unknown-session",
        [
            (
                "initialize",
                {"clientName": "p", "resumeSessionId": "00000000-0000-4000-8000-000000000000"},
            )
        ],
        False,
        True,
    ),
    Case("initialize-no-client-name", [("initialize", {})], False),
    Case("malformed-json", [("@raw", "{not json")], True),
    Case(
        "handshake-then-requests",
        [
            ("initialize", {"clientName": "parity"}),
            ("@notify", "initialized"),
            ("fs/readFile", {"path": "file://ROOT/f"}),
        ],
        False,
    ),
]


@pytest.mark.parametrize("case", FS_CASES, ids=lambda c: c.id)
async def test_fs(pair: Pair, case: Case) -> None:
    await check(pair, case)


@pytest.mark.parametrize("case", PROCESS_CASES, ids=lambda c: c.id)
async def test_process(pair: Pair, case: Case) -> None:
    await check(pair, case)


@pytest.mark.parametrize("case", ENVIRONMENT_CASES, ids=lambda c: c.id)
async def test_environment(pair: Pair, case: Case) -> None:
    await check(pair, case)


@pytest.mark.parametrize("case", HANDSHAKE_CASES, ids=lambda c: c.id)
async def test_handshake(pair: Pair, case: Case) -> None:
    await check(pair, case)


async def test_client_walk_is_the_same_against_either_daemon(pair: Pair) -> None:
    """``client.fs.walk`` gives absolute native paths, equal on both daemons (issue 14)."""
    results = {}
    for name in DAEMONS:
        with trio.fail_after(IO_TIMEOUT):
            async with exec_runtime.open_client(pair.urls[name]) as client:
                root = pair.roots[name]
                result = await client.fs.walk(
                    root, max_depth=64, max_directories=100, max_entries=100
                )
        results[name] = [(e.path.replace(str(root), "ROOT"), e.kind) for e in result.entries]
        assert all(e.path.startswith(str(root) + "/") for e in result.entries)
    assert results["codex"] == results["ours"]
    assert ("ROOT/sp ace+@[x]%", "file") in results["ours"]


def test_every_known_difference_is_a_case() -> None:
    cases = FS_CASES + PROCESS_CASES + ENVIRONMENT_CASES + HANDSHAKE_CASES
    assert set(KNOWN) <= {case.id for case in cases}
