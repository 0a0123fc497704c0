"""Sandbox intent → confinement plan (PROTOCOL.md §11). Pure and synchronous.

The compiler resolves a host's permission profile against the workspace roots, the
cwd and the child's environment into a :class:`ConfinementPlan`: for every path, one
access (``write``, ``read`` or ``deny``), and a network mode. What it needs to know of
the filesystem (does a path exist, where does a symlink or a ``.git`` file point)
comes through :class:`HostFacts`, so tests drive it with an in-memory tree.

Meaning of a plan: a path's access is that of the **deepest** grant at or above it
(for two grants on one path, the more restrictive wins); a path under no grant is
``deny``. The launchers (``exec_runtime._daemon.sandbox``) turn the plan into bubblewrap
mounts or a Landlock ruleset; :meth:`ConfinementPlan.mounts` orders the mounts so the
kernel's rule (the last mount at or above a path decides it) gives the same answer.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

import attrs

from protocol_schema import sandbox as wire

Access = Literal["write", "read", "deny"]
NetworkMode = Literal["enabled", "restricted", "local"]
"""``local``: a private network namespace the command may bind and connect in, and
nothing beyond it (``managedNetwork.allowLocalBinding`` without proxy ports)."""
FileSystemMode = Literal["restricted", "unrestricted"]

PROTECTED_NAMES = (".git", ".codex", ".agents")
"""Kept read-only inside every writable root (PROTOCOL §11)."""
GUARDED_WHEN_ABSENT = (".codex", ".agents")
"""Protected names that, absent from a writable root, the command must not create
either (agent configuration a later unsandboxed run would trust). ``.git`` may be
created: ``git init`` in a workspace is ordinary work."""
MINIMAL_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev")
"""``minimal``: what a process needs to start and run ordinary tools."""

_RESTRICTIVENESS: Mapping[Access, int] = {"write": 0, "read": 1, "deny": 2}


class PolicyError(ValueError):
    """A malformed intent: answered ``-32602`` with this message (it names the field)."""


class Unenforceable(ValueError):
    """A well-formed intent this executor cannot enforce: answered ``-32602 sandbox
    intent cannot be enforced on this executor: <why>`` and nothing is spawned."""


class HostFacts(Protocol):
    """What the compiler may ask of the daemon's filesystem."""

    def path_from_uri(self, uri: str, field: str) -> str:
        """An absolute native path, or raise :class:`PolicyError` naming ``field``."""

    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def realpath(self, path: str) -> str:
        """Every symlink resolved (``os.path.realpath``)."""

    def gitdir_of(self, path: str) -> str | None:
        """For a ``.git`` *file* (a worktree or submodule), the absolute directory it
        names (``gitdir: …``); None otherwise."""

    def glob(self, pattern: str) -> list[str]:
        """The existing paths matching an absolute glob pattern."""


@attrs.frozen
class Grant:
    path: str
    access: Access


@attrs.frozen
class Mount:
    """One launcher step. ``kind``: ``bind`` (writable), ``ro-bind``, ``mask`` (an
    empty read-only directory or file in place of ``path``), ``symlink`` (``path`` is
    a link to ``target``), or ``dev``/``proc`` (fresh /dev and /proc)."""

    kind: Literal["bind", "ro-bind", "mask", "guard", "symlink", "dev", "proc"]
    path: str
    target: str = ""
    is_dir: bool = True


