"""What logs may say about a credential: a session id is the resume credential (with
the token, whoever holds it can resume a detached session), so logs name a session
by a short fingerprint that does not give the id back."""

from __future__ import annotations

import hashlib


def fingerprint(session_id: str) -> str:
    """The first 8 hex digits of the id's SHA-256: enough to tell a log's sessions
    apart and to match a known id against a log, never enough to resume one."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:8]


def redact(text: str, session_id: str | None) -> str:
    """``text`` with every occurrence of ``session_id`` replaced by its fingerprint."""
    if not session_id:
        return text
    return text.replace(session_id, f"session:{fingerprint(session_id)}")
