"""The exec protocol's wire contract: every struct, the method registry, codecs and schema.

Nothing here performs I/O. See PROTOCOL.md for the rules these types carry.
"""

from . import errors
from .codec import (
    JSON,
    MSGPACK,
    MSGPACK_SUBPROTOCOL,
    Codec,
    InvalidParams,
    MalformedMessage,
    codec_for_subprotocol,
)
from .envelope import (
    ErrorObject,
    ErrorResponse,
    IncomingMessage,
    Notification,
    Request,
    RequestId,
    Response,
    TraceContext,
)
from .fs import *  # noqa: F403
from .fs import __all__ as _fs_all
from .methods import INITIALIZED, METHODS, NOTIFICATIONS, PROCESS_ACK, MethodSpec
from .process import (
    MAX_WRITE_ID_LENGTH,
    EnvPolicy,
    InheritMode,
    ProcessAckParams,
    ProcessClosedParams,
    ProcessExitedParams,
    ProcessOutputParams,
    ProcessReadParams,
    ProcessReadResult,
    ProcessResizeParams,
    ProcessSignalParams,
    ProcessStartParams,
    ProcessStartResult,
    ProcessTerminateParams,
    ProcessTerminateResult,
    ProcessWriteParams,
    ProcessWriteResult,
    ReadChunk,
    SignalName,
    StreamName,
    TtySize,
    WriteStatus,
)
from .sandbox import *  # noqa: F403
from .sandbox import __all__ as _sandbox_all
from .schema import json_schema, json_schema_text
from .session import (
    EmptyParams,
    EmptyResult,
    EnvironmentInfo,
    EnvironmentStatusResult,
    InitializeParams,
    InitializeResult,
    ShellInfo,
)

__all__ = [
    "errors", "Codec", "JSON", "MSGPACK", "MSGPACK_SUBPROTOCOL", "InvalidParams",
    "MalformedMessage", "codec_for_subprotocol", "ErrorObject", "ErrorResponse",
    "IncomingMessage", "Notification", "Request", "RequestId", "Response", "TraceContext",
    "INITIALIZED", "METHODS", "NOTIFICATIONS", "PROCESS_ACK", "MethodSpec", "EnvPolicy",
    "MAX_WRITE_ID_LENGTH", "InheritMode", "ProcessAckParams", "ProcessClosedParams",
    "ProcessExitedParams", "ProcessOutputParams", "ProcessReadParams",
    "ProcessReadResult", "ProcessResizeParams", "ProcessSignalParams", "ProcessStartParams",
    "ProcessStartResult", "ProcessTerminateParams", "ProcessTerminateResult",
    "ProcessWriteParams", "ProcessWriteResult", "ReadChunk", "SignalName", "StreamName",
    "TtySize", "WriteStatus", "json_schema", "json_schema_text", "EmptyParams", "EmptyResult",
    "EnvironmentInfo", "EnvironmentStatusResult", "InitializeParams", "InitializeResult",
    "ShellInfo", *_fs_all, *_sandbox_all,
]
