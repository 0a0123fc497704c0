"""WriteIdMemory against an oracle list of accepted ids."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from exec_runtime._core.write_ids import DEFAULT_WRITE_ID_CAPACITY, WriteIdMemory

CAPACITY = 5


class WriteIdMachine(RuleBasedStateMachine):
    """A small capacity and id space so duplicates and evictions both happen often."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = WriteIdMemory(CAPACITY)
        self.accepted: list[str] = []

    @rule(write_id=st.sampled_from([str(i) for i in range(12)]))
    def remember(self, write_id: str) -> None:
        expected_new = write_id not in self.accepted[-CAPACITY:]
        assert self.memory.remember(write_id) is expected_new
        if expected_new:
            self.accepted.append(write_id)

    @invariant()
    def window(self) -> None:
        assert len(self.memory) == len(self.accepted[-CAPACITY:])
        for write_id in self.accepted[-CAPACITY:]:
            assert write_id in self.memory


TestWriteIdMachine = WriteIdMachine.TestCase


def test_eviction_after_capacity_newer_ids() -> None:
    memory = WriteIdMemory()
    assert memory.capacity == DEFAULT_WRITE_ID_CAPACITY == 4096
    assert memory.remember("0")
    for i in range(1, 4096):
        assert memory.remember(str(i))
    assert not memory.remember("0")  # still one of the last 4096
    assert memory.remember("4096")  # evicts "0"
    assert memory.remember("0")  # forgotten, so new again
    assert len(memory) == 4096


def test_duplicate_does_not_refresh_age() -> None:
    memory = WriteIdMemory(2)
    assert memory.remember("a")
    assert memory.remember("b")
    assert not memory.remember("a")
    assert memory.remember("c")  # evicts "a", the oldest accepted
    assert memory.remember("a")


def test_a_capacity_of_one_remembers_the_last_id() -> None:
    memory = WriteIdMemory(1)
    assert memory.remember("a") is True
    assert memory.remember("a") is False
    assert memory.remember("b") is True
    assert "a" not in memory and memory.remember("a") is True
    with pytest.raises(ValueError, match=r"^capacity must be >= 1, got 0$"):
        WriteIdMemory(0)
