"""``fs/*`` under a sandbox intent (PROTOCOL §8, §11): an operation runs only if the
sandbox would allow it.

The daemon does filesystem work itself, not in a confined child, so the plan is
checked here against the real paths (symlinks resolved) the operation touches: a read
needs the path readable, a write or a removal needs it writable with nothing less
than writable below it (a recursive removal must not delete a read-only ``.git``).
Listings leave out what the sandbox masks. ``fs/open`` under a sandbox is refused, as
Codex does: a handle would outlive the check.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import protocol_schema as wire

from .._core.sandbox_policy import ConfinementPlan, is_within
from .paths import path_from_file_uri
from .rpc_error import RpcError
from .sandbox import SandboxEnforcer

P = TypeVar("P", bound=wire.FsParams)
Need = Literal["read", "write"]
_RANK = {"deny": 0, "read": 1, "write": 2}

_PATHS: dict[str, list[tuple[str, Need]]] = {
    "fs/readFile": [("path", "read")],
    "fs/writeFile": [("path", "write")],
    "fs/createDirectory": [("path", "write")],
    "fs/getMetadata": [("path", "read")],
    "fs/canonicalize": [("path", "read")],
    "fs/readDirectory": [("path", "read")],
    "fs/walk": [("path", "read")],
    "fs/remove": [("path", "write")],
    "fs/copy": [("source_path", "read"), ("destination_path", "write")],
}


def guarded(
    method: str,
    handler: Callable[[Any], Awaitable[Any]],
    enforcer: SandboxEnforcer,
) -> Callable[[Any], Awaitable[Any]]:
    """``handler`` for ``method``, checked against the request's sandbox, if any."""

    async def run(params: wire.FsParams) -> Any:
        intent = params.sandbox_value
        if intent is None:
            return await handler(params)
        if method == "fs/open":
            raise RpcError.invalid_request("fs/open is not supported under a sandbox")
        # No cwd travels with fs/*: project_roots default to the daemon's cwd (what
        # environment/info reports) unless the intent names its cwd or roots.
        facts = await enforcer.facts_for(intent)
        plan = enforcer.plan_for(intent, request_cwd=os.getcwd(), env=os.environ, facts=facts)
        if plan is None or not plan.confines_files:
            return await handler(params)
        for field, need in _PATHS.get(method, []):
            uri = getattr(params, field)
            follows = method != "fs/remove" and _follows(params)
            _check(plan, path_from_file_uri(uri, _camel(field)), need, follows)
        result = await handler(params)
        if isinstance(result, wire.FsWalkResult):
            _drop_masked(plan, path_from_file_uri(params.path), result)  # type: ignore[attr-defined]
        return result

    return run


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def _follows(params: wire.FsParams) -> bool:
    return bool(getattr(params, "follow_symlinks", True))


def _real(path: str, follow: bool) -> str:
    if follow:
        return os.path.realpath(path)
    parent, name = os.path.split(path.rstrip("/") or "/")
    return os.path.join(os.path.realpath(parent), name) if name else "/"


def _check(plan: ConfinementPlan, path: str, need: Need, follow: bool) -> None:
    """``follow``: the operation follows a symlink in the last part (a write through a
    link writes where it points, so that is what must be writable); ``fs/remove``
    removes the link itself."""
    real = _real(path, follow)
    allowed = _RANK[plan.access_of(real)] >= _RANK[need]
    if allowed and need == "write":
        # A write over a tree (recursive remove, copy into it) must not reach a
        # path below that is less than writable (.git, a masked directory).
        allowed = not any(
            g.path != real and is_within(g.path, real) and g.access != "write" for g in plan.grants
        )
    if not allowed:
        what = "readable" if need == "read" else "writable"
        raise RpcError.invalid_request(
            f"permission denied: {path} is not {what} under the request's sandbox"
        )


def _drop_masked(plan: ConfinementPlan, root: str, result: wire.FsWalkResult) -> None:
    """A walk as the sandbox shows it: what a denied directory holds is not there."""
    denied = [g.path for g in plan.grants if g.access == "deny"]
    if not denied:
        return

    def hidden(entry_path: str) -> bool:
        native = (
            path_from_file_uri(entry_path)
            if entry_path.startswith("file:")
            else os.path.join(root, entry_path)
        )
        parent = os.path.realpath(os.path.dirname(native))
        return any(is_within(parent, d) for d in denied)

    result.entries = [e for e in result.entries if not hidden(e.path)]
