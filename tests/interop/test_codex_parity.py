"""Differential parity with the Codex exec-server 0.147 (issue 14, PROTOCOL §10): the same
raw-wire requests go to Codex and to our daemon, each on its own copy of the same file
tree, and the replies must agree as a Codex host sees them.

Per request: both answer a result or both an error; errors have the same code (messages
differ: Codex sends Rust's ``No such file or directory (os error 2)``, we name the path;
the handshake messages, which PROTOCOL spells out, must be equal too); a result has every
member Codex sends, with the same JSON type, and the same value once normalised. Only
what legitimately differs is normalised: each daemon's temporary root (``ROOT``), the
session id, and file times (``createdAtMs``, ``modifiedAtMs``). Our extension members
(``earliestRetainedSeq``, ``environment/info``'s extra members, ...) may be added.

Every remaining difference is in :data:`KNOWN` below, with its reason (each is in
docs/protocol.md's compatibility section or is PROTOCOL-marked), and is *asserted*: a
known case must still differ the way it is listed, so a change on either side is noticed.

Set EXEC_RUNTIME_CODEX to the ``codex`` binary (``tests/interop/install_codex.sh``);
under CI a missing Codex fails these tests.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

import exec_runtime
from exec_runtime import ServerConfig
from tests.conftest import RawClient
from tests.interop.codex_wire import DAEMONS, IO_TIMEOUT, open_codex, open_raw, require_codex

pytestmark = require_codex()

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32004

VOLATILE = frozenset({"createdAtMs", "modifiedAtMs", "sessionId"})
"""Members whose value legitimately differs (compared by type only)."""


# --- the two daemons -----------------------------------------------------------------------


@dataclass
class Pair:
    urls: dict[str, str]
    roots: dict[str, Path]


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

Step = tuple[str, Any]
"""``(method, params)``, or a pseudo-step: ``("@closed", processId)`` long-polls
``process/read`` until the process is closed (one result, output joined per stream);
``("@notify", method)`` sends a notification; ``("@outputs", (processId, n))`` waits for
n output notifications; ``("@raw", text)`` sends a raw frame."""


def fill(value: Any, root: Path) -> Any:
    """``ROOT`` in every string replaced by this daemon's root."""
    return json.loads(json.dumps(value).replace("ROOT", str(root)))


def normalise(value: Any, root: Path) -> Any:
    return json.loads(json.dumps(value).replace(str(root), "ROOT"))


async def until_closed(client: RawClient, process_id: str) -> dict[str, Any]:
    result = await client.read_all(process_id)
    output: dict[str, str] = {}
    for chunk in result.pop("chunks"):
        data = base64.b64decode(chunk["chunk"]).decode(errors="replace")
        output[chunk["stream"]] = output.get(chunk["stream"], "") + data
    return {"result": {**result, "output": output}}


async def outputs(client: RawClient, process_id: str, count: int) -> None:
    """Until ``count`` output notifications of the process have arrived."""
    while True:
        pushed = client.notifications[process_id]
        if sum(m["method"] == "process/output" for m in pushed) >= count:
            return
        await client._changed.wait()


async def unmatched(client: RawClient, count: int) -> dict[str, Any]:
    while len(client.notifications["__unmatched__"]) <= count:
        await client._changed.wait()
    return client.notifications["__unmatched__"][count]


async def run_steps(url: str, root: Path, steps: list[Step], handshake: bool) -> list[Any]:
    replies: list[Any] = []
    async with open_raw(url, handshake=handshake) as client:
        with trio.fail_after(IO_TIMEOUT):
            for method, params in steps:
                if method == "@closed":
                    reply = await until_closed(client, params)
                elif method == "@notify":
                    await client.notify(params)
                    continue
                elif method == "@outputs":
                    await outputs(client, *params)
                    continue
                elif method == "@raw":
                    count = len(client.notifications["__unmatched__"])
                    await client.send_raw(params)
                    reply = await unmatched(client, count)
                else:
                    reply = await client.request(method, fill(params, root))
                    reply.pop("id", None)
                    if method == "fs/readDirectory" and "result" in reply:
                        # Codex lists in the directory's own order, we by name.
                        reply["result"]["entries"].sort(key=lambda e: e["fileName"])
                replies.append(normalise(reply, root))
    return replies


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def differences(codex: Any, ours: Any, where: str = "") -> list[str]:
    """How ``ours`` differs from ``codex`` as a Codex host sees it: every member Codex
    sends must be there with the same type and (unless volatile) the same value; members
    only we send are extensions and ignored."""
    if json_type(codex) != json_type(ours):
        return [f"{where or '.'}: {codex!r} (codex) vs {ours!r} (ours)"]
    if isinstance(codex, dict):
        found = []
        for key, value in codex.items():
            if key not in ours:
                found.append(f"{where}.{key}: missing in ours")
            elif key in VOLATILE:
                if json_type(value) != json_type(ours[key]):
                    found.append(f"{where}.{key}: type {value!r} vs {ours[key]!r}")
            else:
                found += differences(value, ours[key], f"{where}.{key}")
        return found
    if isinstance(codex, list):
        if len(codex) != len(ours):
            return [f"{where}: {codex!r} (codex) vs {ours!r} (ours)"]
        return [
            d
            for i, (a, b) in enumerate(zip(codex, ours, strict=True))
            for d in differences(a, b, f"{where}[{i}]")
        ]
    return [] if codex == ours else [f"{where or '.'}: {codex!r} (codex) vs {ours!r} (ours)"]


