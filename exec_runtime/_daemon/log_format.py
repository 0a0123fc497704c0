"""The daemon's log output: ``--log-format text`` (the default) or ``json``, one object
per line with ``time``, ``level``, ``logger``, ``message``, and ``session`` (the
fingerprint of ``_core/redact.py``, never the id: it is the resume credential) and
``process`` (a process id) where they apply, plus ``pid`` (the daemon's) and
``exception`` for a logged traceback.

Where they apply comes from context variables bound where a task starts serving one
session or one process (a connection once initialized, a session's task, a process's
task): the tasks those start inherit them, so a record logged anywhere below carries
them without its call site naming them. Nothing else of a record is copied out (an
``extra`` could hold anything): never tokens, never environment values.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Final

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("log_session", default=None)
_PROCESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("log_process", default=None)


def bind_log_context(*, session: str | None = None, process: str | None = None) -> None:
    """Name the session (its fingerprint) and process the current task, and the
    tasks it starts from here on, work for."""
    if session is not None:
        _SESSION.set(session)
    if process is not None:
        _PROCESS.set(process)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        entry: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        if (session := _SESSION.get()) is not None:
            entry["session"] = session
        if (process := _PROCESS.get()) is not None:
            entry["process"] = process
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # A path that is not UTF-8 (surrogate escapes) must not break the line.
        return json.dumps(entry, ensure_ascii=False, default=str).encode(
            "utf-8", "surrogateescape"
        ).decode("utf-8", "replace")


def configure_logging(level: str, log_format: str = "text") -> None:
    """The daemon's root handler: stderr, in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
