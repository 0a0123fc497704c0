"""pyproject.toml: every package ships, the editable install is one type checkers see,
and the metadata says what the package is."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_on_disk_is_listed() -> None:
    """A subpackage missing from the list is missing from the wheel (and from
    ``pip install .``), while the tests, run from the checkout, still pass."""
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("exec_runtime", "protocol_schema")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(pyproject()["tool"]["setuptools"]["packages"]) == on_disk


def test_the_editable_install_is_a_path_entry() -> None:
    """With the root named as the package directory, setuptools' editable install is a
    ``.pth`` line holding the checkout, which mypy reads; without it, an import hook
    that mypy cannot see (``Cannot find implementation or library stub``). Checked by
    hand: ``pip install -e .`` into a fresh venv, then ``mypy --strict host.py`` from
    another directory, with ``--python-executable`` that venv's python."""
    assert pyproject()["tool"]["setuptools"]["package-dir"] == {"": "."}


def test_the_metadata_describes_the_package() -> None:
    project = pyproject()["project"]
    assert project["authors"] and project["keywords"]
    classifiers = project["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert (ROOT / "exec_runtime" / "py.typed").exists()
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert project["license"] == {"text": "MIT"}
    assert "Framework :: Trio" in classifiers
    # The Python versions named are the ones requires-python admits.
    minimum = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert minimum is not None
    versions = [
        int(c.rsplit(".", 1)[1])
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert versions and min(versions) == int(minimum.group(1))