@attrs.frozen
class ConfinementPlan:
    file_system: FileSystemMode
    network: NetworkMode
    grants: tuple[Grant, ...]
    """Normalized: absolute real paths, one per path, protected paths applied."""
    symlinks: tuple[tuple[str, str], ...] = ()
    """Granted paths that were symlinks (``/bin`` → ``/usr/bin``): (link, target), so
    a launcher that builds the root from nothing recreates the link."""
    cwd: str = "/"
    protected: tuple[str, ...] = ()
    """The protected paths found inside writable roots (read-only in ``grants``)."""
    masked_files: frozenset[str] = frozenset()
    """Denied paths that are files (masked by an empty file, not an empty directory)."""
    absent: frozenset[str] = frozenset()
    """Guarded names (``GUARDED_WHEN_ABSENT``) missing from a writable root: read-only
    grants on paths that do not exist, which a launcher fills with an empty read-only
    directory (``guard`` mounts) so the command cannot create them."""

    @property
    def confines_files(self) -> bool:
        return self.file_system == "restricted"

    def access_of(self, path: str) -> Access:
        """The plan's meaning: the deepest grant at or above ``path`` decides."""
        if not self.confines_files:
            return "write"
        best: Grant | None = None
        for grant in self.grants:
            if is_within(path, grant.path) and (best is None or _rank(grant) > _rank(best)):
                best = grant
        return best.access if best is not None else "deny"

    def writable_roots(self) -> list[str]:
        return [g.path for g in self.grants if g.access == "write"]

    def readable_roots(self) -> list[str]:
        return [g.path for g in self.grants if g.access != "deny"]

    def mounts(self) -> list[Mount]:
        """The launcher's steps, in an order where a later mount never undoes an
        earlier, more specific one: shallow paths first (a ``--bind /tmp`` after a
        read-only ``/tmp/w/.git`` would silently re-open it), and for one path the most
        restrictive last. /dev and /proc come right after the root."""
        if not self.confines_files:
            return []
        ordered = sorted(
            self.grants, key=lambda g: (_depth(g.path), g.path, _RESTRICTIVENESS[g.access])
        )
        steps: list[Mount] = []
        rest = ordered
        if ordered and ordered[0].path == "/":
            steps.append(self._mount_for(ordered[0]))
            rest = ordered[1:]
        steps += [Mount("dev", "/dev"), Mount("proc", "/proc")]
        for link, target in self.symlinks:
            if self.access_of(posixpath.dirname(link)) == "deny":
                steps.append(Mount("symlink", link, target))
        steps += [self._mount_for(g) for g in rest if g.path not in ("/dev", "/proc")]
        return steps

    def _mount_for(self, grant: Grant) -> Mount:
        if grant.path in self.absent:
            return Mount("guard", grant.path)
        if grant.access == "write":
            return Mount("bind", grant.path)
        if grant.access == "read":
            return Mount("ro-bind", grant.path)
        return Mount("mask", grant.path, is_dir=grant.path not in self.masked_files)


