"""sandboxDenied (exec_runtime._core.sandbox_denial, PROTOCOL §11): the table by example,
and the streaming scanner against classifying the whole output at once."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exec_runtime._core.events import StreamName
from exec_runtime._core.sandbox_denial import DENIAL_KEYWORDS, DenialScanner, classify

SPEC_KEYWORDS = (
    "operation not permitted",
    "permission denied",
    "read-only file system",
    "seccomp",
    "sandbox",
    "landlock",
    "failed to write file",
)
"""§11's list, spelled out here so a keyword dropped from the module is noticed."""


def verdict(exit_code: int, stdout: bytes = b"", stderr: bytes = b"") -> bool:
    """The oracle: §11 applied to the whole output, stdout then stderr."""
    if exit_code == 0:
        return False
    text = (stdout + stderr).lower()
    if any(k.encode() in text for k in SPEC_KEYWORDS):
        return True
    if exit_code in (2, 126, 127):
        return False
    return exit_code == 159


def scan(*chunks: tuple[StreamName, bytes]) -> DenialScanner:
    scanner = DenialScanner()
    for stream, data in chunks:
        scanner.feed(stream, data)
    return scanner


def test_the_keywords_are_the_protocols() -> None:
    assert sorted(k.decode() for k in DENIAL_KEYWORDS) == sorted(SPEC_KEYWORDS)


@pytest.mark.parametrize(
    ("exit_code", "keyword_seen", "denied"),
    [
        (0, False, False),
        (0, True, False),
        (1, True, True),
        (2, True, True),
        (126, True, True),
        (127, True, True),
        (159, True, True),
        (255, True, True),
        (-1, True, True),
        (2, False, False),
        (126, False, False),
        (127, False, False),
        (159, False, True),
        (1, False, False),
        (3, False, False),
        (125, False, False),
        (128, False, False),
        (137, False, False),
        (139, False, False),
        (158, False, False),
        (160, False, False),
        (255, False, False),
        (-31, False, False),
    ],
)
def test_the_table(exit_code: int, keyword_seen: bool, denied: bool) -> None:
    assert classify(exit_code, keyword_seen=keyword_seen) is denied


@pytest.mark.parametrize(
    ("chunks", "keyword"),
    [
        ([], False),
        ([("stdout", b"hello\n"), ("stderr", b"world\n")], False),
        ([("stderr", b"mkdir: /x: Operation not permitted\n")], True),
        ([("stdout", b"PERMISSION DENIED")], True),
        ([("stderr", b"sh: Read-Only File System")], True),
        ([("stdout", b"Seccomp")], True),
        ([("stderr", b"in a SandBox")], True),
        ([("stdout", b"LANDLOCK")], True),
        ([("stderr", b"error: Failed To Write File x")], True),
        ([("pty", b"cp: permission denied")], True),
        # split across chunks of one stream
        ([("stderr", b"Permission de"), ("stderr", b"nied")], True),
        ([("stdout", b"s"), ("stdout", b"e"), ("stdout", b"ccomp")], True),
        ([("stdout", b"read-only file"), ("stderr", b"x"), ("stdout", b" System")], True),
        # across the two streams, stdout's end then stderr's start (aggregated output)
        ([("stdout", b"...operation not "), ("stderr", b"permitted\n")], True),
        ([("stderr", b"permitted"), ("stdout", b"x operation not ")], True),
        ([("stdout", b"abc land"), ("stderr", b"lock"), ("stderr", b" more")], True),
        ([("stdout", b"land"), ("stdout", b"-"), ("stderr", b"lock")], False),
        ([("stdout", b"land"), ("stderr", b"x"), ("stderr", b"lock")], False),
        # a keyword's pieces in different streams' middles do not count
        ([("stderr", b"sand"), ("stdout", b"box")], False),
        ([("stdout", b"per"), ("pty", b"mission denied")], False),
        ([("stdout", b"perm\xffission denied"), ("stderr", b"denied")], False),
        ([("stdout", b"sand\x00box")], False),
    ],
)
def test_keywords_in_the_output(chunks: list[tuple[StreamName, bytes]], keyword: bool) -> None:
    scanner = scan(*chunks)
    assert scanner.keyword_seen is keyword
    for code in (1, 2, 126, 127, 159, 255):
        assert scanner.denied(code) is classify(code, keyword_seen=keyword)
    assert scanner.denied(0) is False


