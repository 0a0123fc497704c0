"""JSON-RPC error codes used by the exec protocol (PROTOCOL.md §2)."""

from __future__ import annotations

from typing import Final

INVALID_REQUEST: Final = -32600
"""Handshake order, unknown process or session, duplicates, malformed JSON, fs input, limits."""
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
NOT_FOUND: Final = -32004
SESSION_ATTACHED: Final = -32010
"""The session is still attached to another connection (retryable)."""

MALFORMED_ID: Final = -1
"""The id used in the reply to a message that could not be parsed."""
