"""Stateful differential test against the Codex exec-server 0.147 (issue 14): hypothesis
builds a small random file tree (files, directories, symlinks, broken and looping ones)
twice, once for Codex and once for our daemon, then sends the same random sequence of
``fs/*`` and ``process/*`` requests to both, one connection (and session) to each.

After every request the replies are compared as ``test_codex_parity.py`` compares them
(``tests/interop/differential.py``: result or error, the error code, every member Codex
sends present with the same type and, normalised, the same value), and after every step
the two trees on disk must be the same (names, kinds, contents, link targets, modes): a
mutation must have done the same thing on both. A difference is allowed only where
``differential.KNOWN``, the one list of deliberate differences, explains it; anything
else fails with the sequence that led to it.

Requests that would make the two trees or process tables diverge for good, and so make
every later comparison meaningless, are not generated; each is a KNOWN difference
asserted by the parity suite instead: copying a file onto itself (Codex truncates it), a
tree onto an existing directory (Codex merges, we refuse), a symlink (Codex copies the
link, we follow it), a signal other than
``interrupt`` to a live process (Codex refuses it, we deliver it).

The Trio test starts both daemons once; hypothesis runs on a worker thread and each step
crosses into Trio with ``trio.from_thread.run`` (as ``tests/test_fuzz.py`` does). Bounded:
``EXAMPLES`` sequences of at most ``STEPS`` steps; derandomized under the ``ci`` profile.
"""

from __future__ import annotations

import base64
import os
import stat
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio
import trio_websocket
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import exec_runtime
from exec_runtime import ServerConfig
from tests.interop.codex_wire import DAEMONS, IO_TIMEOUT, open_codex, require_codex
from tests.interop.differential import explained, reply_differences, send_step
from tests.support.wire_client import RawClient

pytestmark = require_codex()

EXAMPLES = 60
STEPS = 40
TEST_CAP = 150  # seconds for the whole test (under pytest-timeout); it takes about 9

NAMES = ("a", "b", "c")
TREE_PATHS = [*NAMES, *(f"{x}/{y}" for x in NAMES for y in NAMES)]
"""Where the random tree puts entries (two levels)."""
PATHS = ["", *TREE_PATHS, "a/b/c", "n/x"]
"""What requests name: the root, every tree path, and two that never exist."""
PROCESS_IDS = ("p1", "p2", "p3")
HANDLE_IDS = ("h1", "h2")
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}

QUIET = frozenset({"make-file", "sleep"})
"""Commands that write nothing: a raw ``process/read`` of them has no chunking to differ."""
COMMANDS: dict[str, tuple[list[str], bool]] = {
    # name: (argv, runs until told to stop)
    "exit-3": (["sh", "-c", "printf out; printf err >&2; exit 3"], False),
    "ls": (["sh", "-c", "ls -a"], False),
    "make-file": (["sh", "-c", "printf made > made"], False),
    "cat-a": (["cat", "a"], False),
    "missing": (["/nonexistent/cmd"], False),
    "sleep": (["sleep", "30"], True),
    "cat-stdin": (["cat"], True),
}


def uri(path: str) -> str:
    return "file://ROOT" + ("/" + path if path else "")


# --- the random tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str  # "file", "dir", "link" (absolute target), "rlink" (relative target)
    content: bytes = b""
    target: str = ""


entries = st.builds(
    Entry,
    path=st.sampled_from(TREE_PATHS),
    kind=st.sampled_from(["file", "file", "dir", "dir", "link", "rlink"]),
    content=st.binary(max_size=12),
    target=st.sampled_from([*PATHS, "a/a/a"]),
)


def build(root: Path, tree: list[Entry]) -> None:
    """Each entry whose parent is a directory and whose name is free, in order."""
    root.mkdir()
    for entry in tree:
        path = root / entry.path
        if not path.parent.is_dir() or path.is_symlink() or path.exists():
            continue
        if path.parent.is_symlink() or any(p.is_symlink() for p in path.parents):
            continue  # only under real directories: the tree stays inside the root
        if entry.kind == "file":
            path.write_bytes(entry.content)
        elif entry.kind == "dir":
            path.mkdir()
        elif entry.kind == "link":
            path.symlink_to(root / entry.target if entry.target else root)
        else:
            path.symlink_to(os.path.relpath(root / entry.target, path.parent))


def snapshot(root: Path) -> dict[str, Any]:
    """Every name under ``root`` with its kind, mode and content or link target."""
    found: dict[str, Any] = {}
    if not root.is_dir():
        return {"": "missing" if not root.is_symlink() else "link"}
    for directory, dirs, files in os.walk(root):
        assert len(found) < 1000, f"the tree under {root} has grown past 1000 names"
        for name in dirs + files:
            path = Path(directory) / name
            info = path.lstat()
            relative = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path).replace(str(root), "ROOT"))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                found[relative] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


