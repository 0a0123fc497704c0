"""The sandbox policy compiler (exec_runtime._core.sandbox_policy, PROTOCOL §11), driven
with an in-memory host: properties of random trees and profiles against a small
independent oracle, and the rules by example.

Paths in a plan are real paths, so the properties look at every real path of the tree
(its keys: a symlink is a leaf, nothing is stored below one).
"""

from __future__ import annotations

import fnmatch
import pkgutil
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

import attrs
import msgspec
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import exec_runtime._core
from exec_runtime._core.sandbox_policy import (
    MINIMAL_PATHS,
    PROTECTED_NAMES,
    Access,
    ConfinementPlan,
    Grant,
    HostFacts,
    Mount,
    PolicyError,
    Unenforceable,
    compile_plan,
    effective_access,
)
from protocol_schema import sandbox as wire

# --- the in-memory host ---------------------------------------------------------------


@attrs.frozen
class Node:
    kind: Literal["file", "dir", "symlink", "gitfile"]
    target: str = ""
    """A symlink's target, or the ``gitdir:`` a ``.git`` file names (absolute or
    relative to the file's directory)."""


DIR = Node("dir")
FILE = Node("file")


def link(target: str) -> Node:
    return Node("symlink", target)


def gitfile(target: str) -> Node:
    return Node("gitfile", target)


class FakeHost:
    """:class:`HostFacts` over a dict of real paths → nodes. Missing parents are dirs."""

    def __init__(self, nodes: Mapping[str, Node]) -> None:
        self.nodes: dict[str, Node] = {"/": DIR}
        for path, node in nodes.items():
            assert path.startswith("/") and posixpath.normpath(path) == path, path
            self.nodes[path] = node
        for path in list(self.nodes):
            parent = posixpath.dirname(path)
            while parent not in self.nodes:
                self.nodes[parent] = DIR
                parent = posixpath.dirname(parent)
        for path in self.nodes:
            assert path == "/" or self.nodes[posixpath.dirname(path)] == DIR, path

    def __repr__(self) -> str:
        shown = {p: n for p, n in self.nodes.items() if n != DIR or p not in self._parents()}
        return f"FakeHost({shown!r})"

    def _parents(self) -> set[str]:
        return {posixpath.dirname(p) for p in self.nodes if p != "/"}

    # HostFacts

    def path_from_uri(self, uri: str, field: str) -> str:
        """As the daemon's: only ``file:`` URIs, on this host, with an absolute path."""
        parts = urlsplit(uri)
        path = unquote(parts.path)
        problem = None
        if parts.scheme != "file":
            problem = "not a file: URI"
        elif parts.netloc not in ("", "localhost"):
            problem = f"host {parts.netloc!r} is not this host"
        elif parts.query or parts.fragment:
            problem = "a file URI has no query or fragment"
        elif not path.startswith("/"):
            problem = "the path is not absolute"
        elif "\0" in path:
            problem = "the path contains a NUL byte"
        if problem is not None:
            raise PolicyError(f"{field} URI {uri} is not valid on this host: {problem}")
        return re.sub("/{2,}", "/", path)

    def exists(self, path: str) -> bool:
        """``os.path.lexists``: the last component is not followed."""
        if path.rstrip("/") == "":
            return True
        if path.endswith("/"):
            return self.is_dir(path)
        parent, name = posixpath.split(path)
        if name in (".", ".."):
            return self.is_dir(path)
        real_parent = self.realpath(parent)
        return (
            self.nodes.get(real_parent) == DIR and posixpath.join(real_parent, name) in self.nodes
        )

    def is_dir(self, path: str) -> bool:
        return self.nodes.get(self.realpath(path)) == DIR

    def realpath(self, path: str) -> str:
        """``os.path.realpath`` (not strict): symlinks resolved component by component."""
        assert path.startswith("/"), path
        pending = [part for part in reversed(path.split("/")) if part]
        current = "/"
        hops = 0
        while pending:
            name = pending.pop()
            if name == ".":
                continue
            if name == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, name)
            node = self.nodes.get(candidate)
            if node is not None and node.kind == "symlink":
                hops += 1
                assert hops < 40, f"symlink loop at {path}"
                if node.target.startswith("/"):
                    current = "/"
                pending.extend(part for part in reversed(node.target.split("/")) if part)
                continue
            current = candidate
        return current

    def gitdir_of(self, path: str) -> str | None:
        node = self.nodes.get(self.realpath(path))
        if node is None or node.kind != "gitfile":
            return None
        return posixpath.normpath(posixpath.join(posixpath.dirname(path), node.target))

    def glob(self, pattern: str) -> list[str]:
        """Component-wise ``*``/``?`` matching over the stored paths (not through
        symlinks); a ``*`` does not match a leading dot, as in :mod:`glob`."""
        wanted = [part for part in pattern.split("/") if part]

        def matches(part: str, name: str) -> bool:
            if name.startswith(".") and not part.startswith("."):
                return False
            return fnmatch.fnmatchcase(name, part)

        found = []
        for path in self.nodes:
            names = [part for part in path.split("/") if part]
            if len(names) == len(wanted) and all(map(matches, wanted, names)):
                found.append(path)
        return sorted(found)


def _is_host_facts(host: HostFacts) -> HostFacts:
    return host


_is_host_facts(FakeHost({}))  # the fake implements the protocol (checked by mypy)


# --- building intents -----------------------------------------------------------------


def uri(path: str) -> str:
    return "file://" + quote(path)


def path_entry(path: str, access: str) -> wire.FileSystemEntry:
    return wire.FileSystemEntry(path=wire.FileSystemPathEntry(path=uri(path)), access=access)  # type: ignore[arg-type]


def special(kind: str, access: str, subpath: str | None = None) -> wire.FileSystemEntry:
    value = wire.SpecialPath(kind=kind, subpath=subpath)
    return wire.FileSystemEntry(path=wire.FileSystemSpecial(value=value), access=access)  # type: ignore[arg-type]


def glob_entry(pattern: str, access: str) -> wire.FileSystemEntry:
    return wire.FileSystemEntry(path=wire.FileSystemGlob(pattern=pattern), access=access)  # type: ignore[arg-type]


def managed(
    entries: list[wire.FileSystemEntry],
    *,
    network: Literal["restricted", "enabled"] = "restricted",
    cwd: str | None = None,
    roots: list[str] | None = None,
) -> wire.SandboxIntent:
    profile = wire.ProfileManaged(
        file_system=wire.FileSystemRestricted(entries=entries), network=network
    )
    intent = wire.SandboxIntent(permissions=profile, windows_sandbox_level="disabled")
    if cwd is not None:
        intent.cwd = uri(cwd)
    if roots is not None:
        intent.workspace_roots = [uri(root) for root in roots]
    return intent


