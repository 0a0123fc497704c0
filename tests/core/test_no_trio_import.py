"""The sans-IO rule: the core and the wire contract import without trio."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import exec_runtime._core

ROOT = Path(__file__).resolve().parents[2]


def core_modules() -> list[str]:
    prefix = exec_runtime._core.__name__ + "."
    names = [
        info.name for info in pkgutil.walk_packages(exec_runtime._core.__path__, prefix=prefix)
    ]
    return [exec_runtime._core.__name__, *sorted(names)]


def test_core_modules_are_discovered() -> None:
    modules = core_modules()
    assert "exec_runtime._core.sequence" in modules
    assert "exec_runtime._core.reorder" in modules


def test_core_and_protocol_schema_do_not_import_trio() -> None:
    modules = [*core_modules(), "protocol_schema", "protocol_schema.__main__"]
    script = "\n".join(
        [
            "import importlib, sys",
            f"for name in {modules!r}:",
            "    importlib.import_module(name)",
            "leaked = sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.'))",
            "print(','.join(leaked))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"trio imported by the sans-IO core: {done.stdout}"
