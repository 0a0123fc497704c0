"""The comparison both differential suites share (``test_codex_parity.py``, one case per
request sequence, and ``test_codex_stateful.py``, random sequences): sending a step to a
daemon over the raw wire, normalising its reply, comparing the replies as a Codex host
sees them, and :data:`KNOWN`, the one list of deliberate differences, each with its
reason (docs/protocol.md §11 lists them for readers).

Per request: both answer a result or both an error; errors have the same code (messages
differ: Codex sends Rust's ``No such file or directory (os error 2)``, we name the path);
a result has every member Codex sends, with the same JSON type, and the same value once
normalised. Only what legitimately differs is normalised: each daemon's temporary root
(``ROOT``), the session id, and file times (``createdAtMs``, ``modifiedAtMs``). Our
extension members (``earliestRetainedSeq``, ...) may be added.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.wire_client import RawClient

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32004

VOLATILE = frozenset({"createdAtMs", "modifiedAtMs", "sessionId"})
"""Members whose value legitimately differs (compared by type only)."""


@dataclass
class Pair:
    """Codex and our daemon, each with its own copy of the same file tree."""

    urls: dict[str, str]
    roots: dict[str, Path]


# --- sending a step ------------------------------------------------------------------------

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


async def send_step(client: RawClient, root: Path, method: str, params: Any) -> Any | None:
    """One step on ``client``; the normalised reply, or None for a step without one."""
    if method == "@closed":
        reply = await until_closed(client, params)
    elif method == "@notify":
        await client.notify(params)
        return None
    elif method == "@outputs":
        await outputs(client, *params)
        return None
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
    return normalise(reply, root)


# --- comparing replies ------------------------------------------------------------------------


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


def reply_differences(codex: Any, ours: Any, same_message: bool = False) -> list[str]:
    if "error" in codex or "error" in ours:
        if "error" not in codex or "error" not in ours:
            return [f"one error: {codex} (codex) vs {ours} (ours)"]
        if codex["error"]["code"] != ours["error"]["code"]:
            return [f"error code: {codex['error']} (codex) vs {ours['error']} (ours)"]
        if same_message and codex["error"]["message"] != ours["error"]["message"]:
            return [f"message: {codex['error']} (codex) vs {ours['error']} (ours)"]
        return []
    return differences(codex["result"], ours["result"])


# --- the deliberate differences ---------------------------------------------------------------

Expect = int | str | Callable[[list[Any]], bool]
"""An error code of the last reply, ``"ok"`` (a result), or a predicate on all replies."""

Explains = Callable[[str, Any, Any, Any], bool]
"""``(method, params, codex reply, our reply) -> bool``: whether one request of a random
sequence (``test_codex_stateful.py``) differs in this known way."""


@dataclass(frozen=True)
class Known:
    """A deliberate difference: why, and what each daemon answers (asserted)."""

    reason: str
    codex: Expect
    ours: Expect
    only: str | None = None
    """When set, every difference found must be at this member (the rest must agree)."""
    explains: Explains | None = None
    """For the stateful suite: recognises this difference in one request of a random
    sequence (None: that suite never sends such a request)."""


def holds(expect: Expect, replies: list[Any]) -> bool:
    last = replies[-1]
    if callable(expect):
        return expect(replies)
    if expect == "ok":
        return "result" in last
    return "error" in last and last["error"]["code"] == expect


def explained(method: str, params: Any, codex: Any, ours: Any) -> str | None:
    """The id of the :data:`KNOWN` difference that explains this pair of replies."""
    for known_id, known in KNOWN.items():
        if known.explains is not None and known.explains(method, params, codex, ours):
            return known_id
    return None


def _signal_exit(code: int) -> Callable[[list[Any]], bool]:
    def check(replies: list[Any]) -> bool:
        return bool(replies[-1]["result"]["exitCode"] == code)

    return check


def _is_error(reply: Any, code: int) -> bool:
    return "error" in reply and reply["error"]["code"] == code


def _explains_nofollow_read(method: str, params: Any, codex: Any, ours: Any) -> bool:
    # Codex follows the link: the target's content, or the error reaching it gives.
    return (
        method == "fs/readFile"
        and params.get("followSymlinks") is False
        and _is_error(ours, INVALID_REQUEST)
        and _message_has(ours, "followSymlinks is false")
    )


def _explains_nofollow_metadata(method: str, params: Any, codex: Any, ours: Any) -> bool:
    if method != "fs/getMetadata" or params.get("followSymlinks") is not False:
        return False
    if "result" not in codex or "result" not in ours:
        # A broken or looping link: Codex follows it (-32004, -32603 ELOOP); we
        # describe the link.
        return "error" in codex and ours.get("result", {}).get("isSymlink") is True
    return ours["result"]["isSymlink"] is True and not ours["result"]["isDirectory"]


def _explains_broken_links(method: str, params: Any, codex: Any, ours: Any) -> bool:
    if method != "fs/readDirectory" or "result" not in codex or "result" not in ours:
        return False
    neither = [e for e in ours["result"]["entries"] if not (e["isDirectory"] or e["isFile"])]
    rest = [e for e in ours["result"]["entries"] if e not in neither]
    return bool(neither) and not differences(codex["result"]["entries"], rest)


def _message_has(reply: Any, text: str) -> bool:
    return "error" in reply and text in reply["error"]["message"]


def _explains_write_after_exit(method: str, params: Any, codex: Any, ours: Any) -> bool:
    return (
        method == "process/write"
        and ours.get("result") == {"status": "stdinClosed"}
        and (codex.get("result") == {"status": "accepted"} or _is_error(codex, INTERNAL_ERROR))
    )


def _explains_signal_exit(method: str, params: Any, codex: Any, ours: Any) -> bool:
    if method not in ("@closed", "process/read") or "result" not in codex or "result" not in ours:
        return False
    found = differences(codex["result"], ours["result"])
    return (
        bool(found)
        and all(d.startswith(".exitCode") for d in found)
        and codex["result"]["exitCode"] == -1
        and ours["result"]["exitCode"] > 128
    )


def _explains_extension_signal(method: str, params: Any, codex: Any, ours: Any) -> bool:
    return (
        method == "process/signal"
        and params.get("signal") != "interrupt"
        and _is_error(codex, INVALID_PARAMS)
        and "result" in ours
    )


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
        explains=_explains_nofollow_read,
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
        explains=_explains_broken_links,
    ),
    "copy-tree-onto-directory": Known(
        "a recursive fs/copy onto an existing directory: Codex copies into it (merging, "
        "overwriting files); we refuse (-32603 EEXIST): the destination of a tree copy must "
        "not exist. The stateful suite never sends it: the trees would differ from then on",
        "ok",
        INTERNAL_ERROR,
    ),
    "copy-symlink": Known(
        "an fs/copy whose source is a symlink: Codex copies the link itself (to a file, a "
        "directory, or broken; recursive or not); we follow it, as cp does: a file's "
        "content is copied, a directory needs recursive (-32600 here), a broken link is "
        "-32004. The stateful suite never sends it: the trees would differ from then on",
        "ok",
        INVALID_REQUEST,
    ),
    "copy-onto-itself": Known(
        "Codex copies a file onto itself, which truncates it to nothing; we refuse (-32600). "
        "The stateful suite never sends it: the trees would differ from then on",
        "ok",
        INVALID_REQUEST,
    ),
    "getMetadata-symlink-nofollow": Known(
        "followSymlinks: false on a symlink: Codex still describes the target (isFile, size); "
        "we describe the link itself (lstat), as the flag says",
        lambda r: r[-1]["result"]["isFile"] is True,
        lambda r: r[-1]["result"]["isFile"] is False and r[-1]["result"]["isSymlink"] is True,
        explains=_explains_nofollow_metadata,
    ),
    "terminate-running": Known(
        "a death by signal N: Codex mostly reports exitCode -1, we 128+N (PROTOCOL §10)",
        lambda r: r[-1]["result"]["exitCode"] in (-1, 137),
        _signal_exit(137),
        only=".exitCode",
        explains=_explains_signal_exit,
    ),
    "write-after-exit": Known(
        "a process/write to a process that has exited (its stdin a pipe): Codex still "
        "writes, and answers accepted while the pipe takes it (-32603 'failed to write' "
        "once it does not); we answer stdinClosed, whatever the pipe's state",
        lambda r: r[-1]["result"]["status"] == "accepted",
        lambda r: r[-1]["result"]["status"] == "stdinClosed",
        explains=_explains_write_after_exit,
    ),
    "signal-extension": Known(
        "process/signal carries only 'interrupt' in Codex (-32602 for 'terminate', 'kill', "
        "'hangup'); the other three are our extension (docs/protocol.md §4)",
        INVALID_PARAMS,
        "ok",
        explains=_explains_extension_signal,
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