def reply_differences(codex: Any, ours: Any, same_message: bool) -> list[str]:
    if "error" in codex or "error" in ours:
        if "error" not in codex or "error" not in ours:
            return [f"one error: {codex} (codex) vs {ours} (ours)"]
        if codex["error"]["code"] != ours["error"]["code"]:
            return [f"error code: {codex['error']} (codex) vs {ours['error']} (ours)"]
        if same_message and codex["error"]["message"] != ours["error"]["message"]:
            return [f"message: {codex['error']} (codex) vs {ours['error']} (ours)"]
        return []
    return differences(codex["result"], ours["result"])


Expect = int | str | Callable[[list[Any]], bool]
"""An error code of the last reply, ``"ok"`` (a result), or a predicate on all replies."""


@dataclass(frozen=True)
class Known:
    """A deliberate difference: why, and what each daemon answers (asserted)."""

    reason: str
    codex: Expect
    ours: Expect
    only: str | None = None
    """When set, every difference found must be at this member (the rest must agree)."""


def holds(expect: Expect, replies: list[Any]) -> bool:
    last = replies[-1]
    if callable(expect):
        return expect(replies)
    if expect == "ok":
        return "result" in last
    return "error" in last and last["error"]["code"] == expect


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
    Case("walk-follow", [walk(followDirectorySymlinks=True)]),
    Case("walk-prune-hidden", [walk(pruneHiddenDirectories=True)]),
    Case("walk-file-root", [walk("file://ROOT/f")]),
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


def _signal_exit(code: int) -> Callable[[list[Any]], bool]:
    def check(replies: list[Any]) -> bool:
        return bool(replies[-1]["result"]["exitCode"] == code)

    return check


KNOWN: dict[str, Known] = {
    # Codex requires members PROTOCOL marks optional; we accept them absent (§10).
    "walk-no-follow-member": Known(
        "Codex requires options.followDirectorySymlinks; we default it (PROTOCOL §10)",
        INVALID_PARAMS,
        "ok",
    ),
    "start-no-tty": Known("Codex requires tty; we default it to false", INVALID_PARAMS, "ok"),
    "start-no-env": Known(
        "Codex requires env; we start with an empty environment", INVALID_PARAMS, "ok"
    ),
    "start-empty-id": Known(
        "Codex accepts an empty processId; we refuse it (-32602): an id must name the process",
        "ok",
        INVALID_PARAMS,
    ),
    "readFile-foreign-host": Known(
        "a file URI naming another host: Codex -32600 (invalid on 'linux'), we -32602 as for "
        "any URI not valid on this host (a cwd URI with a host is -32602 on both)",
        INVALID_REQUEST,
        INVALID_PARAMS,
    ),
    "readFile-nofollow": Known(
        "followSymlinks: false on a symlink to a file: Codex reads the target; we refuse "
        "(-32600), as the flag says",
        "ok",
        INVALID_REQUEST,
    ),
    "canonicalize-enotdir": Known(
        "a file with a trailing '/' (file/): Codex answers the file (realpath drops the '/'); "
        "we answer ENOTDIR (-32603) as every other method does for that path",
        "ok",
        INTERNAL_ERROR,
    ),
    "readDirectory-broken-link": Known(
        "a broken symlink: Codex leaves it out of the listing; we list it (neither a file "
        "nor a directory), so every name is there",
        lambda r: "broken" not in [e["fileName"] for e in r[-1]["result"]["entries"]],
        lambda r: (
            {"fileName": "broken", "isDirectory": False, "isFile": False}
            in r[-1]["result"]["entries"]
        ),
    ),
    "copy-onto-itself": Known(
        "Codex copies a file onto itself, which truncates it to nothing; we refuse (-32600)",
        "ok",
        INVALID_REQUEST,
    ),
    "getMetadata-symlink-nofollow": Known(
        "followSymlinks: false on a symlink: Codex still describes the target (isFile, size); "
        "we describe the link itself (lstat), as the flag says",
        lambda r: r[-1]["result"]["isFile"] is True,
        lambda r: r[-1]["result"]["isFile"] is False and r[-1]["result"]["isSymlink"] is True,
    ),
    "terminate-running": Known(
        "a death by signal N: Codex mostly reports exitCode -1, we 128+N (PROTOCOL §10)",
        lambda r: r[-1]["result"]["exitCode"] in (-1, 137),
        _signal_exit(137),
        only=".exitCode",
    ),
    "environment-info": Known(
        "networkProxyLaunch: Codex true; we false (managed-network proxy ports are refused, "
        "not bridged: PROTOCOL §11, interop D9)",
        lambda r: r[-1]["result"]["capabilities"]["networkProxyLaunch"] is True,
        lambda r: r[-1]["result"]["capabilities"]["networkProxyLaunch"] is False,
        only=".capabilities.networkProxyLaunch",
    ),
    "environment-info-null-params": Known(
        "the same networkProxyLaunch difference as environment-info",
        "ok",
        "ok",
        only=".capabilities.networkProxyLaunch",
    ),
}


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