def intent_of(permissions: wire.PermissionProfile) -> wire.SandboxIntent:
    return wire.SandboxIntent(permissions=permissions, windows_sandbox_level="disabled")


def compile_on(
    host: FakeHost,
    intent: wire.SandboxIntent,
    *,
    cwd: str = "/w",
    env: Mapping[str, str] | None = None,
    managed_network: wire.ManagedNetwork | None = None,
) -> ConfinementPlan:
    plan = compile_plan(
        intent, request_cwd=cwd, env=env or {}, facts=host, managed_network=managed_network
    )
    assert plan is not None
    return plan


# --- the oracle: §11's meaning, written independently of the compiler -----------------

_ORDER: tuple[Access, ...] = ("write", "read", "deny")


def under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


def entry_paths(
    entry: wire.FileSystemEntry, roots: list[str], env: Mapping[str, str], host: FakeHost
) -> list[str]:
    """What one entry names, before symlinks are resolved."""
    path = entry.path
    if isinstance(path, wire.FileSystemPathEntry):
        return [unquote(urlsplit(path.path).path)]
    if isinstance(path, wire.FileSystemGlob):
        return host.glob(path.pattern)
    tmpdir = env.get("TMPDIR", "")
    bases = {
        "root": ["/"],
        "minimal": list(MINIMAL_PATHS),
        "project_roots": roots,
        "current_working_directory": roots,
        "tmpdir": [tmpdir] if tmpdir.startswith("/") else [],
        "slash_tmp": ["/tmp"],
    }.get(path.value.kind, [])
    sub = path.value.subpath
    return [posixpath.normpath(f"{base}/{sub}") if sub else base for base in bases]


@attrs.frozen
class Expected:
    grants: dict[str, Access]
    """Real existing paths → the most restrictive access asked for each."""
    protected: frozenset[str]
    symlinked: frozenset[str] = frozenset()
    """Protected names at the top of a writable root that are links: refused."""

    def access(self, path: str) -> Access:
        """The deepest grant decides; nothing writable at or below a protected path."""
        above = [root for root in self.grants if under(path, root)]
        if not above:
            return "deny"
        access = self.grants[max(above, key=depth)]
        if access == "write" and any(under(path, p) for p in self.protected):
            return "read"
        return access

    def write_roots(self) -> list[str]:
        return [path for path, access in self.grants.items() if access == "write"]


def expected(
    host: FakeHost, intent: wire.SandboxIntent, request_cwd: str, env: Mapping[str, str]
) -> Expected:
    cwd = unquote(urlsplit(intent.cwd_value).path) if intent.cwd_value else request_cwd
    roots = [unquote(urlsplit(u).path) for u in intent.workspace_roots_value or []] or [cwd]
    assert isinstance(intent.permissions, wire.ProfileManaged)
    fs = intent.permissions.file_system
    assert isinstance(fs, wire.FileSystemRestricted)
    grants: dict[str, Access] = {}
    for entry in fs.entries:
        access: Access = "deny" if entry.access == "none" else entry.access  # type: ignore[assignment]
        for path in entry_paths(entry, roots, env, host):
            real = host.realpath(path)
            if host.exists(real):
                grants[real] = max(grants.get(real, access), access, key=_ORDER.index)
    protected: set[str] = set()
    symlinked: set[str] = set()
    for root, access in grants.items():
        if access != "write":
            continue
        for name in (".git", ".codex", ".agents"):
            candidate = posixpath.join(root, name)
            if host.exists(candidate) and host.nodes.get(candidate, DIR).kind == "symlink":
                symlinked.add(candidate)
            elif host.exists(candidate):
                protected.add(host.realpath(candidate))
                gitdir = host.gitdir_of(candidate) if name == ".git" else None
                if gitdir is not None and host.exists(gitdir):
                    protected.add(host.realpath(gitdir))
    return Expected(grants, frozenset(protected), frozenset(symlinked))


def granted(plan: ConfinementPlan) -> dict[str, Access]:
    """The plan's grants on paths that exist: without the read-only guards on an absent
    .codex or .agents in a writable root (``ConfinementPlan.absent``, read with getattr
    while that change is not committed)."""
    absent = getattr(plan, "absent", frozenset())
    return {g.path: g.access for g in plan.grants if g.path not in absent}


def real_paths(host: FakeHost) -> list[str]:
    return sorted(path for path in host.nodes if host.realpath(path) == path)


def resolved(mounts: Iterable[Mount], host: FakeHost) -> list[Mount]:
    """The mounts as the kernel takes them: a mount on a symlink lands on its target."""
    return [
        m if m.kind in ("dev", "proc", "symlink") else attrs.evolve(m, path=host.realpath(m.path))
        for m in mounts
    ]


def outside_dev_proc(path: str) -> bool:
    return not (under(path, "/dev") or under(path, "/proc"))


# --- strategies -----------------------------------------------------------------------

TOPS = ("tmp", "w", "repo", "home", "etc", "usr", "bin", "dev", "proc")
NAMES = ("a", "b", "w", ".git", ".codex", ".agents")
ACCESSES = ("read", "write", "deny", "none")
KINDS = (
    "root",
    "minimal",
    "project_roots",
    "current_working_directory",
    "tmpdir",
    "slash_tmp",
    "unknown",
)


_BRANCHES = st.lists(
    st.tuples(st.sampled_from(TOPS), st.lists(st.sampled_from(NAMES), max_size=3)),
    min_size=1,
    max_size=10,
)


def pick(draw: st.DrawFn, choices: list[str] | tuple[str, ...]) -> str:
    """``draw(st.sampled_from(choices))``, cheaper for a list built per example."""
    return choices[draw(st.integers(0, len(choices) - 1))]


