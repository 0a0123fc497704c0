"""The fault suite's programs, runner and oracle (``tests/faults/test_fault_suite.py``
generates the programs; ``test_fault_regressions.py`` replays fixed ones).

Event ordering under faults: the real client and daemon, driven by generated programs.

Why programs, not a ``RuleBasedStateMachine``: every rule here is async, and the
whole stack (daemon nursery, client supervisor, pumps, consumers) must live in *one*
Trio run for the length of an example. Hypothesis drives a state machine step by step
from synchronous code, which would mean keeping a Trio guest run alive across steps.
Instead hypothesis generates a :class:`Program` (a fault plan, daemon limits and a
list of steps, each the body of what would have been a rule) and :func:`run_program`
executes it in a single ``trio.run``, under ``trio.fail_after``. The programs shrink
like rule sequences do, and their ``repr`` is valid Python: a failing example notes
``replay(Program(...))``, which you paste into ``tests/test_fault_regressions.py``.

The oracle beside the program (:class:`Proc`) checks, as each event arrives and after
every step:

- per process, published events are contiguous from seq 1, with no duplicate;
- ``Closed`` is published last and nothing follows it; one ``Exited`` before it;
  output after the exit only from a grandchild;
- output per stream is always a prefix of what the process writes, and at the end
  exactly what it wrote (``check_pattern``); or, only if the daemon's retention could
  have evicted unseen output (the process wrote more than ``retain_bytes``, and the
  client does not acknowledge output or its consumer can lag behind its queue), the
  process ends with ``Failed`` ("no longer retained") and the others are unaffected;
- exit codes match: the script's code, or 128+N after signal N, 137 after terminate
  (a signal may lose the race with a natural exit; then the output must be whole);
- a ``cat`` echoes exactly the writes that were accepted, each once, in order;
- no ``process/read`` is sent unless the program can cause a gap or a lag (a drop, a
  partition, a stall, reordering, a consumer that stops reading).

Steps: start a scripted process (chunks, size, pause, exit code, stderr share, a
grandchild) or a ``cat``; write to a cat's stdin, close it; signal; terminate; drop the
connection; partition and heal (the session stays detached meanwhile); stall and
resume the transport (the daemon feels backpressure) or one consumer (it lags and
catches up with reads); sleep; wait until the client received a process's output,
exit or close (to place the next fault there). The plan adds drops after N frames or
at a method, delays, duplicates and reordering. A program runs in memory
(``open_faulty_local``) or, one in four, against a real daemon on a loopback port
behind ``fault_proxy`` (a real WebSocket).

Every step is non-blocking for the driver: process calls run in one *actor* task per
process (in program order for that process), so a stalled transport never deadlocks
the program. Every example runs under ``trio.fail_after``, and a watchdog turns a hang
inside a shielded wait (which no deadline can interrupt) into a failure that shows
every task's stack.

Profiles: the example count is the loaded profile's ``max_examples`` (``ci``: 100,
about 30 s; ``soak``: 5000); the no-fault test runs a quarter of that.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import attrs
import trio
import trio.lowlevel
from hypothesis import event

import exec_runtime
import exec_runtime._client.process as client_process
from exec_runtime import (
    ClientState,
    Closed,
    Event,
    ExecClient,
    ExecRuntimeError,
    Exited,
    Failed,
    ProcessHandle,
    ServerConfig,
    TransportError,
)
from exec_runtime._client.process import StdinClosedError
from exec_runtime.testing import (
    FaultController,
    FaultPlan,
    expected_output,
    fault_proxy,
    open_faulty_local,
    scripted_argv,
)

COST = 4
"""The no-fault test runs the profile's ``max_examples // COST`` (it explores less)."""
EXAMPLE_TIMEOUT = 45.0
"""Every example, setup and teardown included, runs under ``trio.fail_after``."""
SIGNUMS = {"interrupt": 2, "terminate": 15, "kill": 9, "hangup": 1}
CAT = ["cat"]
RETAINED_LOST = "no longer retained"
WAIT_LIMIT = 1.0

# --- the program ---------------------------------------------------------------------


