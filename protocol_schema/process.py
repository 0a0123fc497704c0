"""Process methods and notifications (PROTOCOL.md §4, §5)."""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from ._base import WireStruct
from .sandbox import ManagedNetwork, SandboxIntent, SandboxType

StreamName = Literal["stdout", "stderr", "pty"]
SignalName = Literal["interrupt", "terminate", "kill", "hangup"]
WriteStatus = Literal["accepted", "unknownProcess", "stdinClosed", "starting"]
InheritMode = Literal["all", "none", "core"]

MAX_WRITE_ID_LENGTH: Final = 256
"""The longest ``writeId`` the daemon accepts, in characters; a longer one is -32602
(the daemon remembers 4,096 ids per process, so their length must be bounded)."""
WriteId = Annotated[str, msgspec.Meta(max_length=MAX_WRITE_ID_LENGTH)]


class EnvPolicy(WireStruct, omit_defaults=False):
    """All five members always go on the wire: Codex daemons require them (PROTOCOL §10)."""

    inherit: InheritMode = "all"
    ignore_default_excludes: bool = False
    exclude: list[str] = []
    set: dict[str, str] = {}
    include_only: list[str] = []


class TtySize(WireStruct):
    rows: int
    cols: int


class ProcessStartParams(WireStruct, omit_defaults=False):
    """``env`` and ``tty`` are always sent; the optional members are omitted when unset.

    Absent, null and the default mean the same (PROTOCOL §4), so readers use the
    ``*_value`` properties instead of the raw optional fields.
    """

    process_id: str
    argv: list[str]
    cwd: str
    env: dict[str, str] = {}
    tty: bool = False
    env_policy: EnvPolicy | msgspec.UnsetType | None = msgspec.UNSET
    pipe_stdin: bool | msgspec.UnsetType | None = msgspec.UNSET
    arg0: str | msgspec.UnsetType | None = msgspec.UNSET
    tty_size: TtySize | msgspec.UnsetType | None = msgspec.UNSET
    sandbox: SandboxIntent | msgspec.UnsetType | None = msgspec.UNSET
    enforce_managed_network: bool | msgspec.UnsetType | None = msgspec.UNSET
    managed_network: ManagedNetwork | msgspec.UnsetType | None = msgspec.UNSET

    @property
    def sandbox_value(self) -> SandboxIntent | None:
        return self.sandbox if isinstance(self.sandbox, SandboxIntent) else None

    @property
    def managed_network_value(self) -> ManagedNetwork | None:
        """The managed network, only when ``enforceManagedNetwork`` asks for it."""
        if self.enforce_managed_network is not True:
            return None
        if isinstance(self.managed_network, ManagedNetwork):
            return self.managed_network
        return ManagedNetwork()

    @property
    def env_policy_value(self) -> EnvPolicy | None:
        return self.env_policy if isinstance(self.env_policy, EnvPolicy) else None

    @property
    def pipe_stdin_value(self) -> bool:
        return self.pipe_stdin is True

    @property
    def arg0_value(self) -> str | None:
        return self.arg0 if isinstance(self.arg0, str) else None

    @property
    def tty_size_value(self) -> TtySize | None:
        return self.tty_size if isinstance(self.tty_size, TtySize) else None


class ProcessStartResult(WireStruct, omit_defaults=False):
    process_id: str
    sandbox_type: SandboxType = "none"


class ProcessReadParams(WireStruct):
    process_id: str
    after_seq: int | None = None
    max_bytes: int | None = None
    wait_ms: int | None = None


class ReadChunk(WireStruct):
    seq: int
    stream: StreamName
    chunk: bytes


class ProcessReadResult(WireStruct, omit_defaults=False):
    chunks: list[ReadChunk]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    failure: str | None
    sandbox_denied: bool
    earliest_retained_seq: int | None = None


class ProcessWriteParams(WireStruct, omit_defaults=False):
    """``chunk`` is always sent, even empty: Codex requires it."""

    process_id: str
    write_id: WriteId
    chunk: bytes = b""
    close_stdin: bool = False


class ProcessWriteResult(WireStruct, omit_defaults=False):
    status: WriteStatus


class ProcessSignalParams(WireStruct):
    process_id: str
    signal: SignalName


class ProcessTerminateParams(WireStruct):
    process_id: str


class ProcessTerminateResult(WireStruct, omit_defaults=False):
    running: bool


class ProcessResizeParams(WireStruct):
    process_id: str
    rows: int
    cols: int


class ProcessOutputParams(WireStruct, omit_defaults=False):
    process_id: str
    seq: int
    stream: StreamName
    chunk: bytes


class ProcessExitedParams(WireStruct, omit_defaults=False):
    process_id: str
    seq: int
    exit_code: int
    # UNSET marks a legacy exit without the field; the client then reads once to learn it.
    sandbox_denied: bool | msgspec.UnsetType = msgspec.UNSET


class ProcessClosedParams(WireStruct, omit_defaults=False):
    process_id: str
    seq: int


class ProcessAckParams(WireStruct, omit_defaults=False):
    """**Extension**, client to daemon: every event of the process up to ``seq`` has
    reached the client. Sent only to a daemon whose capabilities say ``processAck``,
    by a client that said ``processAck`` in ``initialize``; the daemon then never
    evicts output the client has not acknowledged (see docs/design.md)."""

    process_id: str
    seq: int