@st.composite
def trees(draw: st.DrawFn) -> FakeHost:
    """Random small trees; leaves become dirs, files, symlinks (absolute or relative,
    possibly dangling, possibly to another symlink, never in a loop) or ``.git`` files."""
    everything: set[str] = set()
    for top, rest in draw(_BRANCHES):
        path = "/" + "/".join([top, *rest])
        while path != "/":
            everything.add(path)
            path = posixpath.dirname(path)
    parents = {posixpath.dirname(p) for p in everything}
    leaves = sorted(everything - parents)
    nodes: dict[str, Node] = {p: DIR for p in everything - set(leaves)}
    for leaf in leaves:
        kinds = ("dir", "file", "symlink", "symlink")
        if posixpath.basename(leaf) == ".git":
            kinds += ("gitfile", "gitfile", "gitfile")
        kind = pick(draw, kinds)
        if kind in ("dir", "file"):
            nodes[leaf] = DIR if kind == "dir" else FILE
            continue
        # Not a symlink decided already: a chain of links only goes forward, no loop.
        targets = sorted(p for p in everything if p != leaf and nodes.get(p, DIR).kind != "symlink")
        target = pick(draw, [*targets, "/nowhere", "/nowhere/.git"])
        if draw(st.booleans()):
            target = posixpath.relpath(target, posixpath.dirname(leaf))
        nodes[leaf] = link(target) if kind == "symlink" else gitfile(target)
    return FakeHost(nodes)


@attrs.frozen
class Scenario:
    host: FakeHost
    intent: wire.SandboxIntent
    request_cwd: str
    env: dict[str, str]

    def compile(self) -> ConfinementPlan:
        """The plan; a scenario the compiler must refuse (a protected name that is a
        link, checked by ``test_a_symlinked_protected_name_is_refused``) is rejected."""
        if self.expected().symlinked:
            with pytest.raises(Unenforceable):
                compile_on(self.host, self.intent, cwd=self.request_cwd, env=self.env)
            reject()
        return compile_on(self.host, self.intent, cwd=self.request_cwd, env=self.env)

    def expected(self) -> Expected:
        return expected(self.host, self.intent, self.request_cwd, self.env)


_ACCESSES = st.sampled_from(ACCESSES)
_KINDS = st.sampled_from(KINDS)
_SUBPATHS = st.one_of(
    st.none(), st.lists(st.sampled_from([*NAMES, "."]), min_size=1, max_size=2).map("/".join)
)


def glob_of(draw: st.DrawFn, path: str) -> str:
    parts = path.strip("/").split("/")
    index = draw(st.integers(0, len(parts) - 1))
    parts[index] = pick(draw, ("*", "?*", parts[index][:1] + "*"))
    return "/" + "/".join(parts)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A tree, and a restricted profile of up to 7 entries naming paths of it (or not),
    workspace roots, a sandbox cwd and a TMPDIR."""
    host = draw(trees())
    paths = sorted(host.nodes)
    dirs = [p for p in paths if host.nodes[p] == DIR]
    entries = []
    for _ in range(draw(st.integers(0, 7))):
        form = pick(draw, ("path", "glob", "special"))
        place: wire.FileSystemPath
        if form == "path":
            place = wire.FileSystemPathEntry(path=uri(pick(draw, [*paths, "/nowhere", "/tmp"])))
        elif form == "glob":
            place = wire.FileSystemGlob(pattern=glob_of(draw, pick(draw, paths[1:])))
        else:
            value = wire.SpecialPath(kind=draw(_KINDS), subpath=draw(_SUBPATHS))
            place = wire.FileSystemSpecial(value=value)
        entries.append(wire.FileSystemEntry(path=place, access=draw(_ACCESSES)))
    intent = managed(entries)
    if draw(st.booleans()):
        intent.cwd = uri(pick(draw, dirs))
    if draw(st.booleans()):
        intent.workspace_roots = [uri(pick(draw, dirs)) for _ in range(draw(st.integers(0, 3)))]
    env = {}
    if draw(st.booleans()):
        env["TMPDIR"] = pick(draw, [*paths, "relative/tmp", "", "/tmp/"])
    return Scenario(host, intent, pick(draw, dirs), env)


POLICY_SETTINGS = settings(max_examples=200, deadline=None)


# --- the properties -------------------------------------------------------------------


@POLICY_SETTINGS
@given(scenarios())
def test_plan_means_what_section_11_says(case: Scenario) -> None:
    """Every real path gets the access of the deepest grant at or above it (the most
    restrictive of two grants on one path, deny where nothing is granted), read-only at
    or below a protected path where that would be write."""
    plan = case.compile()
    oracle = case.expected()
    for path in real_paths(case.host):
        assert plan.access_of(path) == oracle.access(path), path


@POLICY_SETTINGS
@given(scenarios())
def test_nothing_outside_the_write_roots_is_writable(case: Scenario) -> None:
    """1. What the plan says and what its mounts do (as the kernel follows symlinks)
    make nothing writable outside the real paths of the entries granted write."""
    plan = case.compile()
    roots = case.expected().write_roots()
    mounts = resolved(plan.mounts(), case.host)
    for path in real_paths(case.host):
        if plan.access_of(path) == "write" or effective_access(mounts, path) == "write":
            assert any(under(path, root) for root in roots), path
    for mount in mounts:
        if mount.kind == "bind":
            assert any(under(mount.path, root) for root in roots), mount


@POLICY_SETTINGS
@given(scenarios())
def test_protected_paths_are_never_writable(case: Scenario) -> None:
    """2. .git, the dir a .git file names, .codex and .agents at the top of each
    writable root, and everything below them, stay unwritable, whatever the entries.
    Under /dev and /proc the sandbox sees fresh ones, not the host's (a ``.git`` link
    to ``/dev`` protects a host /dev the command never sees)."""
    plan = case.compile()
    protected = case.expected().protected
    mounts = plan.mounts()
    for path in real_paths(case.host):
        if any(under(path, p) for p in protected):
            assert plan.access_of(path) != "write", path
            if outside_dev_proc(path):
                assert effective_access(mounts, path) != "write", path


@POLICY_SETTINGS
@given(scenarios())
def test_mounts_in_order_give_the_plan(case: Scenario) -> None:
    """3. The kernel's rule (the last mount at or above a path decides) applied to
    :meth:`ConfinementPlan.mounts` gives :meth:`ConfinementPlan.access_of` everywhere
    but under the fresh /dev and /proc."""
    plan = case.compile()
    mounts = plan.mounts()
    for path in real_paths(case.host):
        if outside_dev_proc(path):
            assert effective_access(mounts, path) == plan.access_of(path), path


@POLICY_SETTINGS
@given(scenarios())
def test_grants_are_real_paths(case: Scenario) -> None:
    """4. Grants (so every bind) name real paths: a symlink never carries a grant to its
    target, and the mounts give the plan even as the kernel follows symlinks."""
    plan = case.compile()
    existing = granted(plan)
    for grant in plan.grants:
        assert case.host.realpath(grant.path) == grant.path, grant
        assert case.host.exists(grant.path) == (grant.path in existing), grant
    assert len({g.path for g in plan.grants}) == len(plan.grants)
    mounts = resolved(plan.mounts(), case.host)
    for path in real_paths(case.host):
        if outside_dev_proc(path):
            assert effective_access(mounts, path) == plan.access_of(path), path


@POLICY_SETTINGS
@given(scenarios())
def test_masks_and_symlink_steps_match_the_tree(case: Scenario) -> None:
    """A mask is a file where a file is denied; symlink steps recreate real links, only
    where the link's directory is denied."""
    plan = case.compile()
    for mount in plan.mounts():
        if mount.kind == "mask":
            assert mount.is_dir == case.host.is_dir(mount.path), mount
        if mount.kind == "symlink":
            assert (mount.path, mount.target) in plan.symlinks
            assert plan.access_of(posixpath.dirname(mount.path)) == "deny", mount
    for path, target in plan.symlinks:
        assert posixpath.normpath(path) == path != target
        assert case.host.realpath(path) == target