# --- both daemons, driven from the hypothesis thread ----------------------------------------


@dataclass
class World:
    """Both daemons and the Trio side of the current example (its two connections)."""

    urls: dict[str, str]
    tmp: Path
    nursery: trio.Nursery
    examples: int = 0
    clients: dict[str, RawClient] = field(default_factory=dict)
    known_seen: set[str] = field(default_factory=set)
    answered: Counter[str] = field(default_factory=Counter)
    """Per method, the requests both daemons answered with a result."""

    async def connect(self) -> None:
        with trio.fail_after(IO_TIMEOUT):
            for name in DAEMONS:
                ws = await trio_websocket.connect_websocket_url(self.nursery, self.urls[name])
                self.clients[name] = RawClient(ws, self.nursery)
                await self.clients[name].handshake()

    async def disconnect(self, running: list[str]) -> None:
        with trio.fail_after(IO_TIMEOUT):
            for client in self.clients.values():
                for process_id in running:  # not left running after the example
                    await client.request("process/terminate", {"processId": process_id})
                await client.ws.aclose()
        self.clients.clear()

    async def exchange(self, method: str, params: Any, roots: dict[str, Path]) -> dict[str, Any]:
        replies = {}
        with trio.fail_after(IO_TIMEOUT):
            for name in DAEMONS:
                replies[name] = await send_step(self.clients[name], roots[name], method, params)
        return replies


