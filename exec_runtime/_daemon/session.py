"""A session: a Trio nursery that owns its processes; attach, detach and TTL (PROTOCOL §3)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

import trio

import protocol_schema as wire

from .._core.events import Closed, SeqEvent
from .._core.redact import fingerprint
from .._core.sandbox_denial import EXIT_GRACE_SECONDS
from .._core.sequence import RetentionLimits
from .._wire.sandbox_intent import Sandbox
from .budget import ByteBudget
from .child import DEFAULT_TTY_SIZE, SpawnSpec
from .child_env import DaemonEnvironment
from .config import ServerConfig
from .log_format import bind_log_context
from .managed import ManagedProcess, State
from .metrics import NO_METRICS, DaemonMetrics
from .orphans import WATCHDOG
from .paths import path_from_file_uri
from .rpc_error import RpcError
from .sandbox import HostFilesystem, SandboxEnforcer

log = logging.getLogger("exec_runtime.session")

_DAEMON_ENVIRONMENT = DaemonEnvironment()


class EventSink(Protocol):
    """Where an attached session sends its notifications (a connection)."""

    async def send_process_events(self, process_id: str, events: list[SeqEvent]) -> None: ...

    def probe(self) -> None:
        """Someone else resumes this session: prove this connection is alive (a ping
        that must be answered in ``resume_probe_timeout``) or close it."""

    @property
    def flushed(self) -> bool:
        """Nothing queued for the peer, nor being written to it."""


class Session:
    def __init__(
        self, session_id: str, config: ServerConfig, output_budget: ByteBudget | None = None
    ) -> None:
        self.id = session_id
        self.config = config
        self.output_budget = output_budget
        self.stdin_budget: ByteBudget | None = None
        """The daemon's buffer budget: stdin bytes queued for a child count in it."""
        """The daemon's budget for process output (``daemon_output_bytes``)."""
        self.processes: dict[str, ManagedProcess] = {}
        self.attached: EventSink | None = None
        self._publishing = 0  # publish() calls waiting on the attached connection
        self.acking = False
        """The client attached last acknowledges output (``process/ack``): hold what it
        has not acknowledged instead of evicting it, also while detached."""
        self._limits = RetentionLimits(config.retain_bytes, config.retain_chunks)
        self._ack_window = RetentionLimits(config.ack_window_bytes, config.retain_chunks)
        self._nursery: trio.Nursery | None = None
        self._attachment_changed = trio.Event()
        self._closed = False
        self.refusing_starts: str | None = None
        """Why new processes are refused while the session lives on (a graceful
        shutdown: its processes were just sent SIGTERM)."""
        self._live: set[str] = set()
        """Ids of processes starting or running (not yet closed): the process limit."""
        self._retired: dict[str, ManagedProcess] = {}
        """Closed processes not yet forgotten, oldest closed first: past
        ``max_closed_processes_per_session`` the oldest is forgotten early."""
        self.detached_at: float | None = None
        self.on_detached: Callable[[], None] | None = None
        self.sandbox = SandboxEnforcer(config.sandbox_mechanisms, config.bwrap_path)
        self.metrics: DaemonMetrics = NO_METRICS

    @functools.cached_property
    def fingerprint(self) -> str:
        """What logs call this session: never its id, the resume credential (a hash,
        taken once: every process start binds it to its log context)."""
        return fingerprint(self.id)

    # --- lifetime -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the session's processes until it has been detached for ``detached_ttl``."""
        bind_log_context(session=self.fingerprint)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await self._until_expired()
                log.info(
                    "session %s expired after %gs detached",
                    self.fingerprint,
                    self.config.detached_ttl,
                )
            finally:
                # Expired, closed, or cancelled from outside (or a process task failed):
                # the session ends before its processes are killed and reaped, which
                # takes a while, so no resume and no new process from here on.
                self._end()

    async def _until_expired(self) -> None:
        while True:
            while self.attached is not None:
                await self._attachment_changed.wait()
            with trio.move_on_after(self.config.detached_ttl):
                while self.attached is None:
                    await self._attachment_changed.wait()
            if self.attached is None:
                # Checked after the scope: a resume in the tick the deadline fired
                # keeps the session.
                return

    def close(self) -> None:
        """End the session now: cancelling the nursery kills every process group."""
        self._end()

    def _end(self) -> None:
        self._closed = True  # no resume, no new process from here on
        for managed in self.processes.values():
            if managed.state is State.STARTING:
                # Its spawn runs under the start request, not in the nursery: don't
                # let it hold the session's end (start_process answers it).
                managed.cancel_start()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _changed(self) -> None:
        changed, self._attachment_changed = self._attachment_changed, trio.Event()
        changed.set()
        for managed in self.processes.values():
            if managed.sequencer is not None:
                managed.sequencer.wake_readers()

    def attach(self, sink: EventSink, *, acking: bool = False) -> None:
        self.attached = sink
        self.acking = acking
        self.detached_at = None
        self._changed()

    def detach(self, sink: EventSink) -> None:
        if self.attached is sink:
            self.attached = None
            self.detached_at = trio.current_time()
            self._changed()
            if self.on_detached is not None:
                self.on_detached()

    async def publish(self, process_id: str, events: list[SeqEvent]) -> None:
        if isinstance(events[-1], Closed):  # closed is always the last seq
            self._retire(process_id)
        sink = self.attached
        if sink is not None:
            self._publishing += 1
            try:
                await sink.send_process_events(process_id, events)
            finally:
                self._publishing -= 1

    @property
    def flushed(self) -> bool:
        """Every event recorded so far went out to the attached connection, if any.
        (A sequencer publishes what it records in the same step, so a recorded event
        is either counted in ``_publishing`` or already handed to the connection.)"""
        return self._publishing == 0 and (self.attached is None or self.attached.flushed)

    # --- processes ------------------------------------------------------------------

    def get(self, process_id: str) -> ManagedProcess | None:
        return self.processes.get(process_id)

    def running(self, process_id: str) -> ManagedProcess:
        """The process, or -32600 if unknown or still starting."""
        managed = self.processes.get(process_id)
        if managed is None:
            raise RpcError.invalid_request(f"unknown process id {process_id}")
        if managed.state is State.STARTING:
            raise RpcError.invalid_request(f"process id {process_id} is starting")
        return managed

    def terminate(self, process_id: str) -> bool:
        """``process/terminate``: whether the process was running or starting.

        A start it cancels frees the id at once (the cancelled start winds down on
        its own and kills its child if one was spawned): a start right behind the
        terminate may take the id, and a later terminate finds nothing to end."""
        managed = self.processes.get(process_id)
        if managed is None:
            return False
        if managed.state is State.STARTING:
            managed.cancel_start()
            self._forget(managed)
            return True  # PROTOCOL §4: a starting process counts as running
        return managed.terminate()

    def __iter__(self) -> Iterator[ManagedProcess]:
        return iter(list(self.processes.values()))

    async def start_process(
        self, params: wire.ProcessStartParams, registered: Callable[[], None] | None = None
    ) -> wire.SandboxType:
        """Spawn; return once it runs, with how it is confined. ``registered`` is called
        as soon as the process is known (starting), so requests sent right behind the
        start can find it."""
        # As Codex: a malformed cwd URI fails decoding first (-32602), then an id in use
        # (-32600), and only then a cwd naming no directory (-32603, in _spawn_spec).
        path_from_file_uri(params.cwd, "cwd")
        if params.process_id and params.process_id in self.processes:
            raise RpcError.invalid_request(f"process {params.process_id} already exists")
        facts = None
        if (intent := self._intent_of(params)) is not None:
            await self.sandbox.prepare()  # probes once per daemon, off the event loop
            facts = await self.sandbox.facts_for(intent)  # globs, off the event loop
        spec = self._spawn_spec(params, facts)
        if self._nursery is None or self._closed:
            raise self._ended()
        if self.refusing_starts is not None:
            raise RpcError.invalid_request(self.refusing_starts)
        if params.process_id in self.processes:
            raise RpcError.invalid_request(f"process {params.process_id} already exists")
        limit = self.config.max_processes_per_session
        if len(self._live) >= limit:
            raise RpcError.invalid_request(
                f"process limit reached: a session runs at most {limit} processes at once "
                "(--max-processes-per-session); wait for one to close"
            )
        managed = ManagedProcess(
            params.process_id,
            self._limits,
            self.publish,
            lambda: self.acking,
            self._ack_window,
            self.output_budget,
        )
        managed.metrics = self.metrics
        managed.stdin_budget = self.stdin_budget
        self.processes[params.process_id] = managed
        self._live.add(params.process_id)
        if registered is not None:
            registered()
        try:
            await self._nursery.start(self._own_process, managed, spec)
        except RpcError:
            self._forget(managed)
            if self._closed:  # the session ended while this one was starting
                raise self._ended() from None
            raise
        except BaseException:
            self._forget(managed)
            raise
        if self._closed:
            # The session ended while the child spawned: its task is now in a
            # cancelled nursery, which kills it before it can report an exit or close.
            self._forget(managed)
            raise self._ended()
        return "linuxSeccomp" if spec.sandboxed else "none"

    def _ended(self) -> RpcError:
        return RpcError.invalid_request(f"session {self.id} has ended")

    async def _own_process(
        self,
        managed: ManagedProcess,
        spec: SpawnSpec,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        bind_log_context(session=self.fingerprint, process=managed.process_id)
        try:
            await managed.run(
                spec,
                self.config.closed_ttl,
                self.config._start_delay,
                task_status=task_status,
            )
        except Exception:
            if managed.state is State.STARTING:
                raise  # the start request answers it
            # A bug, or an OS failure nothing handled: it ends this process (its
            # group was killed on the way out), never the session or the daemon. The
            # client is told it ended (exit 137, closed), and reads see that for the
            # closed TTL.
            log.exception("process %s of session %s failed", managed.process_id, self.fingerprint)
            await managed.finish_after_failure()
            await trio.sleep(self.config.closed_ttl)
        finally:
            self._forget(managed)

    def _retire(self, process_id: str) -> None:
        """The process closed: it no longer counts as live, and it is forgotten at its
        closed TTL or, past the cap on closed processes, once it is the oldest closed
        one (each keeps up to ``retain_bytes`` of output, and nothing else bounds how
        many a client that starts processes one after another leaves behind)."""
        self._live.discard(process_id)
        managed = self.processes.get(process_id)
        if managed is None:
            return
        self._retired[process_id] = managed
        limit = self.config.max_closed_processes_per_session
        while len(self._retired) > limit:
            oldest = next(iter(self._retired.values()))
            log.debug(
                "forgetting closed process %s early: more than %d closed processes in "
                "session %s (--max-closed-processes-per-session)",
                oldest.process_id,
                limit,
                self.fingerprint,
            )
            self._forget(oldest)
            oldest.forget()  # ends its closed TTL now

    def _forget(self, managed: ManagedProcess) -> None:
        if self.processes.get(managed.process_id) is managed:
            del self.processes[managed.process_id]
            self._live.discard(managed.process_id)
        if self._retired.get(managed.process_id) is managed:
            del self._retired[managed.process_id]

    def _spawn_spec(
        self, params: wire.ProcessStartParams, facts: HostFilesystem | None = None
    ) -> SpawnSpec:
        if not params.argv:
            raise RpcError.invalid_params("argv must not be empty")
        if not params.process_id:
            raise RpcError.invalid_params("processId must not be empty")
        cwd = path_from_file_uri(params.cwd, "cwd")
        if not os.path.isdir(cwd):
            # A well-formed URI naming no directory: -32603 with the OS error, as Codex
            # (a malformed URI stayed -32602 above); data carries why (ENOENT, ENOTDIR,
            # EACCES) for the client's OSError.
            try:
                os.stat(cwd)
            except OSError as exc:
                failure: OSError = exc
            else:
                failure = NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            error = RpcError.internal(f"cwd {cwd}: {failure.strerror}")
            raise error.with_os_error(failure, cwd) from None
        tty_size = DEFAULT_TTY_SIZE
        if (size := params.tty_size_value) is not None:
            tty_size = (size.rows, size.cols)
            if not all(0 < n <= 0xFFFF for n in tty_size):
                raise RpcError.invalid_params("ttySize rows and cols must be between 1 and 65535")
        if any("\0" in arg for arg in params.argv) or "\0" in (params.arg0_value or ""):
            raise RpcError.invalid_params("argv must not contain NUL bytes")
        policy = params.env_policy_value
        # Only what the client sent can be malformed: the inherited part comes from a
        # real environment, where no name holds '=' and nothing holds NUL.
        overlays = [params.env, policy.set] if policy is not None else [params.env]
        for name, value in (item for overlay in overlays for item in overlay.items()):
            if "=" in name or "\0" in name or "\0" in value:
                raise RpcError.invalid_params(
                    "env names must not contain '=' or NUL, nor values NUL"
                )
        env = _DAEMON_ENVIRONMENT.child_env(params.env, policy)
        launcher = None
        if (intent := self._intent_of(params)) is not None:
            confinement = self.sandbox.confinement_for(
                intent,
                request_cwd=cwd,
                env=env,
                managed_network=params.managed_network_value,
                argv0=params.arg0_value,
                facts=facts,
            )
            launcher = None if confinement is None else self.sandbox.bind(confinement)
        if launcher is None and self.config.require_sandbox:
            raise RpcError.invalid_params(
                "this daemon runs only sandboxed commands (--require-sandbox): "
                "process/start must carry a sandbox intent that confines the command"
            )
        return SpawnSpec(
            argv=list(params.argv),
            cwd=cwd,
            env=env,
            tty=params.tty,
            pipe_stdin=params.pipe_stdin_value and not params.tty,
            arg0=params.arg0_value,
            tty_size=tty_size,
            watch_orphans=self.config.orphan_watchdog,
            launcher=launcher,
            exit_grace=EXIT_GRACE_SECONDS if launcher is not None else 0.0,
        )

    def _intent_of(self, params: wire.ProcessStartParams) -> wire.SandboxIntent | None:
        """The host's intent; else the operator's ``--default-sandbox``; else, for a
        host that asks only for a managed network, that network rule alone."""
        if (intent := params.sandbox_value) is not None:
            return intent
        if self.config.default_sandbox == "read-only":
            return Sandbox.read_only().intent
        if self.config.default_sandbox == "workspace-write":
            return Sandbox.workspace_write().intent
        if params.managed_network_value is not None:
            return wire.SandboxIntent(
                permissions=wire.ProfileExternal(network="restricted"),
                windows_sandbox_level="disabled",
            )
        return None


class SessionRegistry:
    """Every live session; sessions run in the daemon's session nursery."""

    def __init__(
        self, nursery: trio.Nursery, config: ServerConfig, metrics: DaemonMetrics | None = None
    ) -> None:
        self._nursery = nursery
        self.config = config
        self.metrics = metrics or DaemonMetrics(config.meter_provider)
        self.sessions: dict[str, Session] = {}
        self.closing = False
        """Set by a graceful shutdown: no new sessions."""
        self.output_budget = ByteBudget(config.daemon_output_bytes, "output")
        """Process output held, over every session (``_daemon/budget.py``)."""
        self.buffer_budget = ByteBudget(config.daemon_buffer_bytes, "buffers")
        """Requests and replies held, over every connection (``_daemon/connection.py``)."""
        if config.orphan_watchdog:
            WATCHDOG.start()  # now rather than at the first spawn: no surprise fd later

    async def create(self) -> Session:
        if self.closing:
            raise RpcError.invalid_request("the daemon is shutting down")
        limit = self.config.max_sessions
        if len(self.sessions) >= limit:
            raise RpcError.invalid_request(
                f"session limit reached: the daemon serves at most {limit} sessions "
                "(--max-sessions)"
            )
        session = Session(str(uuid.uuid4()), self.config, self.output_budget)
        session.on_detached = self._evict_detached
        session.metrics = self.metrics
        session.stdin_budget = self.buffer_budget
        self.sessions[session.id] = session
        await self._nursery.start(self._own, session)
        return session

    async def _own(
        self, session: Session, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await session.run(task_status=task_status)
        except Exception:
            # Its processes were killed as its nursery unwound: one session's failure
            # must not end the others (the nursery they share) nor the daemon.
            log.exception("session %s failed", session.fingerprint)
        finally:
            self.sessions.pop(session.id, None)

    def resume(self, session_id: str, sink: EventSink, *, acking: bool = False) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session._closed:
            raise RpcError.invalid_request(f"unknown session id {session_id}")
        if session.attached is not None:
            session.attached.probe()  # if it is dead, a retry of this resume succeeds
            raise RpcError(
                wire.errors.SESSION_ATTACHED,
                f"session {session_id} is already attached to another connection",
            )
        session.attach(sink, acking=acking)
        return session

    def _evict_detached(self) -> None:
        """Past ``max_detached_sessions``, end the sessions detached longest ago."""
        limit = self.config.max_detached_sessions
        detached = [
            s
            for s in self.sessions.values()
            if s.attached is None and s.detached_at is not None and not s._closed
        ]
        if len(detached) <= limit:
            return
        detached.sort(key=lambda s: s.detached_at or 0.0)
        for session in detached[: len(detached) - limit]:
            log.info(
                "ending session %s: more than %d detached sessions (--max-detached-sessions)",
                session.fingerprint,
                limit,
            )
            session.close()

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            session.close()