def test_symlink_steps_are_only_for_links() -> None:
    """A granted path spelled unnormalized (a request cwd with ``/./``, a ``TMPDIR`` of
    ``//tmp``) is no symlink: a step ``--symlink /tmp //tmp`` would make /tmp a link to
    itself, and the bind that follows would fail."""
    host = FakeHost({"/w/x": DIR, "/tmp": DIR})
    entries = [special("project_roots", "write"), special("tmpdir", "write")]
    plan = compile_on(host, managed(entries), cwd="/w/./x", env={"TMPDIR": "//tmp"})
    assert set(granted(plan)) == {"/w/x", "/tmp"}
    assert [m for m in plan.mounts() if m.kind == "symlink"] == []
    assert plan.symlinks == ()


# --- the rules by example -------------------------------------------------------------


def test_read_only_git_under_a_writable_tmp_stays_read_only() -> None:
    """3. Regression: a ``--bind /tmp`` after the read-only ``/tmp/w/.git`` would
    re-open it, so the shallow mount must come first."""
    host = FakeHost({"/tmp/w/.git/config": FILE, "/tmp/w/src": DIR})
    plan = compile_on(
        host,
        managed([special("slash_tmp", "write"), special("project_roots", "write")]),
        cwd="/tmp/w",
    )
    assert plan.access_of("/tmp/w/.git") == "read"
    assert plan.access_of("/tmp/w/.git/config") == "read"
    assert plan.access_of("/tmp/w/src") == "write"
    mounts = plan.mounts()
    assert effective_access(mounts, "/tmp/w/.git/config") == "read"
    assert effective_access(mounts, "/tmp/w/src") == "write"
    paths = [m.path for m in mounts]
    assert paths.index("/tmp") < paths.index("/tmp/w") < paths.index("/tmp/w/.git")


def test_explicit_write_on_protected_paths_stays_read_only() -> None:
    """2. An entry granting write on .git, below it, on .codex or on .agents does not
    open them, nor the directory a .git file names."""
    host = FakeHost(
        {
            "/w/.git/hooks": DIR,
            "/w/.codex": DIR,
            "/w/.agents": FILE,
            "/wt/.git": gitfile("/w/.git/worktrees/wt"),
            "/w/.git/worktrees/wt/objects": DIR,
        }
    )
    entries = [
        special("project_roots", "write"),
        path_entry("/w/.git", "write"),
        path_entry("/w/.git/hooks", "write"),
        special("project_roots", "write", ".codex"),
        path_entry("/w/.agents", "write"),
        path_entry("/w/.git/worktrees/wt", "write"),
    ]
    plan = compile_on(host, managed(entries, roots=["/w", "/wt"]))
    for path in (
        "/w/.git",
        "/w/.git/hooks",
        "/w/.codex",
        "/w/.agents",
        "/wt/.git",
        "/w/.git/worktrees/wt",
        "/w/.git/worktrees/wt/objects",
    ):
        assert plan.access_of(path) == "read", path
        assert effective_access(plan.mounts(), path) == "read", path
    assert plan.access_of("/w") == plan.access_of("/wt") == "write"
    assert {"/w/.git", "/w/.codex", "/w/.agents", "/wt/.git"} <= set(plan.protected)


@pytest.mark.parametrize("gitdir", ["/store/wt", "../store/wt"])
def test_the_dir_a_git_file_names_is_read_only(gitdir: str) -> None:
    """2. A worktree's .git file names its git dir elsewhere; where that dir is
    writable by another grant, it (and what is below it) becomes read-only."""
    host = FakeHost({"/wt/.git": gitfile(gitdir), "/store/wt/HEAD": FILE, "/store/other": DIR})
    entries = [special("project_roots", "write"), path_entry("/store", "write")]
    plan = compile_on(host, managed(entries), cwd="/wt")
    assert plan.access_of("/wt") == plan.access_of("/store/other") == "write"
    for path in ("/wt/.git", "/store/wt", "/store/wt/HEAD"):
        assert plan.access_of(path) == "read", path
        assert effective_access(plan.mounts(), path) == "read", path
    assert {"/wt/.git", "/store/wt"} <= set(plan.protected)


def test_the_dir_a_git_file_names_is_protected_below_too() -> None:
    """2. A worktree's .git file names a directory that is read-only here; an entry
    granting write below that directory must not make it writable either."""
    host = FakeHost(
        {
            "/wt/.git": gitfile("../main/.git/worktrees/wt"),
            "/main/.git/worktrees/wt/logs": DIR,
        }
    )
    entries = [
        special("project_roots", "write"),
        path_entry("/main", "read"),
        path_entry("/main/.git/worktrees/wt/logs", "write"),
    ]
    plan = compile_on(host, managed(entries), cwd="/wt")
    assert plan.access_of("/wt") == "write"
    assert plan.access_of("/main/.git/worktrees/wt") == "read"
    assert plan.access_of("/main/.git/worktrees/wt/logs") != "write"


def test_protected_names_are_only_those_at_the_top_of_a_writable_root() -> None:
    host = FakeHost({"/w/sub/.git": DIR, "/r/.git": DIR})
    plan = compile_on(host, managed([special("project_roots", "write"), path_entry("/r", "read")]))
    assert PROTECTED_NAMES == (".git", ".codex", ".agents")
    assert plan.access_of("/w/sub/.git") == "write"
    assert plan.access_of("/r/.git") == "read"
    assert not {"/w/sub/.git", "/r/.git"} & set(plan.protected)


