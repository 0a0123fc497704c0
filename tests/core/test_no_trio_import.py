"""The sans-IO rule: the core and the wire contract import without trio."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import exec_runtime._core
import protocol_schema

ROOT = Path(__file__).resolve().parents[2]


def modules_of(package: ModuleType) -> list[str]:
    """The package and every module under it, found with pkgutil."""
    found = pkgutil.walk_packages(package.__path__, prefix=package.__name__ + ".")
    return [package.__name__, *sorted(info.name for info in found)]


def sans_io_modules() -> list[str]:
    return [*modules_of(exec_runtime._core), *modules_of(protocol_schema)]


def test_modules_are_discovered() -> None:
    modules = sans_io_modules()
    assert {"exec_runtime._core.sequence", "exec_runtime._core.reorder"} <= set(modules)
    assert {"protocol_schema.codec", "protocol_schema.schema"} <= set(modules)


def test_core_and_protocol_schema_do_not_import_trio() -> None:
    """A fresh interpreter imports every core module and protocol_schema; no trio.

    ``exec_runtime/__init__.py`` is the Trio runtime's public API, so it is stubbed with
    a bare package object: the core's own imports (and only those) are what runs.
    """
    modules = sans_io_modules()
    script = "\n".join(
        [
            "import importlib, sys, types",
            "package = types.ModuleType('exec_runtime')",
            f"package.__path__ = [{str(ROOT / 'exec_runtime')!r}]",
            "sys.modules['exec_runtime'] = package",
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
    assert done.stdout.strip() == "", f"the sans-IO core imported trio: {done.stdout.strip()}"
