"""Enforcing a host's sandbox intent with the OS (PROTOCOL.md §11): the I/O shell
around the pure policy compiler (``_core/sandbox_policy.py``).

:class:`SandboxEnforcer` probes the mechanisms once (bubblewrap, Landlock, the seccomp
programs), turns an intent into a :class:`Confinement` (or refuses it, before anything
is spawned), and at spawn time gives the launcher pieces: an argv prefix and file
descriptors (bwrap), or a pre-exec hook (Landlock). The spawn itself, process groups,
PTYs, signals and the orphan watchdog are the ordinary ones (``_process.py``).
"""

from __future__ import annotations

import glob as globbing
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Final, Literal

import attrs
import trio

from protocol_schema import sandbox as wire

from .._core.sandbox_policy import (
    ConfinementPlan,
    PolicyError,
    Unenforceable,
    compile_plan,
)
from .._errors import RpcError
from .._paths import path_from_file_uri
from . import _bwrap, _landlock, _seccomp

log = logging.getLogger("exec_runtime.sandbox")

Mechanism = Literal["bwrap", "landlock"]
MECHANISMS: Final[tuple[Mechanism, ...]] = ("bwrap", "landlock")
UNENFORCEABLE: Final = "sandbox intent cannot be enforced on this executor: "


MAX_GLOB_MATCHES: Final = 4096
"""A glob entry matching more paths is refused (a mask that covers only some of them
would fail open, and each match is a mount)."""
MAX_ENTRIES: Final = 1024


def restricted_entries(intent: wire.SandboxIntent) -> list[wire.FileSystemEntry]:
    profile = intent.permissions
    if isinstance(profile, wire.ProfileManaged) and isinstance(
        profile.file_system, wire.FileSystemRestricted
    ):
        return profile.file_system.entries
    return []


def glob_patterns(intent: wire.SandboxIntent) -> list[str]:
    entries = restricted_entries(intent)
    return [e.path.pattern for e in entries if isinstance(e.path, wire.FileSystemGlob)]


def expand_glob(pattern: str) -> list[str]:
    """Every existing path ``pattern`` matches; blocking (a worker thread runs it)."""
    matches = list(itertools.islice(globbing.iglob(pattern, recursive=True), MAX_GLOB_MATCHES + 1))
    if len(matches) > MAX_GLOB_MATCHES:
        raise Unenforceable(f"the glob {pattern!r} matches more than {MAX_GLOB_MATCHES} paths")
    return sorted(matches)


class HostFilesystem:
    """The compiler's :class:`~exec_runtime._core.sandbox_policy.HostFacts`, for real.

    Globs come expanded beforehand (``SandboxEnforcer.facts_for``, in a worker thread):
    a pattern can walk a whole tree, which must not stall the event loop."""

    def __init__(self, globs: Mapping[str, list[str]] | None = None) -> None:
        self._globs = dict(globs or {})

    def path_from_uri(self, uri: str, field: str) -> str:
        try:
            return path_from_file_uri(uri, field)
        except RpcError as exc:
            raise PolicyError(exc.message) from None

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def gitdir_of(self, path: str) -> str | None:
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                first = file.readline(4096).strip()
        except OSError:
            return None
        if not first.startswith("gitdir:"):
            return None
        target = first.removeprefix("gitdir:").strip()
        return os.path.normpath(os.path.join(os.path.dirname(path), target))

    def glob(self, pattern: str) -> list[str]:
        if pattern in self._globs:
            return self._globs[pattern]
        return expand_glob(pattern)


@attrs.frozen
class Confinement:
    """How one process will be confined."""

    mechanism: Mechanism
    plan: ConfinementPlan


@attrs.frozen
class LaunchPieces:
    """What the spawn adds for a confined process."""

    prefix: list[str]
    """Put before the command (bwrap and its arguments), or empty."""
    pass_fds: tuple[int, ...]
    preexec: Callable[[], None] | None


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


