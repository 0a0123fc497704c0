"""Enforcing a host's sandbox intent with the OS (PROTOCOL.md §11): the I/O shell
around the pure policy compiler (``_core/sandbox_policy.py``).

:class:`SandboxEnforcer` probes the mechanisms once (bubblewrap, Landlock, the seccomp
programs), turns an intent into a :class:`Confinement` (or refuses it, before anything
is spawned), and at spawn time gives the launcher pieces: an argv prefix and file
descriptors (bwrap), or a pre-exec hook (Landlock). The spawn itself, process groups,
PTYs, signals and the orphan watchdog are the ordinary ones (``_daemon/child.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from functools import partial
from typing import Final

import attrs
import trio

from protocol_schema import sandbox as wire

from ..._core.sandbox_policy import (
    ConfinementPlan,
    PolicyError,
    Unenforceable,
    compile_plan,
)
from ..rpc_error import RpcError
from . import _guards, _landlock, _seccomp
from ._facts import MAX_ENTRIES, HostFilesystem, expand_glob, glob_patterns, restricted_entries
from ._probe import MECHANISMS, Availability, Mechanism, probe

__all__ = [
    "MECHANISMS",
    "Availability",
    "BoundLaunch",
    "Confinement",
    "HostFilesystem",
    "LaunchPieces",
    "SandboxEnforcer",
    "probe",
]

UNENFORCEABLE: Final = "sandbox intent cannot be enforced on this executor: "


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
    release: Callable[[], None] | None = None
    """Run once the process is reaped (guard mount points go, ``_guards.py``)."""


@contextmanager
def _as_invalid_params() -> Iterator[None]:
    """The compiler's refusals as the wire's: -32602, the unenforceable ones prefixed
    as PROTOCOL §11 words them."""
    try:
        yield
    except PolicyError as exc:
        raise RpcError.invalid_params(str(exc)) from None
    except Unenforceable as exc:
        raise RpcError.invalid_params(UNENFORCEABLE + str(exc)) from None


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

        with _as_invalid_params():
            return HostFilesystem(await trio.to_thread.run_sync(expand))

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
        with _as_invalid_params():
            return compile_plan(
                intent,
                request_cwd=request_cwd,
                env=env,
                facts=facts or self._facts,
                managed_network=managed_network,
            )

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
        with _as_invalid_params():
            return Confinement(self._choose(plan, intent, argv0, request_cwd), plan)

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
                guards = _guards.acquire(sorted(confinement.plan.absent))
                with ExitStack() as unwind:  # released here unless the spawn succeeds
                    unwind.callback(_guards.release, guards)
                    yield LaunchPieces(prefix, (fd,), None, partial(_guards.release, guards))
                    unwind.pop_all()
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