def test_a_symlink_in_a_writable_root_does_not_open_its_target() -> None:
    """4. /w/etc → /etc: binding /w writable leaves /etc as its own grant says."""
    host = FakeHost(
        {"/w/etc": link("/etc"), "/w/rel": link("../srv"), "/etc/passwd": FILE, "/srv": DIR}
    )
    entries = [special("root", "read"), special("project_roots", "write")]
    plan = compile_on(host, managed(entries))
    for path in ("/etc", "/etc/passwd", "/srv"):
        assert plan.access_of(path) == "read"
        assert effective_access(resolved(plan.mounts(), host), path) == "read"
    assert plan.access_of("/w") == "write"


def test_a_grant_on_a_symlink_grants_its_real_target() -> None:
    """4. Writing through /w/out → /data: the grant (and its bind) is /data itself,
    and the link is recreated where its directory is not otherwise visible."""
    host = FakeHost(
        {"/w/out": link("/data"), "/data/x": FILE, "/bin": link("usr/bin"), "/usr/bin": DIR}
    )
    entries = [path_entry("/w/out", "write"), special("minimal", "read")]
    plan = compile_on(host, managed(entries))
    assert granted(plan) == {
        "/data": "write",
        "/usr": "read",
        "/usr/bin": "read",
    }
    assert plan.access_of("/data/x") == "write"
    assert plan.access_of("/w") == "deny"
    assert ("/bin", "/usr/bin") in plan.symlinks
    assert ("/w/out", "/data") in plan.symlinks
    mounts = plan.mounts()
    assert Mount("symlink", "/bin", "/usr/bin") in mounts
    assert Mount("bind", "/data") in mounts


def test_a_dangling_symlink_grants_nothing() -> None:
    """A grant names only what exists: a link to nothing would have the launcher bind
    (or open for Landlock) a missing path, and every start would fail."""
    host = FakeHost({"/w/gone": link("/nowhere/x"), "/w/chain": link("/w/gone"), "/tmp": DIR})
    entries = [
        path_entry("/w/gone", "write"),
        path_entry("/w/chain", "deny"),
        glob_entry("/w/*", "read"),
        special("tmpdir", "write"),
        special("slash_tmp", "write"),
    ]
    plan = compile_on(host, managed(entries), env={"TMPDIR": "/w/gone"})
    assert granted(plan) == {"/tmp": "write"}
    assert plan.symlinks == ()


@pytest.mark.parametrize(
    ("first", "second"),
    [("write", "deny"), ("deny", "write"), ("write", "none"), ("read", "write"), ("write", "read")],
)
def test_the_more_restrictive_of_two_grants_on_one_path_wins(first: str, second: str) -> None:
    host = FakeHost({"/w/a": DIR, "/w/link": link("/w/a")})
    plan = compile_on(host, managed([path_entry("/w/a", first), path_entry("/w/link", second)]))
    want = max(("deny" if a == "none" else a for a in (first, second)), key=_ORDER.index)
    assert plan.access_of("/w/a") == want
    assert effective_access(plan.mounts(), "/w/a") == want


def test_mounts_start_with_the_root_then_dev_and_proc() -> None:
    host = FakeHost({"/dev/null": FILE, "/proc/1": DIR, "/w/f": FILE, "/tmp": DIR})
    entries = [
        special("slash_tmp", "write"),
        special("root", "read"),
        path_entry("/dev", "write"),
        path_entry("/proc", "read"),
        path_entry("/w/f", "deny"),
    ]
    mounts = compile_on(host, managed(entries)).mounts()
    assert mounts[:3] == [Mount("ro-bind", "/"), Mount("dev", "/dev"), Mount("proc", "/proc")]
    assert [m.path for m in mounts].count("/dev") == 1
    assert [m.path for m in mounts].count("/proc") == 1
    assert Mount("mask", "/w/f", is_dir=False) in mounts
    assert Mount("bind", "/tmp") in mounts
    # No root grant: dev and proc come first.
    mounts = compile_on(host, managed([special("slash_tmp", "write")])).mounts()
    assert [m for m in mounts if m.kind != "guard"] == [
        Mount("dev", "/dev"),
        Mount("proc", "/proc"),
        Mount("bind", "/tmp"),
    ]


def test_special_kinds_name_their_paths() -> None:
    host = FakeHost(
        {p: DIR for p in ("/usr", "/etc", "/lib", "/tmp", "/t", "/w/a", "/r1/a", "/r2", "/x")}
    )
    assert {"/usr", "/bin", "/etc", "/dev"} <= set(MINIMAL_PATHS)
    assert any(p.startswith("/lib") for p in MINIMAL_PATHS)

    def names(
        entry: wire.FileSystemEntry, cwd: str = "/w", roots: list[str] | None = None
    ) -> set[str]:
        plan = compile_on(host, managed([entry], roots=roots), cwd=cwd, env={"TMPDIR": "/t/"})
        return set(granted(plan))

    assert names(special("root", "read")) == {"/"}
    assert names(special("minimal", "read")) == {"/usr", "/etc", "/lib"}
    assert names(special("slash_tmp", "write")) == {"/tmp"}
    assert names(special("tmpdir", "write")) == {"/t"}
    assert names(special("project_roots", "write")) == {"/w"}
    assert names(special("project_roots", "write", "a")) == {"/w/a"}
    assert names(special("project_roots", "write", "./a/")) == {"/w/a"}
    assert names(special("project_roots", "write"), cwd="/x") == {"/x"}
    assert names(special("project_roots", "write", "a"), roots=["/r1", "/r2"]) == {"/r1/a"}
    assert names(special("project_roots", "write"), roots=["/r1", "/r2"]) == {"/r1", "/r2"}
    assert names(glob_entry("/r*/a", "read")) == {"/r1/a"}
    assert names(path_entry("/nowhere", "write")) == set()


@pytest.mark.parametrize("tmpdir", [None, "", "relative/tmp", "tmp"])
def test_tmpdir_grants_only_an_absolute_tmpdir(tmpdir: str | None) -> None:
    host = FakeHost({"/tmp": DIR, "/w/relative/tmp": DIR, "/w/tmp": DIR})
    env = {} if tmpdir is None else {"TMPDIR": tmpdir}
    plan = compile_on(host, managed([special("tmpdir", "write")]), env=env)
    assert plan.grants == ()


