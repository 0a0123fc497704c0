"""Which mechanisms can enforce a sandbox here: probed once per process (and bwrap path)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Final, Literal

import attrs

from . import _bwrap, _landlock, _seccomp

log = logging.getLogger("exec_runtime.sandbox")

Mechanism = Literal["bwrap", "landlock"]
MECHANISMS: Final[tuple[Mechanism, ...]] = ("bwrap", "landlock")


@attrs.frozen
class Availability:
    bwrap: _bwrap.Bwrap | None
    landlock_abi: int
    seccomp: _seccomp.SeccompPrograms | None
    reasons: dict[str, str]
    """Why each unavailable mechanism is unavailable."""

    def mechanisms(self, allowed: Sequence[str]) -> list[Mechanism]:
        usable: list[Mechanism] = []
        if self.seccomp is None:
            return usable  # both mechanisms rely on the seccomp program
        if "bwrap" in allowed and self.bwrap is not None:
            usable.append("bwrap")
        if "landlock" in allowed and self.landlock_abi > 0:
            usable.append("landlock")
        return usable


_PROBED: dict[str | None, Availability] = {}
_PROBE_LOCK = threading.Lock()


def probe(bwrap_path: str | None) -> Availability:
    """Probe once per process (and bwrap path): a few milliseconds, run in a thread."""
    with _PROBE_LOCK:
        if bwrap_path not in _PROBED:
            _PROBED[bwrap_path] = _probe(bwrap_path)
        return _PROBED[bwrap_path]


def _probe(bwrap_path: str | None) -> Availability:
    reasons: dict[str, str] = {}
    try:
        programs: _seccomp.SeccompPrograms | None = _seccomp.compile_programs()
    except (ImportError, OSError, RuntimeError) as exc:
        programs = None
        reasons["seccomp"] = f"libseccomp is unavailable ({exc})"
    bwrap, why = _bwrap.probe(bwrap_path)
    if bwrap is None:
        reasons["bwrap"] = why
    abi = _landlock.abi_version()
    if abi == 0:
        reasons["landlock"] = "Landlock is not enabled in this kernel"
    available = Availability(bwrap, abi, programs, reasons)
    log.info(
        "sandbox mechanisms: %s%s",
        ", ".join(available.mechanisms(MECHANISMS)) or "none",
        "".join(f"; {name}: {why}" for name, why in reasons.items()),
    )
    return available
