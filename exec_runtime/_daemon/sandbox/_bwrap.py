"""bubblewrap: the plan as ``bwrap`` arguments around the ordinary spawn.

The command runs in new PID and IPC namespaces (and a new network namespace unless
the network is enabled), with ``--die-with-parent``, so killing the process group we
spawned (bwrap and its child) or bwrap's death takes everything inside with it. Mounts
come from :meth:`ConfinementPlan.mounts`, whose order keeps a later bind from undoing
an earlier read-only one. The seccomp program arrives on a file descriptor.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import attrs

from ..._core.sandbox_policy import ConfinementPlan, Mount


@attrs.frozen
class Bwrap:
    path: str
    supports_argv0: bool
    unprivileged: bool
    """Not root: bwrap needs a user namespace (``--unshare-user``)."""

    def arguments(self, plan: ConfinementPlan, seccomp_fd: int, argv0: str, cwd: str) -> list[str]:
        args = [self.path, "--die-with-parent", "--unshare-pid", "--unshare-ipc"]
        if self.unprivileged:
            args.append("--unshare-user")
        if plan.network != "enabled":
            args.append("--unshare-net")
        if plan.confines_files:
            read_only_after: list[str] = []
            for mount in plan.mounts():
                args += _mount_arguments(mount)
                if mount.kind == "guard" or (mount.kind == "mask" and mount.is_dir):
                    read_only_after.append(mount.path)
            if not any(g.path == "/" for g in plan.grants):
                read_only_after.append("/")  # bwrap's own root is a writable tmpfs
            # Last: a binding below a masked directory must be able to create its mount
            # point first. --remount-ro is not recursive, so those bindings keep theirs.
            for path in reversed(read_only_after):
                args += ["--remount-ro", path]
        else:
            args += ["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        args += ["--chdir", cwd, "--seccomp", str(seccomp_fd)]
        if self.supports_argv0:
            args += ["--argv0", argv0]
        return [*args, "--"]


def _mount_arguments(mount: Mount) -> list[str]:
    if mount.kind == "dev":
        return ["--dev", mount.path]
    if mount.kind == "proc":
        return ["--proc", mount.path]
    if mount.kind == "symlink":
        return ["--symlink", mount.target, mount.path]
    if mount.kind == "bind":
        return ["--bind", mount.path, mount.path]
    if mount.kind == "ro-bind":
        return ["--ro-bind", mount.path, mount.path]
    if mount.kind == "guard" or mount.is_dir:
        # An empty directory, made read-only once all is mounted; for a guard, its
        # mount point is made by the enforcer (``_guards.py``) and removed after.
        return ["--perms", "0555", "--tmpfs", mount.path]
    return ["--ro-bind", "/dev/null", mount.path]


def probe(configured_path: str | None) -> tuple[Bwrap | None, str]:
    """Find bwrap and check that it can build a sandbox here (namespaces may be off,
    or bwrap may lack its setuid bit where unprivileged user namespaces are disabled).
    Returns the mechanism, or None and why not."""
    path = configured_path or shutil.which("bwrap")
    if path is None:
        return None, "bubblewrap (bwrap) is not installed or not on PATH"
    unprivileged = os.geteuid() != 0
    check = [path, "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    if unprivileged:
        check.append("--unshare-user")
    check += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--", "/bin/true"]
    try:
        run = subprocess.run(check, capture_output=True, timeout=10, check=False)
        usage = subprocess.run([path, "--help"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bubblewrap at {path} cannot run: {exc}"
    if run.returncode != 0:
        detail = run.stderr.decode(errors="replace").strip() or f"exit {run.returncode}"
        return None, f"bubblewrap at {path} cannot create a sandbox here: {detail}"
    return Bwrap(path, b"--argv0" in usage.stdout, unprivileged), ""