@pytest.mark.parametrize("keyword", SPEC_KEYWORDS)
def test_every_split_of_a_keyword_is_found(keyword: str) -> None:
    """Cut anywhere, in one stream's chunks or across stdout's end and stderr's start,
    after and before long filler: the scanner must keep enough of each side."""
    word = keyword.upper().encode()
    before, after = b"x" * 40, b"y" * 40
    for cut in range(1, len(word)):
        head, tail = before + word[:cut], word[cut:] + after
        for stream in ("stdout", "stderr", "pty"):
            assert scan((stream, head), (stream, tail)).keyword_seen, (stream, cut)
        assert scan(("stdout", head), ("stderr", tail)).keyword_seen, cut
        assert scan(("stderr", tail), ("stdout", head)).keyword_seen, cut
        assert scan(("stderr", b""), ("stderr", tail), ("stdout", head)).keyword_seen, cut
        assert not scan(("stderr", head), ("stdout", tail)).keyword_seen, cut
    one_by_one = [("stderr", word[i : i + 1]) for i in range(len(word))]
    assert scan(*one_by_one).keyword_seen
    assert not scan(("stdout", word[:-1]), ("stdout", b"-"), ("stderr", word[-1:])).keyword_seen


def test_after_a_match_later_output_changes_nothing() -> None:
    scanner = scan(("stdout", b"permission denied"))
    scanner.feed("stdout", b"x" * 100)
    scanner.feed("stderr", b"y" * 100)
    assert scanner.keyword_seen and scanner.denied(1)


def test_a_long_output_keeps_constant_memory_and_finds_a_late_keyword() -> None:
    scanner = DenialScanner()
    for _ in range(1000):
        scanner.feed("stdout", b"x" * 4096)
        scanner.feed("stderr", b"y" * 4096)
    scanner.feed("stdout", b"...sand")
    scanner.feed("stdout", b"box!")
    assert scanner.keyword_seen
    assert sum(len(v) for v in vars(scanner).values() if isinstance(v, bytes | dict)) < 200


# --- the streaming scanner against the whole output -----------------------------------

_KEYWORD_CUTS = st.sampled_from(SPEC_KEYWORDS).flatmap(
    lambda k: st.integers(0, len(k)).map(lambda cut: (k[:cut], k[cut:]))
)
_PIECES = st.one_of(
    _KEYWORD_CUTS.flatmap(lambda halves: st.sampled_from(["".join(halves), *halves])),
    st.text("abcdeilmnoprstwxyz -\n", max_size=4),
)


@st.composite
def cased(draw: st.DrawFn, text: str) -> bytes:
    """Each letter upper- or lower-case."""
    rnd = draw(st.randoms(use_true_random=False))
    return "".join(c.upper() if rnd.random() < 0.5 else c for c in text).encode()


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """Cut at random places (empty chunks included), or into single bytes (every
    keyword then arrives split at every position)."""
    if draw(st.integers(0, 3)) == 0:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[bytes, bytes, list[tuple[StreamName, bytes]]]:
    """stdout and stderr made of keywords, their halves and filler (stdout sometimes
    ending with a keyword's start whose end starts stderr), and one way they might
    arrive: each stream chunked, the two interleaved at random."""
    out_text = "".join(draw(st.lists(_PIECES, max_size=6)))
    err_text = "".join(draw(st.lists(_PIECES, max_size=6)))
    if draw(st.booleans()):
        head, tail = draw(_KEYWORD_CUTS)
        out_text, err_text = out_text + head, tail + err_text
    stdout, stderr = draw(cased(out_text)), draw(cased(err_text))
    out, err = draw(chunked(stdout)), draw(chunked(stderr))
    order: list[StreamName] = [*["stdout"] * len(out), *["stderr"] * len(err)]
    draw(st.randoms(use_true_random=False)).shuffle(order)
    queues: dict[StreamName, list[bytes]] = {"stdout": out, "stderr": err}
    return stdout, stderr, [(name, queues[name].pop(0)) for name in order]


@settings(max_examples=250, deadline=None)
@given(interleavings(), st.sampled_from([0, 1, 2, 126, 127, 159, 137, 255]))
def test_chunking_does_not_change_the_verdict(
    case: tuple[bytes, bytes, list[tuple[StreamName, bytes]]], exit_code: int
) -> None:
    stdout, stderr, chunks = case
    whole = scan(("stdout", stdout), ("stderr", stderr))
    streamed = scan(*chunks)
    want = verdict(exit_code, stdout, stderr)
    assert whole.denied(exit_code) is want
    assert streamed.denied(exit_code) is want
    assert streamed.keyword_seen is whole.keyword_seen


def test_after_a_match_later_output_is_not_even_looked_at() -> None:
    """The daemon feeds the scanner every chunk of a sandboxed process: once a keyword
    is found the verdict is fixed, and the rest of the output costs no scanning."""

    class Unscannable(bytes):
        def lower(self) -> bytes:
            raise AssertionError("scanned after the verdict")

    scanner = scan(("stderr", b"Permission denied"))
    for stream in ("stdout", "stderr", "pty"):
        scanner.feed(stream, Unscannable(b"more output"))
    assert scanner.keyword_seen is True
    assert scanner.denied(1) is True
