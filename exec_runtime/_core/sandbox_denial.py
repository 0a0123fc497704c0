"""Was a sandboxed process stopped by its sandbox? (``sandboxDenied``, PROTOCOL.md §11)

Pure. The scanner is fed every output chunk of a sandboxed process as it is recorded,
so the verdict covers all the output, not only what retention still holds (a client
that acknowledges output lets the daemon drop it long before the exit). It keeps only
a keyword's length of each stream's tail and head, so memory stays constant.
"""

from __future__ import annotations

from typing import Final

from .events import StreamName

DENIAL_KEYWORDS: Final = (
    b"operation not permitted",
    b"permission denied",
    b"read-only file system",
    b"seccomp",
    b"sandbox",
    b"landlock",
    b"failed to write file",
)
NOT_DENIED_CODES: Final = frozenset({2, 126, 127})
"""Usage errors, not executable, not found: a sandbox rarely causes these."""
SIGSYS_EXIT: Final = 128 + 31
"""Killed by SIGSYS: what a seccomp filter that kills does."""
EXIT_GRACE_SECONDS: Final = 0.020
"""After a sandboxed process exits, output still in flight is awaited this long
before the verdict is taken (and the exit published)."""

_OVERLAP: Final = max(len(k) for k in DENIAL_KEYWORDS) - 1


class DenialScanner:
    """Watches one process's output for the denial keywords, case-insensitively."""

    def __init__(self) -> None:
        self._found = False
        self._tails: dict[StreamName, bytes] = {}
        self._stderr_head = b""

    def feed(self, stream: StreamName, data: bytes) -> None:
        if self._found or not data:
            return
        lowered = data.lower()
        if stream == "stderr" and len(self._stderr_head) < _OVERLAP:
            self._stderr_head = (self._stderr_head + lowered)[:_OVERLAP]
        window = self._tails.get(stream, b"") + lowered
        if _has_keyword(window):
            self._found = True
            return
        self._tails[stream] = window[-_OVERLAP:]

    @property
    def keyword_seen(self) -> bool:
        """A keyword in stdout, in stderr, or across the two put together (stdout
        then stderr, as an aggregated output reads)."""
        if self._found:
            return True
        joined = self._tails.get("stdout", b"") + self._stderr_head
        return bool(self._tails.get("stdout")) and _has_keyword(joined)

    def denied(self, exit_code: int) -> bool:
        return classify(exit_code, keyword_seen=self.keyword_seen)


def classify(exit_code: int, *, keyword_seen: bool) -> bool:
    """PROTOCOL §11's table, for a sandboxed process that exited with ``exit_code``."""
    if exit_code == 0:
        return False
    if keyword_seen:
        return True
    if exit_code in NOT_DENIED_CODES:
        return False
    return exit_code == SIGSYS_EXIT


def _has_keyword(text: bytes) -> bool:
    return any(keyword in text for keyword in DENIAL_KEYWORDS)