def test_unknown_special_kind_grants_nothing() -> None:
    """A kind the sender did not know travels as ``unknown`` (with its ``path``) and
    grants nothing, whatever its path, subpath or access."""
    host = FakeHost({"/w/a": DIR, "/home/u": DIR})
    unknown = [
        {"kind": "unknown", "path": "/home/u"},
        {"kind": "unknown", "path": "file:///w", "subpath": "a"},
        {"kind": "unknown"},
    ]
    message = {
        "permissions": {
            "type": "managed",
            "network": "restricted",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "special", "value": value}, "access": "write"}
                    for value in unknown
                ],
            },
        },
        "windowsSandboxLevel": "disabled",
    }
    intent = msgspec.json.decode(msgspec.json.encode(message), type=wire.SandboxIntent)
    plan = compile_on(host, intent)
    assert plan.grants == ()
    assert plan.access_of("/w/a") == plan.access_of("/home/u") == "deny"
    # The wire refuses any other kind; the compiler, given one anyway, grants nothing.
    assert compile_on(host, managed([special("home_dir", "write", "a")])).grants == ()


def test_old_spellings_mean_the_new_ones() -> None:
    """``none`` is ``deny``; ``current_working_directory`` is ``project_roots``."""
    host = FakeHost({"/w/a/b": FILE, "/w/.git": DIR, "/r/a": DIR})
    for roots in (None, ["/r"]):
        for subpath in (None, "a"):
            new = compile_on(
                host, managed([special("project_roots", "write", subpath)], roots=roots)
            )
            old = compile_on(
                host,
                managed([special("current_working_directory", "write", subpath)], roots=roots),
            )
            assert old == new and new.grants
    deny = compile_on(host, managed([special("root", "write"), path_entry("/w/a", "deny")]))
    none = compile_on(host, managed([special("root", "write"), path_entry("/w/a", "none")]))
    assert none == deny
    assert none.access_of("/w/a/b") == "deny"
    assert Mount("mask", "/w/a") in none.mounts()


def test_sandbox_cwd_and_workspace_roots_replace_the_request_cwd() -> None:
    host = FakeHost({"/w": DIR, "/s/a": DIR, "/r": DIR})
    entries = [special("project_roots", "write", "a"), special("project_roots", "read")]
    plan = compile_on(host, managed(entries, cwd="/s/"), cwd="/w")
    assert plan.cwd == "/s"
    assert plan.access_of("/s/a") == "write" and plan.access_of("/s") == "read"
    assert plan.access_of("/w") == "deny"
    plan = compile_on(host, managed(entries, cwd="/s", roots=["/r"]), cwd="/w")
    assert plan.cwd == "/s"
    assert plan.access_of("/r") == "read" and plan.access_of("/s") == "deny"


@pytest.mark.parametrize(
    ("request_cwd", "cwd"),
    [("/w/./x/", "/w/x"), ("//w", "/w"), ("//Xw//a", "/Xw/a"), ("///w", "/w"), ("a/./b", "a/b")],
)
def test_the_plans_cwd_is_the_request_cwd_normalized(request_cwd: str, cwd: str) -> None:
    """``normpath``, and a leading ``//`` made ``/`` (only the slashes go); a relative
    cwd (the daemon sends none) is not made absolute."""
    host = FakeHost({})
    intent = intent_of(wire.ProfileExternal(network="restricted"))
    plan = compile_plan(intent, request_cwd=request_cwd, env={}, facts=host)
    assert plan == ConfinementPlan("unrestricted", "restricted", (), cwd=cwd)


def test_readable_and_writable_roots() -> None:
    grants = (Grant("/a", "write"), Grant("/b", "read"), Grant("/c", "deny"), Grant("/d", "read"))
    plan = ConfinementPlan("restricted", "restricted", grants)
    assert plan.readable_roots() == ["/a", "/b", "/d"]
    assert plan.writable_roots() == ["/a"]


def test_a_later_grant_on_the_same_path_decides_as_its_mount_does() -> None:
    """A compiled plan has one grant per path; handed two, ``access_of`` takes the
    later one, as :meth:`ConfinementPlan.mounts` (the more restrictive last) does when
    the later is the more restrictive."""
    plan = ConfinementPlan("restricted", "restricted", (Grant("/a", "write"), Grant("/a", "deny")))
    for path in ("/a", "/a/x"):
        assert plan.access_of(path) == "deny", path
        assert effective_access(plan.mounts(), path) == "deny", path


def test_effective_access_skips_dev_proc_and_symlink_steps_and_reads_guards() -> None:
    mounts = [
        Mount("ro-bind", "/"),
        Mount("dev", "/dev"),
        Mount("proc", "/proc"),
        Mount("symlink", "/bin", "/usr/bin"),
        Mount("bind", "/w"),
        Mount("guard", "/w/.codex"),
        Mount("mask", "/w/secret"),
    ]
    assert effective_access(mounts, "/dev/null") == "read"
    assert effective_access(mounts, "/bin") == effective_access(mounts, "/bin/ls") == "read"
    assert effective_access(mounts, "/w/x") == "write"
    assert (
        effective_access(mounts, "/w/.codex") == effective_access(mounts, "/w/.codex/a") == "read"
    )
    assert effective_access(mounts, "/w/secret/k") == "deny"
    assert effective_access(mounts[1:4], "/bin") == "deny"


def test_absent_codex_and_agents_are_guarded_in_each_root_still_writable() -> None:
    """An absent .codex or .agents at the top of a writable root gets a read-only guard;
    not .git (``git init`` is ordinary work), not in a read-only root, not in a root
    made read-only by protection, not where the name exists."""
    host = FakeHost({"/w/src": DIR, "/w/.git/hooks": DIR, "/v": DIR, "/r": DIR})
    entries = [
        special("project_roots", "write"),
        path_entry("/r", "read"),
        path_entry("/w/.git/hooks", "write"),
    ]
    plan = compile_on(host, managed(entries, roots=["/w", "/v"]))
    absent = {"/w/.codex", "/w/.agents", "/v/.codex", "/v/.agents"}
    assert plan.absent == absent
    assert plan.protected == tuple(sorted(absent | {"/w/.git"}))
    mounts = plan.mounts()
    for path in absent:
        assert plan.access_of(path) == effective_access(mounts, path) == "read", path
        assert Mount("guard", path) in mounts
    assert Mount("ro-bind", "/w/.git") in mounts
    assert plan.access_of("/w/.git/hooks") == "read"
    assert plan.access_of("/v/.git") == plan.access_of("/w/src") == "write"
    assert {g.path for g in plan.grants} == {"/w", "/v", "/r", "/w/.git", "/w/.git/hooks"} | absent
    root = compile_on(host, managed([special("root", "write")]))
    assert root.absent == {"/.codex", "/.agents"}