def is_within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalized)."""
    return root == "/" or path == root or path.startswith(root + "/")


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def effective_access(mounts: Iterable[Mount], path: str) -> Access:
    """What a path is after the mounts run in order, by the kernel's rule: the last
    mount at or above the path decides (a later mount over an ancestor hides every
    earlier mount below it). Used by tests to check :meth:`ConfinementPlan.mounts`."""
    access: Access = "deny"
    for mount in mounts:
        if mount.kind in ("dev", "proc", "symlink") or not is_within(path, mount.path):
            continue
        access = {"bind": "write", "ro-bind": "read", "guard": "read", "mask": "deny"}[mount.kind]  # type: ignore[assignment]
    return access


def compile_plan(
    intent: wire.SandboxIntent,
    *,
    request_cwd: str,
    env: Mapping[str, str],
    facts: HostFacts,
    managed_network: wire.ManagedNetwork | None = None,
) -> ConfinementPlan | None:
    """The plan for ``intent``, or None when the profile asks for no confinement
    (``disabled``, or ``external`` with the network enabled).

    ``request_cwd`` is the request's own cwd (a native path); ``env`` the child's
    environment (for ``tmpdir``). Raises :class:`PolicyError` or :class:`Unenforceable`.
    """
    profile = intent.permissions
    cwd = _normal(request_cwd)
    if (sandbox_cwd := intent.cwd_value) is not None:
        cwd = _uri_path(facts, sandbox_cwd, "sandbox.cwd")
    network = _network_mode(profile, managed_network)
    if isinstance(profile, wire.ProfileDisabled):
        return None
    if isinstance(profile, wire.ProfileExternal):
        if network == "enabled":
            return None
        return ConfinementPlan("unrestricted", network, (), cwd=cwd)
    roots = [cwd]
    if root_uris := intent.workspace_roots_value:
        roots = [
            _uri_path(facts, uri, f"sandbox.workspaceRoots[{i}]") for i, uri in enumerate(root_uris)
        ]
    fs = profile.file_system
    if isinstance(fs, wire.FileSystemUnrestricted):
        return ConfinementPlan("unrestricted", network, (), cwd=cwd)
    raw: list[Grant] = []
    for index, entry in enumerate(fs.entries):
        field = f"sandbox.permissions.file_system.entries[{index}]"
        access: Access = "deny" if entry.access == "none" else entry.access
        for path in _paths_of(entry.path, field, roots, env, facts):
            raw.append(Grant(path, access))
    grants, symlinks = _resolve(raw, facts)
    grants, protected, absent = _protect(grants, facts)
    masked_files = frozenset(
        g.path for g in grants if g.access == "deny" and not facts.is_dir(g.path)
    )
    return ConfinementPlan(
        "restricted",
        network,
        tuple(grants),
        tuple(symlinks),
        cwd=cwd,
        protected=tuple(protected),
        masked_files=masked_files,
        absent=frozenset(absent),
    )


def _network_mode(
    profile: wire.PermissionProfile, managed: wire.ManagedNetwork | None
) -> NetworkMode:
    requested = getattr(profile, "network", "enabled")
    if managed is None:
        return "restricted" if requested == "restricted" else "enabled"
    if any(not 0 < port < 65536 for port in managed.loopback_ports):
        raise PolicyError("managedNetwork.loopbackPorts must hold ports between 1 and 65535")
    if managed.loopback_ports:
        raise Unenforceable(
            "managedNetwork.loopbackPorts (TCP to a loopback proxy) is not supported: "
            "this daemon does not bridge proxy ports into the sandbox's network namespace"
        )
    return "local" if managed.allow_local_binding else "restricted"


def _uri_path(facts: HostFacts, uri: str, field: str) -> str:
    return _absolute(facts.path_from_uri(uri, field), field)


def _absolute(path: str, field: str) -> str:
    if not posixpath.isabs(path):
        raise PolicyError(f"{field} must be an absolute path")
    return _normal(path)


def _normal(path: str) -> str:
    """``normpath``, and a leading ``//`` made ``/`` (POSIX leaves ``//`` to the
    system; on Linux it is ``/``)."""
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def _paths_of(
    path: wire.FileSystemPath,
    field: str,
    roots: list[str],
    env: Mapping[str, str],
    facts: HostFacts,
) -> list[str]:
    if isinstance(path, wire.FileSystemPathEntry):
        return [_uri_path(facts, path.path, f"{field}.path.path")]
    if isinstance(path, wire.FileSystemGlob):
        if not posixpath.isabs(path.pattern):
            raise PolicyError(f"{field}.path.pattern must be an absolute glob pattern")
        return [_normal(p) for p in facts.glob(path.pattern)]
    special = path.value
    subpath = special.subpath
    if subpath is not None:
        parts = subpath.split("/")
        if posixpath.isabs(subpath) or ".." in parts or "\0" in subpath:
            raise PolicyError(
                f"{field}.path.value.subpath must be relative and must not contain '..'"
            )
    bases: list[str]
    if special.kind == "root":
        bases = ["/"]
    elif special.kind == "minimal":
        bases = list(MINIMAL_PATHS)
    elif special.kind in ("project_roots", "current_working_directory"):
        bases = list(roots)
    elif special.kind == "tmpdir":
        tmpdir = env.get("TMPDIR", "")
        bases = [_normal(tmpdir)] if posixpath.isabs(tmpdir) else []
    elif special.kind == "slash_tmp":
        bases = ["/tmp"]
    else:
        return []  # an unknown kind grants nothing
    if subpath:
        bases = [_normal(posixpath.join(base, subpath)) for base in bases]
    return bases


def _resolve(raw: list[Grant], facts: HostFacts) -> tuple[list[Grant], list[tuple[str, str]]]:
    """Real paths (a grant on a symlink grants its target: binding the link's own path
    would follow it anyway), only paths that exist, one grant per path (the more
    restrictive of two)."""
    by_path: dict[str, Access] = {}
    symlinks: list[tuple[str, str]] = []
    for grant in raw:
        if not facts.exists(facts.realpath(grant.path)):
            continue
        real = facts.realpath(grant.path)
        if real != grant.path:
            symlinks.append((grant.path, real))
        current = by_path.get(real)
        if current is None or _RESTRICTIVENESS[grant.access] > _RESTRICTIVENESS[current]:
            by_path[real] = grant.access
    return [Grant(path, access) for path, access in by_path.items()], symlinks


def _protect(grants: list[Grant], facts: HostFacts) -> tuple[list[Grant], list[str], list[str]]:
    """``.git`` (and the directory a ``.git`` file names), ``.codex`` and ``.agents``
    at the top of every writable root become read-only, and so does every grant below
    them: a protected path is never writable. Then, at the top of every directory root
    still writable, an absent ``.codex`` or ``.agents`` is guarded (the third list).
    A protected name that is a symlink cannot be kept: :class:`Unenforceable`."""
    plan = ConfinementPlan("restricted", "restricted", tuple(grants))
    protected: set[str] = set()
    for root in plan.writable_roots():
        for name in PROTECTED_NAMES:
            candidate = _child(root, name)
            if not facts.exists(candidate):
                continue
            real = facts.realpath(candidate)
            if real != candidate:  # roots are real paths: the name itself is a link
                # A mount lands on the link's target, and the link stays in a
                # writable directory: the command could unlink it and make its own.
                raise Unenforceable(
                    f"{candidate} is a symlink in a writable root: the command could "
                    f"replace it with its own {name}, so it cannot be kept read-only"
                )
            protected.add(real)
            gitdir = facts.gitdir_of(candidate) if name == ".git" else None
            if gitdir is not None and facts.exists(gitdir):
                real_gitdir = facts.realpath(gitdir)
                # Protected where any of it is writable: as a whole or below (a grant
                # on its logs/, or a root the .git file's directory lies in).
                if any(
                    g.access == "write"
                    and (is_within(g.path, real_gitdir) or is_within(real_gitdir, g.path))
                    for g in grants
                ):
                    protected.add(real_gitdir)
    result = {g.path: g.access for g in grants}
    for path in protected:
        if plan.access_of(path) == "write":
            result[path] = "read"
    for path, access in list(result.items()):
        if access == "write" and any(is_within(path, p) for p in protected):
            result[path] = "read"
    absent: set[str] = set()
    for root in [path for path, access in result.items() if access == "write"]:
        if not facts.is_dir(root):
            continue  # a file granted write has no names inside it to guard
        for name in GUARDED_WHEN_ABSENT:
            candidate = _child(root, name)
            # Grants name existing paths, so none lies between the root and a missing
            # name: the root's write would let the command create it.
            if not facts.exists(candidate):
                absent.add(candidate)
    for path in absent:
        result[path] = "read"
    grants_out = [Grant(p, a) for p, a in result.items()]
    return grants_out, sorted(protected | absent), sorted(absent)


def _rank(grant: Grant) -> tuple[int, int]:
    """Deeper decides; on one path, the more restrictive (as ``mounts()`` orders them)."""
    return _depth(grant.path), _RESTRICTIVENESS[grant.access]


def _child(root: str, name: str) -> str:
    return posixpath.join(root, name)