class SandboxEnforcer:
    """One per daemon: the mechanisms it may use, in order of preference."""

    def __init__(self, allowed: Sequence[str], bwrap_path: str | None = None) -> None:
        self.allowed = tuple(allowed)
        self._bwrap_path = bwrap_path
        self._availability: Availability | None = None
        self._facts = HostFilesystem()

    async def prepare(self) -> None:
        """Probe in a worker thread (bwrap runs twice), so the loop never waits on it."""
        if self._availability is None:
            self._availability = await trio.to_thread.run_sync(probe, self._bwrap_path)

    def availability(self) -> Availability:
        if self._availability is None:
            self._availability = probe(self._bwrap_path)
        return self._availability

    def mechanisms(self) -> list[Mechanism]:
        """What can enforce a sandbox now (``environment/info`` reports it)."""
        if not self.allowed:
            return []
        return self.availability().mechanisms(self.allowed)

    async def facts_for(self, intent: wire.SandboxIntent) -> HostFilesystem:
        """The filesystem facts for ``intent``, its globs expanded in a worker thread."""
        patterns = glob_patterns(intent)[:MAX_ENTRIES]  # more entries: plan_for refuses
        if not patterns:
            return self._facts

        def expand() -> dict[str, list[str]]:
            return {pattern: expand_glob(pattern) for pattern in patterns}

        try:
            return HostFilesystem(await trio.to_thread.run_sync(expand))
        except Unenforceable as exc:
            raise RpcError.invalid_params(UNENFORCEABLE + str(exc)) from None

    def plan_for(
        self,
        intent: wire.SandboxIntent,
        *,
        request_cwd: str,
        env: Mapping[str, str],
        managed_network: wire.ManagedNetwork | None = None,
        facts: HostFilesystem | None = None,
    ) -> ConfinementPlan | None:
        """The compiled plan (None: the intent confines nothing). Raises
        :class:`RpcError` -32602 for a malformed or unenforceable intent."""
        if len(restricted_entries(intent)) > MAX_ENTRIES:
            raise RpcError.invalid_params(
                f"sandbox.permissions.file_system.entries: at most {MAX_ENTRIES} entries"
            )
        try:
            return compile_plan(
                intent,
                request_cwd=request_cwd,
                env=env,
                facts=facts or self._facts,
                managed_network=managed_network,
            )
        except PolicyError as exc:
            raise RpcError.invalid_params(str(exc)) from None
        except Unenforceable as exc:
            raise RpcError.invalid_params(UNENFORCEABLE + str(exc)) from None

    def confinement_for(
        self,
        intent: wire.SandboxIntent,
        *,
        request_cwd: str,
        env: Mapping[str, str],
        managed_network: wire.ManagedNetwork | None = None,
        argv0: str | None = None,
        facts: HostFilesystem | None = None,
    ) -> Confinement | None:
        """How to confine a process (None: the intent confines nothing), choosing the
        mechanism; raises :class:`RpcError` -32602 when none can enforce the plan."""
        plan = self.plan_for(
            intent,
            request_cwd=request_cwd,
            env=env,
            managed_network=managed_network,
            facts=facts,
        )
        if plan is None:
            return None
        try:
            return Confinement(self._choose(plan, intent, argv0, request_cwd), plan)
        except PolicyError as exc:
            raise RpcError.invalid_params(str(exc)) from None
        except Unenforceable as exc:
            raise RpcError.invalid_params(UNENFORCEABLE + str(exc)) from None

    def _choose(
        self, plan: ConfinementPlan, intent: wire.SandboxIntent, argv0: str | None, cwd: str
    ) -> Mechanism:
        usable = self.mechanisms()
        if not usable:
            reasons = self.availability().reasons if self.allowed else {}
            why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
            raise Unenforceable(
                "no sandbox mechanism is available" + (f" ({why})" if why else "")
                if self.allowed
                else "sandboxing is disabled on this daemon (--sandbox-mechanisms none)"
            )
        if plan.confines_files and plan.access_of(os.path.realpath(cwd)) == "deny":
            raise PolicyError(f"cwd {cwd} is not readable under the sandbox")
        if intent.use_legacy_landlock_value and "landlock" in usable:
            usable = ["landlock", *(m for m in usable if m != "landlock")]
        problems: list[str] = []
        for mechanism in usable:
            why_not = self._why_not(mechanism, plan, argv0)
            if why_not is None:
                return mechanism
            problems.append(why_not)
        raise Unenforceable("; ".join(problems))

    def _why_not(
        self, mechanism: Mechanism, plan: ConfinementPlan, argv0: str | None
    ) -> str | None:
        if mechanism == "landlock":
            return _landlock.why_not_expressible(plan)
        bwrap = self.availability().bwrap
        if argv0 is not None and bwrap is not None and not bwrap.supports_argv0:
            return "arg0 under bubblewrap needs bwrap 0.9 or newer (--argv0)"
        return None

    def bind(self, confinement: Confinement) -> BoundLaunch:
        return BoundLaunch(self, confinement)

    @contextmanager
    def launch(self, confinement: Confinement, argv0: str, cwd: str) -> Iterator[LaunchPieces]:
        """The launcher's pieces for one spawn; the fds they hold close on exit (after
        the spawn, whose child holds its own copies)."""
        available = self.availability()
        assert available.seccomp is not None
        program = available.seccomp.for_network(confinement.plan.network)
        with ExitStack() as stack:
            if confinement.mechanism == "bwrap":
                assert available.bwrap is not None
                fd = _seccomp.program_fd(program)
                stack.callback(os.close, fd)
                prefix = available.bwrap.arguments(confinement.plan, fd, argv0, cwd)
                yield LaunchPieces(prefix, (fd,), None)
                return
            ruleset = stack.enter_context(
                _landlock.ruleset(confinement.plan, available.landlock_abi)
            )
            restrict = _landlock.Restrictor(ruleset, _seccomp.LoadableProgram(program))
            yield LaunchPieces([], (ruleset,), restrict)


@attrs.frozen
class BoundLaunch:
    """A confinement with its enforcer: what ``SpawnSpec.launcher`` holds."""

    enforcer: SandboxEnforcer
    confinement: Confinement

    def pieces(self, argv0: str, cwd: str) -> AbstractContextManager[LaunchPieces]:
        return self.enforcer.launch(self.confinement, argv0, cwd)
