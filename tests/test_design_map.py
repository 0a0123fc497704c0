"""docs/design.md's layer tree names every module where it is, and nothing that is gone:
a new or moved module must get its line there (the map a newcomer reads first)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


def tree_block() -> list[str]:
    text = DESIGN.read_text()
    section = text[text.index("## The layers") :]
    start = section.index("```\n") + len("```\n")
    return section[start : section.index("```", start)].splitlines()


def modules_in_the_tree() -> set[str]:
    """Every ``*.py`` the tree names, as a path from the repository root."""
    found: set[str] = set()
    dirs: list[tuple[int, str]] = []  # (indent, path) of the enclosing directories
    for line in tree_block():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = re.split(r"\s{2,}", line.strip())[0]  # the names, before the description
        while dirs and dirs[-1][0] >= indent:
            dirs.pop()
        base = dirs[-1][1] if dirs else ""
        for name in re.findall(r"[\w.]+\.py|[\w]+/", names):
            if name.endswith("/"):
                dirs.append((indent, base + name))
            else:
                found.add(base + name)
    return found


def test_the_layer_tree_names_every_module_and_only_those() -> None:
    on_disk = {
        str(path.relative_to(ROOT))
        for top in ("exec_runtime", "protocol_schema")
        for path in (ROOT / top).rglob("*.py")
        if path.name != "__init__.py" or path.parent.name == "sandbox"
    }
    on_disk.add("exec_runtime/__init__.py")
    named = modules_in_the_tree()
    assert sorted(on_disk - named) == [], "modules missing from docs/design.md's tree"
    assert sorted(named - on_disk) == [], "docs/design.md names modules that do not exist"


def test_the_parser_reads_nesting() -> None:
    named = modules_in_the_tree()
    assert "exec_runtime/_daemon/sandbox/_bwrap.py" in named
    assert "protocol_schema/fs.py" in named
    assert "exec_runtime/_cli/serve_options.py" in named
