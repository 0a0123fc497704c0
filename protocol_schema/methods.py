"""The method and notification registry: one place that names every wire type."""

from __future__ import annotations

from typing import Final

import attrs

from . import fs, process, session


@attrs.frozen
class MethodSpec:
    name: str
    params: type
    result: type
    family: str
    """Named in handshake-order errors: ``exec``, ``filesystem`` or ``environment info``."""


def _spec(name: str, params: type, result: type) -> MethodSpec:
    family = {"process": "exec", "fs": "filesystem", "environment": "environment info"}.get(
        name.split("/")[0], "exec"
    )
    return MethodSpec(name, params, result, family)


METHODS: Final[dict[str, MethodSpec]] = {
    spec.name: spec
    for spec in [
        _spec("initialize", session.InitializeParams, session.InitializeResult),
        _spec("environment/info", session.EmptyParams, session.EnvironmentInfo),
        _spec("environment/status", session.EmptyParams, session.EnvironmentStatusResult),
        _spec("process/start", process.ProcessStartParams, process.ProcessStartResult),
        _spec("process/read", process.ProcessReadParams, process.ProcessReadResult),
        _spec("process/write", process.ProcessWriteParams, process.ProcessWriteResult),
        _spec("process/signal", process.ProcessSignalParams, session.EmptyResult),
        _spec(
            "process/terminate", process.ProcessTerminateParams, process.ProcessTerminateResult
        ),
        _spec("process/resize", process.ProcessResizeParams, session.EmptyResult),
        _spec("fs/readFile", fs.FsReadFileParams, fs.FsReadFileResult),
        _spec("fs/writeFile", fs.FsWriteFileParams, session.EmptyResult),
        _spec("fs/createDirectory", fs.FsCreateDirectoryParams, session.EmptyResult),
        _spec("fs/getMetadata", fs.FsGetMetadataParams, fs.FsMetadata),
        _spec("fs/canonicalize", fs.FsCanonicalizeParams, fs.FsCanonicalizeResult),
        _spec("fs/readDirectory", fs.FsReadDirectoryParams, fs.FsReadDirectoryResult),
        _spec("fs/walk", fs.FsWalkParams, fs.FsWalkResult),
        _spec("fs/remove", fs.FsRemoveParams, session.EmptyResult),
        _spec("fs/copy", fs.FsCopyParams, session.EmptyResult),
        _spec("fs/open", fs.FsOpenParams, fs.FsOpenResult),
        _spec("fs/readBlock", fs.FsReadBlockParams, fs.FsReadBlockResult),
        _spec("fs/close", fs.FsCloseParams, session.EmptyResult),
    ]
}

INITIALIZED: Final = "initialized"
PROCESS_ACK: Final = "process/ack"

NOTIFICATIONS: Final[dict[str, type]] = {
    INITIALIZED: session.EmptyParams,
    "process/output": process.ProcessOutputParams,
    "process/exited": process.ProcessExitedParams,
    "process/closed": process.ProcessClosedParams,
    PROCESS_ACK: process.ProcessAckParams,
}
"""Both directions: ``initialized`` and ``process/ack`` go to the daemon, the rest to the
client."""