@pytest.mark.parametrize(
    ("name", "target"),
    [(".codex", "/srv/.codex"), (".codex", "/cfg"), (".git", "/repo/.git"), (".agents", "/w/a")],
)
def test_a_protected_name_that_is_a_link_in_a_writable_root_is_refused(
    name: str, target: str
) -> None:
    """A read-only mount lands on the link's target, and the link itself stays in a
    writable directory: the command could unlink it and make its own ``.codex``. So
    the intent cannot be enforced (a dangling link's target was once granted read
    though missing, so bwrap refused every start; a link to a real directory left the
    name replaceable)."""
    host = FakeHost({f"/w/{name}": link(target), "/srv": DIR, "/cfg": DIR, "/repo/.git": DIR})
    entries = [special("project_roots", "write"), path_entry("/srv", "write")]
    with pytest.raises(Unenforceable) as raised:
        compile_on(host, managed(entries))
    assert str(raised.value) == (
        f"/w/{name} is a symlink in a writable root: the command could replace it "
        f"with its own {name}, so it cannot be kept read-only"
    )


def test_a_link_below_a_read_only_root_is_no_concern() -> None:
    """The same link where its directory is not writable cannot be replaced."""
    host = FakeHost({"/r/.codex": link("/cfg"), "/cfg": DIR})
    plan = compile_on(host, managed([path_entry("/r", "read"), path_entry("/cfg", "write")]))
    assert plan.access_of("/r/.codex") == "read"
    assert plan.access_of("/cfg") == "write"


@POLICY_SETTINGS
@given(scenarios())
def test_a_symlinked_protected_name_is_refused(case: Scenario) -> None:
    """Refused exactly when a protected name at the top of a writable root is a link."""
    symlinked = case.expected().symlinked
    try:
        compile_on(case.host, case.intent, cwd=case.request_cwd, env=case.env)
    except Unenforceable as refused:
        assert any(str(refused).startswith(f"{path} is a symlink") for path in symlinked)
    else:
        assert not symlinked


def test_a_file_granted_write_gets_no_guards_inside_it() -> None:
    """A write grant on a file is no root to guard names in: guards there would be
    mount points bwrap cannot make (NotADirectoryError) and Landlock refuses. A
    directory root granted after it still gets its guards."""
    host = FakeHost({"/w/f": FILE, "/d": DIR})
    plan = compile_on(host, managed([path_entry("/w/f", "write"), path_entry("/d", "write")]))
    assert plan.access_of("/w/f") == "write"
    assert plan.absent == frozenset({"/d/.codex", "/d/.agents"})
    assert plan.protected == ("/d/.agents", "/d/.codex")


def test_of_two_grants_on_one_path_the_more_restrictive_decides_in_either_order() -> None:
    """The module's rule, as ``mounts()`` applies it (the most restrictive mounted last)."""
    for grants in [
        (Grant("/p", "deny"), Grant("/p", "write")),
        (Grant("/p", "write"), Grant("/p", "deny")),
        (Grant("/p", "read"), Grant("/p", "write")),
    ]:
        plan = ConfinementPlan("restricted", "restricted", grants)
        expected = "read" if grants[0].access == "read" else "deny"
        assert plan.access_of("/p") == expected
        assert plan.access_of("/p/below") == expected
        assert plan.mounts()[-1].path == "/p"


def test_only_a_git_file_names_a_directory_to_protect() -> None:
    """A .codex file whose first line reads ``gitdir: …`` is protected itself; the
    directory it names is not (the host's gitdir_of reads any file)."""
    host = FakeHost({"/w/.codex": gitfile("/store/x"), "/store/x": DIR})
    entries = [special("project_roots", "write"), path_entry("/store", "write")]
    plan = compile_on(host, managed(entries))
    assert plan.access_of("/w/.codex") == "read"
    assert plan.access_of("/store/x") == "write"
    assert "/store/x" not in plan.protected


def test_the_dir_a_git_file_names_is_listed_protected_only_where_writable() -> None:
    host = FakeHost(
        {"/wt/.git": gitfile("../main/.git/worktrees/wt"), "/main/.git/worktrees/wt/HEAD": FILE}
    )
    entries = [special("project_roots", "write"), path_entry("/main", "read")]
    plan = compile_on(host, managed(entries), cwd="/wt")
    assert plan.access_of("/main/.git/worktrees/wt") == "read"
    assert plan.protected == ("/wt/.agents", "/wt/.codex", "/wt/.git")


# --- malformed and unenforceable intents ----------------------------------------------

ENTRY = "sandbox.permissions.file_system.entries"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (path_entry("relative/x", "read"), f"{ENTRY}[1].path.path"),
        (
            wire.FileSystemEntry(path=wire.FileSystemPathEntry(path="file:x"), access="read"),
            f"{ENTRY}[1].path.path",
        ),
        (
            wire.FileSystemEntry(path=wire.FileSystemPathEntry(path="/w/x"), access="read"),
            f"{ENTRY}[1].path.path",
        ),
        (
            wire.FileSystemEntry(path=wire.FileSystemPathEntry(path="https://h/w"), access="write"),
            f"{ENTRY}[1].path.path",
        ),
        (
            wire.FileSystemEntry(path=wire.FileSystemPathEntry(path="file://h/w"), access="write"),
            f"{ENTRY}[1].path.path",
        ),
        (glob_entry("w/*", "read"), f"{ENTRY}[1].path.pattern"),
        (special("project_roots", "write", "/etc"), f"{ENTRY}[1].path.value.subpath"),
        (special("project_roots", "write", ".."), f"{ENTRY}[1].path.value.subpath"),
        (special("project_roots", "write", "a/../../etc"), f"{ENTRY}[1].path.value.subpath"),
        (special("tmpdir", "write", "a/.."), f"{ENTRY}[1].path.value.subpath"),
        (special("project_roots", "write", "a\0b"), f"{ENTRY}[1].path.value.subpath"),
    ],
)
def test_a_malformed_entry_is_a_policy_error_naming_its_field(
    bad: wire.FileSystemEntry, field: str
) -> None:
    host = FakeHost({"/w/a": DIR})
    with pytest.raises(PolicyError) as raised:
        compile_on(host, managed([special("root", "read"), bad]))
    assert field in str(raised.value)


