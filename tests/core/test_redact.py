"""What logs may say about a session id (``_core/redact.py``): a fingerprint that tells
sessions apart without giving the resume credential back."""

from __future__ import annotations

import hashlib

from hypothesis import assume, given
from hypothesis import strategies as st

from exec_runtime._core.redact import fingerprint, redact


def test_the_fingerprint_is_the_first_eight_hex_digits_of_the_ids_sha256() -> None:
    session_id = "0f1e2d3c-session"
    assert fingerprint(session_id) == hashlib.sha256(session_id.encode()).hexdigest()[:8]
    assert fingerprint(session_id) == "bb2354c8"


def test_every_occurrence_of_the_id_is_replaced_and_nothing_else() -> None:
    session_id = "abc123"
    mark = f"session:{fingerprint(session_id)}"
    assert redact("resume abc123, then abc123 again", session_id) == (
        f"resume {mark}, then {mark} again"
    )
    assert redact("nothing to hide", session_id) == "nothing to hide"


def test_without_a_session_id_the_text_is_unchanged() -> None:
    assert redact("abc", None) == "abc"
    # An empty id would otherwise match between every two characters.
    assert redact("abc", "") == "abc"


@given(st.text(min_size=1), st.text(), st.text())
def test_redaction_replaces_each_occurrence_by_the_mark(
    session_id: str, before: str, after: str
) -> None:
    text = before + session_id + after
    mark = f"session:{fingerprint(session_id)}"
    assume(mark not in text)
    out = redact(text, session_id)
    # Every occurrence became the mark, and only those: putting the id back where each
    # mark stands gives the text again (the mark overlaps itself nowhere, as no hex
    # digit is an "s", so this undoing is exact).
    assert out.count(mark) == text.count(session_id) >= 1
    assert out.replace(mark, session_id) == text
