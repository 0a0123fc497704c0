"""The layers of ``exec_runtime`` (docs/design.md) import in one direction only.

- ``_core`` is pure: nothing else of ours but ``protocol_schema``, and no trio (the
  runtime half of that is ``tests/core/test_no_trio_import.py``);
- ``_wire`` uses only ``_core`` and ``protocol_schema`` of ours;
- the client never imports the daemon, the daemon never imports the client; only
  ``_local.py`` (the in-process runtime), ``_cli`` and ``testing`` join them;
- a host that only connects loads no daemon code, no trio-websocket, no wsproto.

Read from the source (every ``import`` and ``from`` statement, relative ones resolved),
so an import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exec_runtime"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import x`` imports the submodule x.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def ours(imported: set[str]) -> set[str]:
    """The imports of our own modules, without names that are not modules."""
    return {
        name
        for name in imported
        if name.startswith("exec_runtime")
        and (
            (ROOT / name.replace(".", "/")).with_suffix(".py").exists()
            or (ROOT / name.replace(".", "/") / "__init__.py").exists()
        )
    }


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "exec_runtime"


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_known_layer() -> None:
    layers = {layer_of(m) for m in MODULES}
    assert layers == {
        "exec_runtime",
        "__main__",
        "_core",
        "_wire",
        "_daemon",
        "_client",
        "_cli",
        "_local",
        "_errors",
        "_malloc",
        "testing",
    }, "a new top-level module: give it a layer here and in docs/design.md"


ALLOWED = {
    # layer: the layers of ours it may import (besides itself)
    "_core": set(),
    "_wire": {"_core"},
    "_client": {"_core", "_wire", "_errors", "_malloc"},
    "_daemon": {"_core", "_wire", "_errors"},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_lies_below_it(layer: str) -> None:
    wrong = {
        (module, imported)
        for module, path in MODULES.items()
        if layer_of(module) == layer
        for imported in ours(imports_of(path))
        if layer_of(imported) not in ALLOWED[layer] | {layer, "exec_runtime"}
        or imported == "exec_runtime"  # the package itself pulls in every layer
    }
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("layer", ["_core", "_wire"])
def test_lower_layers_never_import_the_runtimes_above(layer: str) -> None:
    found = {
        (module, imported)
        for module, path in MODULES.items()
        if layer_of(module) == layer
        for imported in imports_of(path)
        if imported.split(".")[0] in {"trio_websocket", "wsproto"}
        or (layer == "_core" and imported.split(".")[0] == "trio")
    }
    assert not found, sorted(found)


def test_the_checker_sees_a_violation() -> None:
    """The checks above would notice: a daemon module's imports resolve to our names."""
    session = imports_of(PACKAGE / "_daemon" / "session.py")
    assert "exec_runtime._daemon.child" in ours(session)
    assert "exec_runtime._core.sequence" in ours(session)


def test_a_host_that_only_connects_loads_no_daemon() -> None:
    script = (
        "import sys, exec_runtime\n"
        "exec_runtime.open_client, exec_runtime.open_pool, exec_runtime.Sandbox\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('exec_runtime._daemon', "
        "'exec_runtime._local', 'trio_websocket', 'wsproto')))\n"
        "print(','.join(loaded))\n"
        "exec_runtime.serve, exec_runtime.ServerConfig, exec_runtime.open_local\n"
        "print('exec_runtime._daemon.server' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded, daemon_after = done.stdout.splitlines()
    assert loaded == "", f"loaded by a connecting host: {loaded}"
    assert daemon_after == "True"  # the lazy names still work