class Differential(RuleBasedStateMachine):
    world: ClassVar[World]

    def __init__(self) -> None:
        super().__init__()
        world = self.world
        world.examples += 1
        base = world.tmp / f"example-{world.examples}"
        base.mkdir()
        self.roots = {name: base / name for name in DAEMONS}
        self.processes: dict[str, str] = {}  # id -> "running-<command>[-echoed]", "closed[-quiet]"
        self.steps: list[str] = []
        self.handles: set[str] = set()  # open on both
        trio.from_thread.run(world.connect)

    def teardown(self) -> None:
        running = [p for p in self.processes if self.running(p)]
        trio.from_thread.run(self.world.disconnect, running)

    # -- sending and comparing ---------------------------------------------------------

    def send(self, method: str, params: Any) -> dict[str, Any]:
        replies = trio.from_thread.run(self.world.exchange, method, params, self.roots)
        codex, ours = replies["codex"], replies["ours"]
        if method == "@closed":
            # How output is cut into chunks (so how many seqs it takes) is up to the
            # pipe's timing on each daemon; the joined output per stream is compared.
            for reply in (codex, ours):
                reply.get("result", {}).pop("nextSeq", None)
        self.steps.append(f"{method} {params!r}\n    codex: {codex}\n    ours:  {ours}")
        note(self.steps[-1])
        if "result" in codex and "result" in ours:
            self.world.answered[method] += 1
        found = reply_differences(codex, ours)
        if found:
            known = explained(method, params, codex, ours)
            assert known is not None, "unexplained difference after:\n" + "\n".join(
                [*self.steps, *found]
            )
            self.world.known_seen.add(known)
        return replies

    @invariant()
    def same_trees(self) -> None:
        if not self.roots["codex"].parent.exists():
            return
        codex, ours = (snapshot(self.roots[name]) for name in DAEMONS)
        assert codex == ours, "the trees differ after:\n" + "\n".join(self.steps)

    # -- the tree ------------------------------------------------------------------------

    @initialize(tree=st.lists(entries, max_size=10))
    def build_trees(self, tree: list[Entry]) -> None:
        for root in self.roots.values():
            build(root, tree)
        note(f"tree: {snapshot(self.roots['ours'])}")

    # -- fs/* ------------------------------------------------------------------------------

    @rule(data=st.data(), follow=st.sampled_from([None, True, False]))
    def read_file(self, data: st.DataObject, follow: bool | None) -> None:
        params: dict[str, Any] = {"path": uri(self.existing_or_any(data, "file"))}
        if follow is not None:
            params["followSymlinks"] = follow
        self.send("fs/readFile", params)

    @rule(path=st.sampled_from(PATHS), data=st.binary(max_size=8))
    def write_file(self, path: str, data: bytes) -> None:
        self.send(
            "fs/writeFile", {"path": uri(path), "dataBase64": base64.b64encode(data).decode()}
        )

    @rule(path=st.sampled_from(PATHS), recursive=st.sampled_from([None, True, False]))
    def create_directory(self, path: str, recursive: bool | None) -> None:
        params: dict[str, Any] = {"path": uri(path)}
        if recursive is not None:
            params["recursive"] = recursive
        self.send("fs/createDirectory", params)

    @rule(data=st.data(), follow=st.sampled_from([None, True, False]))
    def get_metadata(self, data: st.DataObject, follow: bool | None) -> None:
        path = self.any_path(data)
        params: dict[str, Any] = {"path": uri(path)}
        if follow is not None:
            params["followSymlinks"] = follow
        self.send("fs/getMetadata", params)

    @rule(data=st.data())
    def canonicalize(self, data: st.DataObject) -> None:
        path = self.any_path(data)
        self.send("fs/canonicalize", {"path": uri(path)})

    @rule(data=st.data())
    def read_directory(self, data: st.DataObject) -> None:
        path = self.existing_or_any(data, "dir")
        self.send("fs/readDirectory", {"path": uri(path)})

    @rule(
        data=st.data(),
        depth=st.integers(0, 3),
        directories=st.integers(1, 6),
        entries=st.integers(1, 12),
        follow=st.booleans(),
        prune=st.booleans(),
    )
    def walk(
        self,
        data: st.DataObject,
        depth: int,
        directories: int,
        entries: int,
        follow: bool,
        prune: bool,
    ) -> None:
        path = self.existing_or_any(data, "dir")
        options = {
            "maxDepth": depth,
            "maxDirectories": directories,
            "maxEntries": entries,
            "followDirectorySymlinks": follow,
            "pruneHiddenDirectories": prune,
        }
        self.send("fs/walk", {"path": uri(path), "options": options})

    @rule(
        data=st.data(),
        recursive=st.sampled_from([None, True, False]),
        force=st.sampled_from([None, True, False]),
    )
    def remove(self, data: st.DataObject, recursive: bool | None, force: bool | None) -> None:
        path = self.any_path(data)
        params: dict[str, Any] = {"path": uri(path)}
        if recursive is not None:
            params["recursive"] = recursive
        if force is not None:
            params["force"] = force
        self.send("fs/remove", params)

    @rule(
        data=st.data(),
        kind=st.sampled_from(["file", "dir"]),
        destination=st.sampled_from(PATHS),
        recursive=st.booleans(),
    )
    def copy(self, data: st.DataObject, kind: str, destination: str, recursive: bool) -> None:
        source = self.existing_or_any(data, kind)
        src, dst = self.roots["ours"] / source, self.roots["ours"] / destination
        if src.exists() and dst.exists() and os.path.samefile(src, dst):
            return  # KNOWN copy-onto-itself: Codex truncates the file, the trees diverge
        if src.is_symlink():
            return  # KNOWN copy-symlink: Codex copies the link, we what it points to
        if recursive and src.is_dir() and dst.is_dir():
            return  # KNOWN copy-tree-onto-directory: Codex merges, we refuse
        params = {"sourcePath": uri(source), "destinationPath": uri(destination)}
        self.send("fs/copy", {**params, "recursive": recursive})

    def existing_or_any(self, data: st.DataObject, kind: str) -> str:
        """A path of the tree as it is now, of ``kind`` (or the root, for "dir"), or any
        of ``PATHS``: the sequences reach success often, and errors too."""
        tree = snapshot(self.roots["ours"])
        existing = [path for path, value in tree.items() if value[0] == kind]
        if kind == "dir" and "" not in tree:
            existing.append("")
        if existing and data.draw(st.booleans()):
            return data.draw(st.sampled_from(sorted(existing)))
        return data.draw(st.sampled_from(PATHS))

    def any_path(self, data: st.DataObject) -> str:
        return self.existing_or_any(data, data.draw(st.sampled_from(["file", "dir", "link"])))

    @rule(handle=st.sampled_from(HANDLE_IDS), data=st.data())
    def open(self, handle: str, data: st.DataObject) -> None:
        path = self.existing_or_any(data, "file")
        replies = self.send("fs/open", {"handleId": handle, "path": uri(path)})
        if all("result" in reply for reply in replies.values()):
            self.handles.add(handle)

    @rule(data=st.data(), offset=st.integers(0, 14), length=st.integers(0, 8))
    def read_block(self, data: st.DataObject, offset: int, length: int) -> None:
        if self.handles and data.draw(st.booleans()):
            handle = data.draw(st.sampled_from(sorted(self.handles)))
        else:
            handle = data.draw(st.sampled_from(HANDLE_IDS))
        self.send("fs/readBlock", {"handleId": handle, "offset": offset, "len": length})

    @rule(handle=st.sampled_from(HANDLE_IDS))
    def close(self, handle: str) -> None:
        self.send("fs/close", {"handleId": handle})
        self.handles.discard(handle)

    # -- process/* --------------------------------------------------------------------------

    def closed(self, process_id: str, quiet: bool) -> None:
        """Long-poll both until the process is closed; compare the joined outputs."""
        self.send("@closed", process_id)
        self.processes[process_id] = "closed-quiet" if quiet else "closed"

    @rule(
        process_id=st.sampled_from(PROCESS_IDS),
        command=st.sampled_from(sorted(COMMANDS)),
        data=st.data(),
    )
    def start(self, process_id: str, command: str, data: st.DataObject) -> None:
        argv, lasts = COMMANDS[command]
        cwd = self.existing_or_any(data, "dir")
        params = {
            "processId": process_id,
            "argv": argv,
            "cwd": uri(cwd),
            "env": ENV,
            "tty": False,
            "pipeStdin": command == "cat-stdin",
        }
        replies = self.send("process/start", params)
        if all("result" in reply for reply in replies.values()):
            if lasts:
                self.processes[process_id] = f"running-{command}"
            else:
                self.closed(process_id, command in QUIET)  # both at rest again

    @rule(process_id=st.sampled_from(PROCESS_IDS), data=st.binary(min_size=1, max_size=6))
    def write(self, process_id: str, data: bytes) -> None:
        params = {
            "processId": process_id,
            "chunk": base64.b64encode(data).decode(),
            "writeId": os.urandom(4).hex(),
        }
        self.send("process/write", params)
        if self.processes.get(process_id) == "running-cat-stdin":
            self.processes[process_id] = "running-cat-stdin-echoed"

    @rule(process_id=st.sampled_from(PROCESS_IDS))
    def interrupt(self, process_id: str) -> None:
        replies = self.send("process/signal", {"processId": process_id, "signal": "interrupt"})
        if self.running(process_id):
            assert all("result" in reply for reply in replies.values())
            self.closed(process_id, self.processes[process_id] != "running-cat-stdin-echoed")

    def running(self, process_id: str) -> bool:
        return self.processes.get(process_id, "closed").startswith("running")

    @precondition(lambda self: any(s.startswith("closed") for s in self.processes.values()))
    @rule(
        data=st.data(),
        signal=st.sampled_from(["terminate", "kill", "hangup"]),
    )
    def extension_signal(self, data: st.DataObject, signal: str) -> None:
        """Only to a closed process: to a live one Codex refuses (KNOWN signal-extension)
        and we deliver it, and the two process tables would differ from then on."""
        closed = sorted(p for p, state in self.processes.items() if state.startswith("closed"))
        process_id = data.draw(st.sampled_from(closed))
        self.send("process/signal", {"processId": process_id, "signal": signal})

    @rule(process_id=st.sampled_from(PROCESS_IDS))
    def terminate(self, process_id: str) -> None:
        replies = self.send("process/terminate", {"processId": process_id})
        if self.running(process_id):
            assert all(reply["result"]["running"] for reply in replies.values())
            self.closed(process_id, self.processes[process_id] != "running-cat-stdin-echoed")

    @rule(data=st.data(), after=st.integers(0, 4), max_bytes=st.sampled_from([None, 1, 100]))
    def read(self, data: st.DataObject, after: int, max_bytes: int | None) -> None:
        quiet = [p for p, state in self.processes.items() if state == "closed-quiet"]
        process_id = data.draw(st.sampled_from(sorted(quiet) + list(PROCESS_IDS)))
        if self.processes.get(process_id) not in (None, "closed-quiet"):
            # Output arrives at its own pace, in chunks cut by each daemon's timing: a
            # raw read of it (seqs, maxBytes) is compared only through ``@closed``.
            return
        params: dict[str, Any] = {"processId": process_id, "afterSeq": after}
        if max_bytes is not None:
            params["maxBytes"] = max_bytes
        self.send("process/read", params)


def run_machine(world: World) -> None:
    Differential.world = world
    run_state_machine_as_test(
        Differential, settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS)
    )


@pytest.fixture
async def world(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[World]:
    async with open_codex(tmp_path / "codex-home") as codex_url:
        with trio.fail_after(20):
            ours_url = await nursery.start(exec_runtime.serve, ServerConfig())
        yield World({"codex": codex_url, "ours": ours_url}, tmp_path, nursery)


async def test_random_sequences_agree(world: World) -> None:
    with trio.fail_after(TEST_CAP):
        await trio.to_thread.run_sync(run_machine, world, abandon_on_cancel=True)
    assert world.examples >= EXAMPLES
    # The sequences reached success, not only errors: on most methods, and on the
    # process side (which methods exactly varies with the examples drawn).
    assert len(world.answered) >= 10, world.answered
    assert {"process/start", "@closed", "fs/canonicalize"} <= set(world.answered)