def test_relative_path_from_the_host_is_a_policy_error() -> None:
    """The compiler itself refuses a relative path, whatever the host's URI parser
    lets through."""

    class Lenient(FakeHost):
        def path_from_uri(self, uri: str, field: str) -> str:
            return unquote(urlsplit(uri).path)

    host = Lenient({"/w": DIR})
    with pytest.raises(PolicyError, match=re.escape(f"{ENTRY}[0].path.path")) as raised:
        compile_on(host, managed([path_entry("w", "read")]))
    assert str(raised.value) == f"{ENTRY}[0].path.path must be an absolute path"
    with pytest.raises(PolicyError, match=re.escape("sandbox.cwd")) as raised:
        compile_on(host, managed([], cwd="w"))
    assert str(raised.value) == "sandbox.cwd must be an absolute path"
    with pytest.raises(PolicyError, match=re.escape("sandbox.workspaceRoots[0]")) as raised:
        compile_on(host, managed([], roots=["w"]))
    assert str(raised.value) == "sandbox.workspaceRoots[0] must be an absolute path"


@pytest.mark.parametrize("bad", ["https://h/w", "file:w", "/w", "file://other/w", "file:///w?q"])
def test_a_bad_cwd_or_workspace_root_is_a_policy_error(bad: str) -> None:
    host = FakeHost({"/w": DIR})
    intent = managed([special("project_roots", "write")])
    intent.cwd = bad
    with pytest.raises(PolicyError, match=re.escape("sandbox.cwd")):
        compile_on(host, intent)
    intent = managed([special("project_roots", "write")])
    intent.workspace_roots = [uri("/w"), bad]
    with pytest.raises(PolicyError, match=re.escape("sandbox.workspaceRoots[1]")):
        compile_on(host, intent)


@pytest.mark.parametrize("port", [0, -1, 65536, 1 << 20])
@pytest.mark.parametrize("profile", ["managed", "external"])
def test_a_bad_loopback_port_is_a_policy_error(port: int, profile: str) -> None:
    host = FakeHost({"/w": DIR})
    intent = managed([special("root", "read")])
    if profile == "external":
        intent = intent_of(wire.ProfileExternal(network="restricted"))
    network = wire.ManagedNetwork(loopback_ports=[8080, port])
    with pytest.raises(PolicyError, match=re.escape("managedNetwork.loopbackPorts")) as raised:
        compile_plan(intent, request_cwd="/w", env={}, facts=host, managed_network=network)
    assert str(raised.value) == "managedNetwork.loopbackPorts must hold ports between 1 and 65535"


@pytest.mark.parametrize("ports", [[1], [3128], [65535, 8080]])
def test_loopback_ports_are_unenforceable(ports: list[int]) -> None:
    host = FakeHost({"/w": DIR})
    for intent in (
        managed([special("root", "read")]),
        intent_of(wire.ProfileExternal(network="restricted")),
    ):
        network = wire.ManagedNetwork(loopback_ports=ports, allow_local_binding=True)
        with pytest.raises(Unenforceable, match="loopbackPorts") as raised:
            compile_plan(intent, request_cwd="/w", env={}, facts=host, managed_network=network)
        assert str(raised.value) == (
            "managedNetwork.loopbackPorts (TCP to a loopback proxy) is not supported: "
            "this daemon does not bridge proxy ports into the sandbox's network namespace"
        )


def test_profiles_that_confine_nothing_compile_to_none() -> None:
    host = FakeHost({"/w": DIR})
    for permissions in (
        wire.ProfileDisabled(),
        wire.ProfileExternal(network="enabled"),
    ):
        intent = intent_of(permissions)
        assert compile_plan(intent, request_cwd="/w", env={}, facts=host) is None


@pytest.mark.parametrize(
    ("permissions", "managed_network", "network"),
    [
        (wire.ProfileExternal(network="restricted"), None, "restricted"),
        (wire.ProfileExternal(network="enabled"), wire.ManagedNetwork(), "restricted"),
        (
            wire.ProfileExternal(network="restricted"),
            wire.ManagedNetwork(allow_local_binding=True),
            "local",
        ),
        (
            wire.ProfileManaged(file_system=wire.FileSystemUnrestricted(), network="restricted"),
            None,
            "restricted",
        ),
        (
            wire.ProfileManaged(file_system=wire.FileSystemUnrestricted(), network="enabled"),
            None,
            "enabled",
        ),
    ],
)
def test_profiles_that_confine_only_the_network(
    permissions: wire.PermissionProfile, managed_network: wire.ManagedNetwork | None, network: str
) -> None:
    host = FakeHost({"/w": DIR})
    intent = intent_of(permissions)
    plan = compile_on(host, intent, managed_network=managed_network)
    assert plan.file_system == "unrestricted" and not plan.confines_files
    assert plan.network == network
    assert plan.grants == () and plan.cwd == "/w"
    assert plan.mounts() == []
    assert plan.access_of("/etc/shadow") == "write"


@pytest.mark.parametrize(
    ("requested", "managed_network", "network"),
    [
        ("restricted", None, "restricted"),
        ("enabled", None, "enabled"),
        ("restricted", wire.ManagedNetwork(), "restricted"),
        ("restricted", wire.ManagedNetwork(allow_local_binding=True), "local"),
    ],
)
def test_network_modes_of_a_managed_profile(
    requested: Literal["restricted", "enabled"],
    managed_network: wire.ManagedNetwork | None,
    network: str,
) -> None:
    host = FakeHost({"/w": DIR})
    plan = compile_on(host, managed([], network=requested), managed_network=managed_network)
    assert plan.network == network
    assert plan.confines_files and plan.grants == () and plan.access_of("/w") == "deny"


def test_the_fake_parses_uris_as_the_daemon_does() -> None:
    """The fake's path_from_uri agrees with the daemon's parser (exec_runtime._wire.uris)."""
    from exec_runtime._daemon.paths import path_from_file_uri
    from exec_runtime._daemon.rpc_error import RpcError

    host = FakeHost({})
    for text in [
        "file:///w/a%20b",
        "file://localhost/w//x/",
        "file:///",
        "file:w",
        "file:///w?x",
        "file:///w#x",
        "http://h/w",
        "file://h/w",
        "/w",
        "w",
        "file:///w/%00",
    ]:
        try:
            want: str | None = path_from_file_uri(text, "f")
        except RpcError:
            want = None
        try:
            got: str | None = host.path_from_uri(text, "f")
        except PolicyError as exc:
            assert str(exc).startswith("f URI ")
            got = None
        assert got == want, text


def test_the_modules_are_under_the_sans_io_check() -> None:
    """tests/core/test_no_trio_import.py imports every module pkgutil finds under
    exec_runtime._core in a fresh interpreter and fails on trio: these are found."""
    found = {info.name for info in pkgutil.walk_packages(exec_runtime._core.__path__)}
    assert {"sandbox_policy", "sandbox_denial"} <= found
