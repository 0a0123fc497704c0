"""The pure fs/walk rules (exec_runtime._core.walk), driven with in-memory trees."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exec_runtime._core.walk import (
    ITEM_OVERHEAD,
    MAX_DEPTH_LIMIT,
    MAX_DIRECTORIES_LIMIT,
    MAX_ENTRIES_LIMIT,
    RESPONSE_BUDGET,
    InvalidWalkOptions,
    ListedEntry,
    PendingDirectory,
    WalkEntry,
    WalkError,
    WalkLimits,
    WalkOutcome,
    WalkState,
    validate_options,
    walk,
)

# A tree: a dict is a directory, "f" a file, "o" a FIFO/socket/device, an
# ``Unreadable`` dict a directory whose listing fails, a ``Link`` a symlink whose target
# is a path (tuple of names) from the root.


class Unreadable(dict[str, Any]):
    pass


class Link:
    def __init__(self, target: tuple[str, ...]) -> None:
        self.target = target

    def __repr__(self) -> str:
        return f"Link({'/'.join(self.target)!r})"


def _resolve(root: dict[str, Any], parts: Iterable[str], hops: int = 0) -> Any:
    node: Any = root
    for name in parts:
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
        while isinstance(node, Link):
            hops += 1
            if hops > 40:
                return None  # ELOOP
            node = _resolve(root, node.target, hops)
    return node


class FakeFs:
    """An injected listing function over a tree, counting the directories it reads."""

    def __init__(self, root: dict[str, Any], *, trim: bool = False, follow: bool = False):
        self.root = root
        self.trim = trim
        self.follow = follow
        self.read: list[str] = []

    def __call__(self, directory: PendingDirectory, limit: int) -> list[ListedEntry]:
        self.read.append(directory.path)
        node = _resolve(self.root, directory.path.split("/") if directory.path else ())
        assert isinstance(node, dict), directory
        if isinstance(node, Unreadable):
            raise PermissionError(13, "Permission denied")
        listing = []
        for name, child in node.items():
            if isinstance(child, Link):
                target = _resolve(self.root, child.target)
                if target is None:
                    continue  # broken or looping: left out of the listing (not counted)
                is_dir = isinstance(target, dict)
                identity = (0, id(target)) if is_dir else None
                listing.append(ListedEntry(name, "symlink", is_dir, identity))
            elif isinstance(child, dict):
                listing.append(ListedEntry(name, "directory", identity=(0, id(child))))
            else:
                listing.append(ListedEntry(name, "file" if child == "f" else "other"))
        if self.trim:
            listing = heapq.nsmallest(limit, listing, key=lambda e: e.name)
        return listing


def limits(
    max_depth: int = MAX_DEPTH_LIMIT,
    max_directories: int = MAX_DIRECTORIES_LIMIT,
    max_entries: int = MAX_ENTRIES_LIMIT,
    **flags: bool,
) -> WalkLimits:
    return validate_options(max_depth, max_directories, max_entries, **flags)


def run(
    tree: dict[str, Any], lim: WalkLimits, *, budget: int = RESPONSE_BUDGET, trim: bool = False
) -> tuple[WalkOutcome, FakeFs]:
    fs = FakeFs(tree, trim=trim, follow=lim.follow_directory_symlinks)
    return walk(lim, fs, (0, id(tree)), budget=budget), fs


def oracle(
    tree: dict[str, Any], max_depth: int, prune: bool = False
) -> tuple[list[WalkEntry], list[str]]:
    """Plain breadth-first listing of a tree without symlinks: (entries, error paths)."""
    entries: list[WalkEntry] = []
    errors: list[str] = []
    queue: list[tuple[str, dict[str, Any], int]] = [("", tree, 0)]
    while queue:
        path, node, depth = queue.pop(0)
        if isinstance(node, Unreadable):
            errors.append(path or ".")
            continue
        for name in sorted(node):
            child = node[name]
            child_path = f"{path}/{name}" if path else name
            if isinstance(child, dict):
                entries.append(WalkEntry(child_path, "directory"))
                if depth < max_depth and not (prune and name.startswith(".")):
                    queue.append((child_path, child, depth + 1))
            else:
                entries.append(WalkEntry(child_path, "file" if child == "f" else "other"))
    return entries, errors


def cost(outcome: WalkOutcome) -> int:
    total = sum(len(e.path.encode()) + ITEM_OVERHEAD for e in outcome.entries)
    return total + sum(
        len(e.path.encode()) + len(e.message.encode()) + ITEM_OVERHEAD for e in outcome.errors
    )


def assert_breadth_first_and_sorted(entries: list[WalkEntry]) -> None:
    """Each directory's entries are contiguous and sorted by name, directories are read
    in the order they were emitted, and depth never decreases."""
    groups: list[tuple[str, list[str]]] = []
    for entry in entries:
        parent, _, name = entry.path.rpartition("/")
        if groups and groups[-1][0] == parent:
            groups[-1][1].append(name)
        else:
            groups.append((parent, [name]))
    parents = [parent for parent, _ in groups]
    assert len(parents) == len(set(parents)), "a directory's entries are split"
    for _, names in groups:
        assert names == sorted(names)
    emitted = [e.path for e in entries]
    positions = [(-1 if p == "" else emitted.index(p)) for p in parents]
    assert positions == sorted(positions), "directories read out of emission order"
    depths = [e.path.count("/") for e in entries]
    assert depths == sorted(depths)


# ---------------------------------------------------------------------------
# The issue's examples

SOURCE = {"nested": {"note.txt": "f"}, "root.txt": "f"}
FULL = [
    WalkEntry("nested", "directory"),
    WalkEntry("root.txt", "file"),
    WalkEntry("nested/note.txt", "file"),
]


def test_issue_example_full() -> None:
    outcome, _ = run(SOURCE, limits())
    assert outcome == WalkOutcome(FULL, [], False)


def test_issue_example_max_depth_zero() -> None:
    outcome, fs = run(SOURCE, limits(max_depth=0))
    assert outcome == WalkOutcome(FULL[:2], [], False)
    assert fs.read == [""]


def test_issue_example_max_directories_one() -> None:
    outcome, fs = run(SOURCE, limits(max_directories=1))
    assert outcome == WalkOutcome(FULL[:2], [], True)
    assert fs.read == [""]


def test_issue_example_max_entries_one() -> None:
    outcome, _ = run(SOURCE, limits(max_entries=1))
    assert outcome == WalkOutcome(FULL[:1], [], True)


def test_exactly_max_entries_is_not_truncated() -> None:
    outcome, _ = run(SOURCE, limits(max_entries=3))
    assert outcome == WalkOutcome(FULL, [], False)


def test_empty_root() -> None:
    assert run({}, limits())[0] == WalkOutcome([], [], False)


@pytest.mark.parametrize(
    ("depth", "directories", "entries"),
    [
        (-1, 1, 1),
        (65, 1, 1),
        (0, 0, 1),
        (0, 10_001, 1),
        (0, -1, 1),
        (0, 1, 0),
        (0, 1, 50_001),
    ],
)
def test_invalid_limits(depth: int, directories: int, entries: int) -> None:
    with pytest.raises(InvalidWalkOptions):
        validate_options(depth, directories, entries)


def test_extreme_valid_limits() -> None:
    assert validate_options(0, 1, 1).max_depth == 0
    assert validate_options(64, 10_000, 50_000).max_entries == 50_000


def test_unreadable_directory_becomes_error() -> None:
    tree = {"a": Unreadable({"x": "f"}), "b": {"y": "f"}}
    outcome, _ = run(tree, limits())
    assert outcome.entries == [
        WalkEntry("a", "directory"),
        WalkEntry("b", "directory"),
        WalkEntry("b/y", "file"),
    ]
    assert [e.path for e in outcome.errors] == ["a"]
    assert "Permission denied" in outcome.errors[0].message
    assert not outcome.truncated


def test_symlinks_skipped_unless_following_to_directory() -> None:
    tree: dict[str, Any] = {"d": {"x": "f"}, "f": "f"}
    tree["to_d"] = Link(("d",))
    tree["to_f"] = Link(("f",))
    tree["broken"] = Link(("missing",))
    plain, _ = run(tree, limits())
    assert [e.path for e in plain.entries] == ["d", "f", "d/x"]
    followed, _ = run(tree, limits(follow_directory_symlinks=True))
    # d and to_d are the same directory: read once, through the first name.
    assert followed.entries == [
        WalkEntry("d", "directory"),
        WalkEntry("f", "file"),
        WalkEntry("to_d", "directory"),
        WalkEntry("d/x", "file"),
    ]


def test_omitted_symlinks_count_against_max_entries() -> None:
    """As Codex 0.147: a symlink that is not emitted still takes one of ``max_entries``;
    a broken one (left out of the listing) does not."""
    tree: dict[str, Any] = {"b": "f", "d": {}, "e": "f"}
    tree["a"] = Link(("missing",))
    tree["c"] = Link(("b",))
    seen = {}
    for max_entries in (1, 2, 3, 4):
        outcome, _ = run(tree, limits(max_depth=0, max_entries=max_entries))
        seen[max_entries] = ([e.path for e in outcome.entries], outcome.truncated)
    assert seen == {
        1: (["b"], True),  # b, then c would be the 2nd
        2: (["b"], True),  # b, c (omitted), then d would be the 3rd
        3: (["b", "d"], True),
        4: (["b", "d", "e"], False),
    }
    trimmed, _ = run(tree, limits(max_depth=0, max_entries=2), trim=True)
    assert ([e.path for e in trimmed.entries], trimmed.truncated) == (["b"], True)


def test_cycle_terminates() -> None:
    tree: dict[str, Any] = {"a": {"b": {}}}
    tree["a"]["b"]["up"] = Link(())
    tree["a"]["loop"] = Link(("a",))
    outcome, fs = run(tree, limits(follow_directory_symlinks=True))
    assert [e.path for e in outcome.entries] == ["a", "a/b", "a/loop", "a/b/up"]
    assert fs.read == ["", "a", "a/b"]
    assert not outcome.truncated


def test_prune_hidden_directories_lists_but_does_not_descend() -> None:
    tree = {".git": {"HEAD": "f"}, ".env": "f", "src": {"m.py": "f"}}
    outcome, fs = run(tree, limits(prune_hidden_directories=True))
    assert [e.path for e in outcome.entries] == [".env", ".git", "src", "src/m.py"]
    assert ".git" not in fs.read
    unpruned, _ = run(tree, limits())
    assert ".git/HEAD" in [e.path for e in unpruned.entries]


def test_budget_truncates() -> None:
    tree = {f"{i:03}": "f" for i in range(10)}
    per_item = 3 + ITEM_OVERHEAD
    outcome, _ = run(tree, limits(), budget=per_item * 4 + per_item - 1)
    assert [e.path for e in outcome.entries] == ["000", "001", "002", "003"]
    assert outcome.truncated
    exact, _ = run(tree, limits(), budget=per_item * 10)
    assert len(exact.entries) == 10
    assert not exact.truncated


def test_default_budget_is_four_mib() -> None:
    name = "n" * 200
    count = RESPONSE_BUDGET // (200 + ITEM_OVERHEAD) + 5
    tree = {f"{i:05}{name}": "f" for i in range(count)}
    outcome, _ = run(tree, limits(), trim=True)
    assert outcome.truncated
    assert len(outcome.entries) == RESPONSE_BUDGET // (205 + ITEM_OVERHEAD)
    assert cost(outcome) <= RESPONSE_BUDGET


def test_state_machine_protocol_errors() -> None:
    state = WalkState(limits())
    directory = state.next_directory()
    assert directory == PendingDirectory("", 0)
    with pytest.raises(RuntimeError):
        state.next_directory()
    with pytest.raises(RuntimeError):
        state.add_listing(PendingDirectory("other", 1), [])
    state.add_listing(directory, [ListedEntry("a", "file")])
    assert state.next_directory() is None
    assert state.done
    assert state.outcome() == WalkOutcome([WalkEntry("a", "file")], [], False)


def test_error_on_root_is_reported_with_dot() -> None:
    state = WalkState(limits())
    directory = state.next_directory()
    assert directory is not None
    state.add_error(directory, "gone")
    assert state.next_directory() is None
    assert state.outcome().errors == [WalkError(".", "gone")]


# ---------------------------------------------------------------------------
# Properties

NAMES = st.sampled_from(["a", "b", "c", ".h", "d e", "é", "Z", "a.b"])
LEAVES = st.sampled_from(["f", "o"])


def _directory(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    plain = st.dictionaries(NAMES, children, max_size=4)
    return st.one_of(plain, plain, plain, plain.map(Unreadable))


TREES = st.dictionaries(NAMES, st.recursive(LEAVES, _directory, max_leaves=40), max_size=6)


@st.composite
def limit_sets(draw: st.DrawFn) -> WalkLimits:
    return limits(
        max_depth=draw(st.integers(0, 6)),
        max_directories=draw(st.one_of(st.integers(1, 12), st.just(MAX_DIRECTORIES_LIMIT))),
        max_entries=draw(st.one_of(st.integers(1, 60), st.just(MAX_ENTRIES_LIMIT))),
        prune_hidden_directories=draw(st.booleans()),
    )


@given(tree=TREES, depth=st.integers(0, MAX_DEPTH_LIMIT), prune=st.booleans(), trim=st.booleans())
def test_untruncated_walk_equals_oracle(
    tree: dict[str, Any], depth: int, prune: bool, trim: bool
) -> None:
    outcome, _ = run(tree, limits(max_depth=depth, prune_hidden_directories=prune), trim=trim)
    entries, error_paths = oracle(tree, depth, prune)
    assert not outcome.truncated
    assert outcome.entries == entries
    assert [e.path for e in outcome.errors] == error_paths


BUDGETS = st.one_of(st.integers(0, 5000), st.just(RESPONSE_BUDGET))


@given(tree=TREES, lim=limit_sets(), budget=BUDGETS, trim=st.booleans())
def test_limits_hold_and_result_is_a_prefix(
    tree: dict[str, Any], lim: WalkLimits, budget: int, trim: bool
) -> None:
    outcome, fs = run(tree, lim, budget=budget, trim=trim)
    entries, error_paths = oracle(tree, lim.max_depth, lim.prune_hidden_directories)
    assert len(outcome.entries) <= lim.max_entries
    assert len(fs.read) <= lim.max_directories
    assert cost(outcome) <= budget
    assert all(e.path.count("/") <= lim.max_depth for e in outcome.entries)
    assert outcome.entries == entries[: len(outcome.entries)]
    assert [e.path for e in outcome.errors] == error_paths[: len(outcome.errors)]
    assert_breadth_first_and_sorted(outcome.entries)
    if not outcome.truncated:
        assert outcome.entries == entries
        assert [e.path for e in outcome.errors] == error_paths
    else:
        # Something was really cut off: an entry, an error, or a directory left unread.
        complete = outcome.entries == entries and len(outcome.errors) == len(error_paths)
        assert not complete or len(fs.read) == lim.max_directories
    # Trimming the listing never changes the outcome.
    untrimmed, _ = run(tree, lim, budget=budget, trim=not trim)
    assert untrimmed == outcome


@st.composite
def trees_with_links(draw: st.DrawFn) -> dict[str, Any]:
    tree = draw(TREES)
    directories: list[tuple[str, ...]] = []
    everything: list[tuple[str, ...]] = [()]

    def collect(node: dict[str, Any], path: tuple[str, ...]) -> None:
        directories.append(path)
        for name, child in node.items():
            everything.append((*path, name))
            if isinstance(child, dict):
                collect(child, (*path, name))

    collect(tree, ())
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.sampled_from(directories))
        target = draw(st.sampled_from([*everything, ("missing",)]))
        parent = _resolve(tree, where)
        parent[draw(NAMES.map(lambda n: "l" + n))] = Link(target)
    return tree


@given(tree=trees_with_links(), lim=limit_sets(), follow=st.booleans(), trim=st.booleans())
def test_symlinks_and_cycles(
    tree: dict[str, Any], lim: WalkLimits, follow: bool, trim: bool
) -> None:
    lim = limits(
        lim.max_depth,
        lim.max_directories,
        lim.max_entries,
        follow_directory_symlinks=follow,
        prune_hidden_directories=lim.prune_hidden_directories,
    )
    outcome, fs = run(tree, lim, trim=trim)
    assert len(fs.read) <= lim.max_directories
    assert len(outcome.entries) <= lim.max_entries
    assert all(e.kind != "symlink" for e in outcome.entries)
    assert_breadth_first_and_sorted(outcome.entries)
    # Every directory is read at most once, whatever names lead to it.
    read_nodes = [id(_resolve(tree, p.split("/") if p else ())) for p in fs.read]
    assert len(read_nodes) == len(set(read_nodes))
    for entry in outcome.entries:
        node = _resolve(tree, entry.path.split("/"))
        *parents, name = entry.path.split("/")
        raw = _resolve(tree, parents)[name]
        if isinstance(raw, Link):
            assert follow and isinstance(node, dict)
    if not follow:
        # Without following, no link is emitted or entered, but each one that resolves
        # takes one of max_entries (as Codex 0.147): the walk of the tree without the
        # links, cut off no later.
        plain, _ = run(_without_links(tree), lim)
        assert outcome.entries == plain.entries[: len(outcome.entries)]
        if not outcome.truncated:
            assert outcome == plain
    # Trimming the listing (after leaving out the links that do not resolve) never
    # changes the outcome.
    other, _ = run(tree, lim, trim=not trim)
    assert other == outcome


def _without_links(node: dict[str, Any]) -> dict[str, Any]:
    kind = Unreadable if isinstance(node, Unreadable) else dict
    return kind(
        (name, _without_links(child) if isinstance(child, dict) else child)
        for name, child in node.items()
        if not isinstance(child, Link)
    )


# ---------------------------------------------------------------------------
# Exact contracts the mutation run found untested


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ((-1, 1, 1), "fs/walk options.maxDepth must be between 0 and 64, got -1"),
        ((65, 1, 1), "fs/walk options.maxDepth must be between 0 and 64, got 65"),
        ((0, 0, 1), "fs/walk options.maxDirectories must be between 1 and 10000, got 0"),
        (
            (0, 10_001, 1),
            "fs/walk options.maxDirectories must be between 1 and 10000, got 10001",
        ),
        ((0, 1, 0), "fs/walk options.maxEntries must be between 1 and 50000, got 0"),
        ((0, 1, 50_001), "fs/walk options.maxEntries must be between 1 and 50000, got 50001"),
    ],
)
def test_invalid_limits_name_the_field(options: tuple[int, int, int], message: str) -> None:
    with pytest.raises(InvalidWalkOptions) as caught:
        validate_options(*options)
    assert str(caught.value) == message


def test_state_machine_protocol_error_messages() -> None:
    state = WalkState(limits())
    directory = state.next_directory()
    assert directory is not None
    with pytest.raises(RuntimeError) as twice:
        state.next_directory()
    assert str(twice.value) == "the previous directory has not been reported yet"
    with pytest.raises(RuntimeError) as wrong:
        state.add_error(PendingDirectory("other", 1), "x")
    assert str(wrong.value) == "directory 'other' was not the one handed out"
    state.add_listing(directory, [])
    with pytest.raises(RuntimeError) as stale:
        state.add_listing(directory, [])
    assert str(stale.value) == "directory '' was not the one handed out"


def test_done_is_false_until_the_walk_ends_and_true_as_soon_as_it_is_truncated() -> None:
    state = WalkState(limits(max_entries=1))
    assert state.done is False
    directory = state.next_directory()
    assert directory is not None
    assert state.done is False
    state.add_listing(directory, [ListedEntry("a", "directory"), ListedEntry("b", "file")])
    # Truncated by the listing itself: over before next_directory is asked again.
    assert state.done is True
    assert state.next_directory() is None
    assert state.done is True
    assert state.outcome() == WalkOutcome([WalkEntry("a", "directory")], [], True)


def test_done_right_after_a_budget_truncation() -> None:
    for report_error in (False, True):
        state = WalkState(limits(), budget=ITEM_OVERHEAD)
        directory = state.next_directory()
        assert directory is not None
        if report_error:
            state.add_error(directory, "x")
        else:
            state.add_listing(directory, [ListedEntry("ab", "file")])
        assert state.done is True
        assert state.outcome() == WalkOutcome([], [], True)


def test_directories_read_counts_each_read_once() -> None:
    tree = {"a": {"x": "f"}, "b": Unreadable({"y": "f"}), "c": "f"}
    state = WalkState(limits(max_directories=3))
    assert state.directories_read == 0
    seen = []
    while (directory := state.next_directory()) is not None:
        seen.append(state.directories_read)
        node = _resolve(tree, directory.path.split("/") if directory.path else ())
        if isinstance(node, Unreadable):
            state.add_error(directory, "denied")
        else:
            state.add_listing(directory, FakeFs(tree)(directory, state.entry_limit()))
    assert seen == [1, 2, 3]
    # Exactly max_directories directories to read: all read, nothing truncated.
    assert state.outcome() == WalkOutcome(
        [
            WalkEntry("a", "directory"),
            WalkEntry("b", "directory"),
            WalkEntry("c", "file"),
            WalkEntry("a/x", "file"),
        ],
        [WalkError("b", "denied")],
        False,
    )


def test_max_directories_counts_the_root_and_every_read() -> None:
    tree = {"a": {"x": "f"}, "b": {"y": {"z": "f"}}}
    for max_directories, read, truncated in [
        (1, [""], True),
        (2, ["", "a"], True),
        (3, ["", "a", "b"], True),
        (4, ["", "a", "b", "b/y"], False),
    ]:
        outcome, fs = run(tree, limits(max_directories=max_directories))
        assert (fs.read, outcome.truncated) == (read, truncated), max_directories


def test_entry_limit_is_the_names_left_plus_the_one_that_truncates() -> None:
    state = WalkState(limits(max_entries=5))
    directory = state.next_directory()
    assert directory is not None
    assert state.entry_limit() == 6
    state.add_listing(directory, [ListedEntry("a", "directory"), ListedEntry("b", "file")])
    assert state.entry_limit() == 4
    directory = state.next_directory()
    assert directory == PendingDirectory("a", 1)
    state.add_listing(directory, [ListedEntry(n, "file") for n in "cdef"])
    # c, d, e counted; f would be the 6th name: truncated, and f is not counted.
    assert state.entry_limit() == 1
    assert state.outcome().truncated


def test_entry_limit_is_the_smallest_useful_listing() -> None:
    """One name fewer than entry_limit changes the outcome: the name that truncates is
    missing, so the walk looks complete."""
    listing = [ListedEntry(n, "file") for n in "abc"]
    for max_entries in (1, 2):
        for trim_to in ("limit", "less"):
            state = WalkState(limits(max_entries=max_entries))
            directory = state.next_directory()
            assert directory is not None
            keep = state.entry_limit() - (trim_to == "less")
            state.add_listing(directory, listing[:keep])
            assert state.next_directory() is None
            assert state.outcome().truncated is (trim_to == "limit"), (max_entries, trim_to)


def test_depths_of_the_directories_handed_out() -> None:
    tree = {"a": {"b": {"c": {"d": {"e": "f"}}}}}
    for max_depth in range(5):
        outcome, fs = run(tree, limits(max_depth=max_depth))
        assert fs.read == ["", "a", "a/b", "a/b/c", "a/b/c/d"][: max_depth + 1]
        assert [e.path for e in outcome.entries] == ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e"][
            : max_depth + 1
        ]
    state = WalkState(limits(max_depth=3))
    depths = []
    while (directory := state.next_directory()) is not None:
        depths.append((directory.path, directory.depth))
        state.add_listing(directory, FakeFs(tree)(directory, state.entry_limit()))
    assert depths == [("", 0), ("a", 1), ("a/b", 2), ("a/b/c", 3)]


def test_a_directory_reached_again_does_not_end_its_parents_listing() -> None:
    tree: dict[str, Any] = {"d": {"x": "f"}, "z": "f", "zz": {"y": "f"}}
    tree["e"] = Link(("d",))
    tree["up"] = Link(())
    outcome, fs = run(tree, limits(follow_directory_symlinks=True))
    assert [e.path for e in outcome.entries] == ["d", "e", "up", "z", "zz", "d/x", "zz/y"]
    assert fs.read == ["", "d", "zz"]


def test_path_prefix_is_charged_with_each_item() -> None:
    """The daemon sends absolute URIs: ``path_prefix`` bytes more per entry and error."""
    prefix = 10
    per_entry = 1 + ITEM_OVERHEAD + prefix
    for budget, emitted in [(2 * per_entry, 2), (2 * per_entry - 1, 1)]:
        state = WalkState(limits(), budget=budget, path_prefix=prefix)
        directory = state.next_directory()
        assert directory is not None
        state.add_listing(directory, [ListedEntry("a", "file"), ListedEntry("b", "file")])
        assert state.next_directory() is None
        assert len(state.outcome().entries) == emitted
        assert state.outcome().truncated is (emitted < 2)


@pytest.mark.parametrize("prefix", [0, 7])
def test_an_error_costs_its_path_its_message_and_the_prefix(prefix: int) -> None:
    message = "cannot read directory: No such file or directory"
    # The root's error path is "." (1 byte); a subdirectory "sub" (3 bytes).
    root_cost = 1 + len(message) + ITEM_OVERHEAD + prefix
    sub_cost = 3 + len(message) + ITEM_OVERHEAD + prefix
    entry_cost = 3 + ITEM_OVERHEAD + prefix
    for spare, reported in [(0, True), (-1, False)]:
        state = WalkState(limits(), budget=root_cost + spare, path_prefix=prefix)
        directory = state.next_directory()
        assert directory is not None
        state.add_error(directory, message)
        errors = [WalkError(".", message)] if reported else []
        assert state.outcome() == WalkOutcome([], errors, not reported)
        state = WalkState(limits(), budget=entry_cost + sub_cost + spare, path_prefix=prefix)
        directory = state.next_directory()
        assert directory is not None
        state.add_listing(directory, [ListedEntry("sub", "directory")])
        directory = state.next_directory()
        assert directory == PendingDirectory("sub", 1)
        state.add_error(directory, message)
        assert state.next_directory() is None
        errors = [WalkError("sub", message)] if reported else []
        assert state.outcome() == WalkOutcome([WalkEntry("sub", "directory")], errors, not reported)


def test_walk_reports_the_oserror_text() -> None:
    def failing(error: OSError) -> Any:
        def list_directory(directory: PendingDirectory, limit: int) -> list[ListedEntry]:
            raise error

        return list_directory

    with_strerror = walk(limits(), failing(PermissionError(13, "Permission denied")))
    assert with_strerror.errors == [WalkError(".", "cannot read directory: Permission denied")]
    bare = walk(limits(), failing(OSError("device went away")))
    assert bare.errors == [WalkError(".", "cannot read directory: device went away")]