@attrs.frozen
class StartScripted:
    """Start ``scripted_argv(...)``: self-checking output, a chosen exit code."""

    chunks: int = 5
    chunk_size: int = 100
    pause: float = 0.0
    exit_code: int = 0
    stderr_every: int = 0
    grandchild_delay: float = 0.0

    def options(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class StartCat:
    """Start a ``cat`` with a stdin pipe: it echoes every accepted write once."""


@attrs.frozen
class Write:
    target: int  # a cat, by index among the cats started so far (mod their count)
    data: bytes


@attrs.frozen
class CloseStdin:
    target: int  # a cat


@attrs.frozen
class Signal:
    target: int  # any process, by index (mod the count)
    signal: str


@attrs.frozen
class Terminate:
    target: int


@attrs.frozen
class Drop:
    """Cut the connection now; the client recovers the session."""


@attrs.frozen
class Partition:
    """Cut the connection and refuse new ones until Heal: the session is detached."""


@attrs.frozen
class Heal:
    pass


@attrs.frozen
class StallTransport:
    """Stop delivering frames to the client (the daemon feels backpressure)."""


@attrs.frozen
class ResumeTransport:
    pass


@attrs.frozen
class StallConsumer:
    """Stop iterating one process's ``events()``; its queue fills and it lags."""

    target: int


@attrs.frozen
class ResumeConsumer:
    target: int


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class WaitFor:
    """Let time pass until the client has received ``method`` for a process (at most
    ``WAIT_LIMIT``; not at all while nothing can arrive): it places the next fault at
    a chosen point of that process's life, e.g. between its exit and its close."""

    target: int
    method: str


Step = (
    StartScripted
    | StartCat
    | Write
    | CloseStdin
    | Signal
    | Terminate
    | Drop
    | Partition
    | Heal
    | StallTransport
    | ResumeTransport
    | StallConsumer
    | ResumeConsumer
    | Sleep
    | WaitFor
)
FAULT_STEPS = (Drop, Partition, StallTransport, StallConsumer)


CLEAN = FaultPlan()


@attrs.frozen
class Program:
    plan: FaultPlan = CLEAN
    retain_bytes: int = 1 << 20
    queue_max_events: int = client_process.QUEUE_MAX_EVENTS
    """The client's per-process queue bound; a small one makes a stalled consumer lag."""
    steps: tuple[Step, ...] = ()
    transport: str = "memory"
    """``memory``: open_faulty_local; ``websocket``: a real daemon behind fault_proxy."""
    ack_output: bool = True
    """The client acknowledges output (``process/ack``): retention then never loses
    unacknowledged output; without, a process whose gap was evicted fails alone."""

    def consumer_may_lag(self) -> bool:
        """Whether a consumer can fall behind its bounded queue (and read to catch up)."""
        return self.queue_max_events < client_process.QUEUE_MAX_EVENTS or any(
            isinstance(step, StallConsumer) for step in self.steps
        )

    def may_read(self) -> bool:
        """Whether a ``process/read`` can be legitimate: something can open a seq gap
        (a drop, reordering) or make a consumer lag."""
        plan = self.plan
        return (
            plan.drop_after_frames is not None
            or plan.drop_at_method is not None
            or plan.reorder_window > 1
            or any(isinstance(step, FAULT_STEPS) for step in self.steps)
        )


# --- the oracle ----------------------------------------------------------------------


class Violation(AssertionError):
    pass


class Proc:
    """One started process: the actor's record of what was asked and what came back."""

    def __init__(self, index: int, step: StartScripted | StartCat, program: Program) -> None:
        self.index = index
        self.step = step
        self.program = program
        self.is_cat = isinstance(step, StartCat)
        self.handle: ProcessHandle | None = None
        self.start_error: str | None = None
        self.events: list[Event] = []
        self.last_seq = 0
        self.exit_seq: int | None = None
        self.finished = trio.Event()  # events() ended, or the start failed
        self.idle = trio.Event()  # the actor made its last call
        self.gate = trio.Event()  # set: the consumer reads
        self.gate.set()
        self.send, self.receive = trio.open_memory_channel[Step](math.inf)
        self.writes: list[tuple[bytes, str]] = []  # (data, outcome)
        self.written: list[bytes] = []  # every write asked for, in order
        self.closes: list[str] = []
        # (what, outcome) in the order the actor sent them: "write", "close", or a
        # signal name ("kill" for terminate)
        self.control_log: list[tuple[str, str]] = []
        self.signals: list[tuple[str, str]] = []  # (name, outcome)
        self.signals_asked: set[str] = set()
        self.terminates: list[str] = []
        self.out = bytearray()
        self.err = bytearray()

    def __repr__(self) -> str:
        last = self.events[-1] if self.events else None
        return (
            f"<Proc {self.index} {self.step!r} handle={self.handle is not None} "
            f"start_error={self.start_error!r} events={len(self.events)} last={last!r} "
            f"gate={self.gate.is_set()} writes={self.writes} closes={self.closes} "
            f"signals={self.signals} terminates={self.terminates}>"
        )

    def fail(self, message: str) -> None:
        raise Violation(f"process {self.index} ({self.step!r}): {message}")

    # -- what the process may write --

    def expected(self) -> tuple[bytes, bytes]:
        if self.is_cat:
            return b"".join(self.written), b""
        assert isinstance(self.step, StartScripted)
        return expected_output(**self.step.options())

    def eviction_possible(self) -> bool:
        """Whether the daemon's retention can have dropped output of this process.

        With acknowledgements it holds all that did not reach the client, so only a
        consumer that fell behind the client's own queue can miss retained output.
        """
        out, err = self.expected()
        if len(out) + len(err) <= self.program.retain_bytes:
            return False
        return not self.program.ack_output or self.program.consumer_may_lag()

    def killed_maybe(self) -> bool:
        return bool(self.signals_asked) or bool(self.terminates)

    # -- checked as each event arrives --

    def observe(self, event: Event) -> None:
        if self.events and isinstance(self.events[-1], Closed | Failed):
            self.fail(f"{event!r} follows {self.events[-1]!r}")
        self.events.append(event)
        if isinstance(event, Failed):
            return
        if event.seq != self.last_seq + 1:
            self.fail(f"seq {event.seq} published after seq {self.last_seq}")
        self.last_seq = event.seq
        if isinstance(event, Exited):
            if self.exit_seq is not None:
                self.fail(f"a second exit at seq {event.seq}")
            self.exit_seq = event.seq
            if event.sandbox_denied:
                self.fail("sandboxDenied without a sandbox")
        elif isinstance(event, Closed):
            if self.exit_seq is None:
                self.fail(f"closed at seq {event.seq} before any exit")
        else:
            if self.exit_seq is not None and not self._grandchild():
                self.fail(f"output at seq {event.seq} after the exit, and no grandchild")
            (self.err if event.stream == "stderr" else self.out).extend(event.data)
        self.check_prefix()

    def _grandchild(self) -> bool:
        return isinstance(self.step, StartScripted) and self.step.grandchild_delay > 0

    def check_prefix(self) -> None:
        want_out, want_err = self.expected()
        if not want_out.startswith(self.out):
            self.fail(f"stdout is not a prefix of the expected output: {bytes(self.out)[:80]!r}")
        if not want_err.startswith(self.err) and not self._traceback_race():
            self.fail(f"stderr is not a prefix of the expected output: {bytes(self.err)[:80]!r}")

    def _traceback_race(self) -> bool:
        # A SIGINT landing before the script's first line restores SIG_DFL (during the
        # interpreter's start-up) prints a KeyboardInterrupt traceback; maybe not all
        # of it has arrived yet.
        return "interrupt" in self.signals_asked and b"Traceback (most recent" in self.err

    # -- checked at the end --

    def check_final(self) -> None:
        if self.handle is None:
            if self.start_error is None:
                self.fail("the start neither succeeded nor failed")
            return
        if not self.events:
            self.fail("no events at all")
        last = self.events[-1]
        if isinstance(last, Failed):
            if not (self.eviction_possible() and RETAINED_LOST in last.message):
                self.fail(f"failed although nothing it wrote could be evicted: {last.message}")
            return
        if not isinstance(last, Closed):
            self.fail(f"ended without Closed: {last!r}")
        exits = [e for e in self.events if isinstance(e, Exited)]
        code = exits[0].exit_code
        natural = 0 if self.is_cat else self.step.exit_code  # type: ignore[union-attr]
        allowed = {natural} | {128 + SIGNUMS[name] for name in self.signals_asked}
        if self.terminates:
            allowed.add(137)
            if (
                "True" not in self.terminates
                and "ambiguous" not in self.terminates
                and "kill" not in self.signals_asked
            ):
                # Every terminate answered running=False: the exit came first.
                allowed.discard(137)
        out, err = bytes(self.out), bytes(self.err)
        if self._interrupted_at_startup(code, out, err):
            # The script never ran: nothing of its output to check. Checked whatever
            # the allowed codes are: a script whose own exit code is 1 looks the same.
            return
        if code not in allowed:
            self.fail(f"exit code {code}, expected one of {sorted(allowed)}")
        if self.is_cat:
            self._check_cat(code, out, err)
        elif code == natural:
            self._check_scripted_whole(out, err)
        elif not self._traceback_race():
            self.check_prefix()

    def _interrupted_at_startup(self, code: int, out: bytes, err: bytes) -> bool:
        """A SIGINT that lands while the interpreter starts (its own SIGINT handler
        installed, the script's SIG_DFL not yet) fails the start-up itself: exit 1, a
        "Fatal Python error: ... KeyboardInterrupt" on stderr, and no output at all."""
        return (
            "interrupt" in self.signals_asked
            and code == 1
            and not out
            and err.startswith(b"Fatal Python error: ")
            and err.rstrip().endswith(b"KeyboardInterrupt")
        )

    def _ignored_at_startup(self, err: bytes) -> int:
        """The length of an "Exception ignored in: ... KeyboardInterrupt" report that
        opens stderr: a SIGINT that lands while the interpreter runs a callback that
        swallows exceptions (an import lock's weakref callback, during the script's
        first line's imports), before the script restored SIG_DFL. The script then runs
        on as if nothing happened. 0 without an interrupt or such a report."""
        if "interrupt" not in self.signals_asked:
            return 0
        match = _IGNORED_INTERRUPT.match(err)
        return match.end() if match else 0

    def _check_scripted_whole(self, out: bytes, err: bytes) -> None:
        """The leader exited on its own, so it wrote everything; a grandchild may have
        been killed by a later signal to the group."""
        assert isinstance(self.step, StartScripted)
        options = self.step.options()
        want_out, want_err = expected_output(**options)
        leader_out, _ = expected_output(**{**options, "grandchild_delay": 0.0})
        err = err[self._ignored_at_startup(err) :]
        if err != want_err:
            self.fail(f"stderr: {len(err)} bytes, want exactly {len(want_err)}")
        late = out[len(leader_out) :]
        if not out.startswith(leader_out) or late not in (b"", b"<late>"):
            self.fail(f"stdout: {len(out)} bytes, want {len(want_out)}; tail {out[-40:]!r}")
        if late != want_out[len(leader_out) :] and not self.killed_maybe():
            self.fail("the grandchild's output is missing, and nothing killed it")

    def _check_cat(self, code: int, out: bytes, err: bytes) -> None:
        accepted = b"".join(data for data, outcome in self.writes if outcome == "accepted")
        if err:
            self.fail(f"cat wrote to stderr: {err!r}")
        # In the order the actor sent them: writes are accepted until a close is, and
        # refused (stdinClosed) only after a close or a kill.
        closed = killed = False
        for name, outcome in self.control_log:
            if name in ("write", "close"):
                if outcome not in ("accepted", "stdinClosed"):
                    self.fail(f"{name}: {outcome}")
                if outcome == "accepted" and closed and name == "write":
                    self.fail("a write was accepted after stdin was closed")
                if outcome == "stdinClosed" and not (closed or killed):
                    self.fail(f"{name} refused (stdinClosed), but stdin is open")
                closed = closed or (name == "close" and outcome == "accepted")
            else:
                killed = True
        # A cat cannot exit before its stdin is closed, so the first kill the daemon
        # acknowledged before any close ended it (or an earlier one whose outcome is
        # unknown); a terminate before that must have found it running.
        codes: set[int] = set()
        for name, outcome in self.control_log:
            if name == "close":
                break
            if name == "write":
                continue
            if outcome == "False" and not codes:
                self.fail("terminate found the cat not running, but nothing had ended it")
            if outcome in ("ok", "True", "ambiguous"):
                codes.add(128 + SIGNUMS[name])
            if outcome in ("ok", "True"):
                if code not in codes:
                    self.fail(f"exit code {code}, but {name} was delivered first: {codes}")
                break
        if code == 0:
            if out != accepted:
                self.fail(f"cat echoed {out!r}, accepted writes were {accepted!r}")
        elif not accepted.startswith(out):
            self.fail(f"cat echoed {out!r}, not a prefix of the accepted {accepted!r}")


_IGNORED_INTERRUPT = re.compile(
    rb"Exception ignored in: [^\n]*\n"
    rb"Traceback \(most recent call last\):\n"
    rb"(?:  [^\n]*\n)*"
    rb"KeyboardInterrupt:? ?\n"
)


# --- running a program ---------------------------------------------------------------


class Runner:
    def __init__(
        self,
        program: Program,
        client: ExecClient,
        faults: FaultController,
        nursery: trio.Nursery,
    ) -> None:
        self.program = program
        self.client = client
        self.faults = faults
        self.nursery = nursery
        self.procs: list[Proc] = []
        self.cats: list[Proc] = []
        self.errors: list[BaseException] = []

    # -- the driver --

    async def run(self) -> None:
        for number, step in enumerate(self.program.steps):
            await self.step(step)
            await trio.lowlevel.checkpoint()
            self.check(f"after step {number} {step!r}")
        await self.finish()
        self.check("at the end")
        for proc in self.procs:
            proc.check_final()
        self.check_client()

    def check(self, when: str) -> None:
        if self.errors:
            error = self.errors[0]
            raise Violation(f"{when}: {error}") from error

    async def step(self, step: Step) -> None:
        if isinstance(step, StartScripted | StartCat):
            proc = Proc(len(self.procs), step, self.program)
            self.procs.append(proc)
            if proc.is_cat:
                self.cats.append(proc)
            self.nursery.start_soon(self.actor, proc)
            # The next step meets a started process (a start lost in flight is still
            # generated: drop_at_method="process/start", or a stalled transport).
            with trio.move_on_after(WAIT_LIMIT):
                while not (self.faults.partitioned or self.faults.stalled):
                    if proc.handle is not None or proc.finished.is_set():
                        break
                    await trio.sleep(0.001)
        elif isinstance(step, Write | CloseStdin):
            if self.cats:
                proc = self.cats[step.target % len(self.cats)]
                if isinstance(step, Write):
                    proc.written.append(step.data)
                proc.send.send_nowait(step)
        elif isinstance(step, Signal | Terminate):
            if self.procs:
                proc = self.procs[step.target % len(self.procs)]
                if isinstance(step, Signal):
                    proc.signals_asked.add(step.signal)
                proc.send.send_nowait(step)
        elif isinstance(step, StallConsumer):
            if self.procs:
                proc = self.procs[step.target % len(self.procs)]
                if proc.gate.is_set():
                    proc.gate = trio.Event()
        elif isinstance(step, ResumeConsumer):
            if self.procs:
                self.procs[step.target % len(self.procs)].gate.set()
        elif isinstance(step, Drop):
            self.faults.drop()
        elif isinstance(step, Partition):
            self.faults.partition()
        elif isinstance(step, Heal):
            self.faults.heal()
        elif isinstance(step, StallTransport):
            self.faults.stall()
        elif isinstance(step, ResumeTransport):
            self.faults.resume()
        elif isinstance(step, Sleep):
            await trio.sleep(step.seconds)
        elif isinstance(step, WaitFor):
            if self.procs:
                await self.wait_for(self.procs[step.target % len(self.procs)], step.method)
        else:  # pragma: no cover
            raise TypeError(step)

    async def wait_for(self, proc: Proc, method: str) -> None:
        with trio.move_on_after(WAIT_LIMIT):
            while not self.faults.partitioned and not self.faults.stalled:
                if proc.start_error is not None or proc.finished.is_set():
                    return
                if proc.handle is not None and any(
                    d.method == method and d.process_id == proc.handle.process_id
                    for d in self.faults.delivered
                ):
                    return
                await trio.sleep(0.002)

    async def finish(self) -> None:
        """Lift every fault, close every cat's stdin, wait for every process to end."""
        self.faults.heal()
        self.faults.resume()
        for proc in self.procs:
            proc.gate.set()
        for proc in self.cats:
            proc.send.send_nowait(CloseStdin(proc.index))
        for proc in self.procs:
            proc.send.close()
        for proc in self.procs:
            await proc.finished.wait()
            await proc.idle.wait()  # every call answered: the records are complete
        # A drop with nothing left running still leaves a recovery to finish.
        while self.client.state is ClientState.RECOVERING:  # noqa: ASYNC110 - no public event
            await trio.sleep(0.01)

    # -- one actor per process: its calls, in program order --

    async def actor(self, proc: Proc) -> None:
        try:
            await self._actor(proc)
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                self.errors.append(exc)
            proc.finished.set()
            raise
        finally:
            proc.idle.set()

    async def _actor(self, proc: Proc) -> None:
        step = proc.step
        argv = CAT if isinstance(step, StartCat) else scripted_argv(**step.options())
        try:
            proc.handle = await self.client.start(argv, pipe_stdin=proc.is_cat)
        except TransportError as exc:
            # process/start is mutating: in flight when the link died, its outcome is
            # unknown and it is not replayed. Only a dropped connection may cause it.
            proc.start_error = str(exc)
            if self.faults.drops == 0:
                proc.fail(f"start failed without a drop: {exc}")
            proc.finished.set()
            async for _ in proc.receive:
                pass
            return
        self.nursery.start_soon(self.consume, proc)
        async for command in proc.receive:
            await self.execute(proc, command)

    async def consume(self, proc: Proc) -> None:
        assert proc.handle is not None
        try:
            events: AsyncGenerator[Event, None] = proc.handle.events()  # type: ignore[assignment]
            async with aclosing(events):
                while True:
                    await proc.gate.wait()
                    try:
                        event = await events.__anext__()
                    except StopAsyncIteration:
                        break
                    proc.observe(event)
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                self.errors.append(exc)
            raise
        finally:
            proc.finished.set()

    async def execute(self, proc: Proc, command: Step) -> None:
        assert proc.handle is not None
        handle = proc.handle
        if isinstance(command, Write):
            outcome = await self._write(handle.write(command.data))
            proc.writes.append((command.data, outcome))
            proc.control_log.append(("write", outcome))
        elif isinstance(command, CloseStdin):
            outcome = await self._write(handle.close_stdin())
            proc.closes.append(outcome)
            proc.control_log.append(("close", outcome))
        elif isinstance(command, Signal):
            try:
                await handle.signal(command.signal)
                outcome = "ok"
            except TransportError:
                outcome = "ambiguous"
            proc.signals.append((command.signal, outcome))
            proc.control_log.append((command.signal, outcome))
        elif isinstance(command, Terminate):
            try:
                outcome = str(await handle.kill())  # process/terminate
            except TransportError:
                outcome = "ambiguous"
            proc.terminates.append(outcome)
            proc.control_log.append(("kill", outcome))

    @staticmethod
    async def _write(call: Any) -> str:
        try:
            await call
        except StdinClosedError:
            return "stdinClosed"
        except ExecRuntimeError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "accepted"

    # -- whole-client invariants --

    def check_client(self) -> None:
        stats = self.client.statistics()
        if self.client.state is not ClientState.CONNECTED:
            raise Violation(f"the client ended {self.client.state}: {stats}")
        failed = sum(1 for p in self.procs if p.events and isinstance(p.events[-1], Failed))
        if stats.failed_processes != failed:
            raise Violation(f"{failed} processes failed, statistics say {stats}")
        reads = self.faults.counts["process/read"]
        if reads and not self.program.may_read():
            raise Violation(f"{reads} process/read sent, and no fault could cause a gap or lag")


@asynccontextmanager
async def open_stack(program: Program) -> AsyncIterator[tuple[ExecClient, FaultController]]:
    """The daemon and client: in memory (``open_faulty_local``), or a real daemon on a
    loopback port behind ``fault_proxy``, the client dialling the proxy."""
    config = ServerConfig(retain_bytes=program.retain_bytes)
    if program.transport == "memory":
        async with open_faulty_local(
            program.plan, config, recovery_deadline=20.0, ack_output=program.ack_output
        ) as stack:
            yield stack
        return
    async with trio.open_nursery() as nursery:
        url = await nursery.start(exec_runtime.serve, config)
        async with (
            fault_proxy(url, program.plan) as proxy,
            exec_runtime.open_client(
                proxy.url, recovery_deadline=20.0, ack_output=program.ack_output
            ) as client,
        ):
            yield client, proxy.controller
        nursery.cancel_scope.cancel()


def task_tree() -> str:
    """Every Trio task and where it waits: printed when an example hangs."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        frames = [
            f"{frame.f_code.co_name}:{frame.f_lineno}" for frame, _ in task.iter_await_frames()
        ]
        lines.append("  " * depth + f"{task.name}  <- " + " / ".join(frames[-4:]))
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)  # type: ignore[arg-type]
    return "\n".join(lines)


async def _watchdog() -> None:
    # fail_after cannot interrupt a shielded wait; if one hangs, say where, then cancel
    # every task's innermost scope (a shield keeps out only outer cancellations) so
    # the example fails instead of blocking the whole run.
    await trio.sleep(EXAMPLE_TIMEOUT + 15)
    dump = task_tree()
    print(f"fault suite: the example hangs past its deadline:\n{dump}", file=sys.stderr)
    HANGS.append(dump)
    me = trio.lowlevel.current_task()
    assert me.parent_nursery is not None
    main = me.parent_nursery.parent_task
    while True:
        for task in _all_tasks(main):
            if task is not me:
                status = getattr(task, "_cancel_status", None)
                scope = getattr(status, "_scope", None)
                if isinstance(scope, trio.CancelScope):
                    scope.cancel()
        await trio.sleep(0.5)


HANGS: list[str] = []


def _all_tasks(root: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    tasks: list[trio.lowlevel.Task] = []
    pending = [root]
    while pending:
        task = pending.pop()
        tasks.append(task)
        pending.extend(c for n in task.child_nurseries for c in n.child_tasks)
    return tasks


async def run_program(program: Program) -> Runner:
    """Run one program against a fresh daemon and client; raise on any violation."""
    HANGS.clear()
    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(_watchdog)
            runner = await _run_program(program)
            outer.cancel_scope.cancel()
    finally:
        if HANGS:
            raise Violation(f"the example hung inside a shielded wait:\n{HANGS[0]}")
    return runner


async def _run_program(program: Program) -> Runner:
    saved = client_process.QUEUE_MAX_EVENTS
    client_process.QUEUE_MAX_EVENTS = program.queue_max_events  # type: ignore[misc]
    runner: Runner | None = None
    try:
        with trio.fail_after(EXAMPLE_TIMEOUT):
            async with open_stack(program) as (client, faults), trio.open_nursery() as nursery:
                runner = Runner(program, client, faults, nursery)
                await runner.run()
                nursery.cancel_scope.cancel()
    except trio.TooSlowError:
        state = "\n  ".join(repr(p) for p in (runner.procs if runner else []))
        raise Violation(
            f"the example did not finish within {EXAMPLE_TIMEOUT:g} s:\n  {state}\n"
            f"  faults: drops={runner and runner.faults.drops} "
            f"counts={runner and dict(runner.faults.counts)}"
        ) from None
    finally:
        client_process.QUEUE_MAX_EVENTS = saved  # type: ignore[misc]
    assert runner is not None
    return runner


def replay(program: Program) -> Runner:
    """Run a program printed by a failing example (paste its ``repr``)."""
    return trio.run(run_program, program)


REACHED: Counter[str] = Counter()
"""How many of ``test_fault_programs``' examples reached each outcome (this process)."""
MUST_REACH = ("drop", "partition", "retention failure", "recovery")
"""What the fault suite's examples must reach, so a run shows it tested the faults."""


def tally(runner: Runner) -> None:
    faults, stats = runner.faults, runner.client.statistics()
    REACHED["examples"] += 1
    reached = {
        "drop": faults.drops > 0,
        "partition": faults.refused > 0,
        "retention failure": any(
            p.events and isinstance(p.events[-1], Failed) and RETAINED_LOST in p.events[-1].message
            for p in runner.procs
        ),
        "recovery": stats.recoveries > 0,
    }
    REACHED.update(name for name, hit in reached.items() if hit)


def label(runner: Runner) -> None:
    """Tell hypothesis what happened (``--hypothesis-show-statistics`` shows it), so a
    run can show that the faults were really exercised."""
    tally(runner)
    faults, stats = runner.faults, runner.client.statistics()
    event(f"drops: {min(faults.drops, 3)}")
    event(f"process/read sent: {'yes' if faults.counts['process/read'] else 'no'}")
    writes = sum(len(p.writes) + len(p.closes) for p in runner.procs)
    if faults.counts["process/write"] > writes:
        event("a write was re-sent")
    if faults.refused:
        event("a reconnect was refused (partition)")
    if stats.recoveries:
        event("recovered")
    for proc in runner.procs:
        last = proc.events[-1] if proc.events else None
        if proc.start_error:
            event("outcome: start lost in a drop")
        elif isinstance(last, Failed):
            event("outcome: Failed (retention)")
        elif any(isinstance(e, Exited) and e.exit_code > 128 for e in proc.events):
            event("outcome: killed by a signal")
        elif isinstance(last, Closed):
            event("outcome: closed normally")
        if proc.exit_seq is not None and proc.exit_seq < proc.last_seq - 1:
            event("output after the exit (grandchild)")


