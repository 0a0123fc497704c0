"""ClientStream (``_core/client_stream.py``) directly: its one catch-up merge for the
network and the consumer (gap rules, held events, the cursor taken at merge time),
the queue and lag, and what may be acknowledged (lag, ``hold_output``)."""

from __future__ import annotations

import pytest

from exec_runtime._core.client_stream import ClientStream, Reader
from exec_runtime._core.events import Closed, Exited, Failed, Output, SeqEvent
from exec_runtime._core.recovery import GapLost, ReadSnapshot


def out(seq: int, data: bytes = b"x") -> Output:
    return Output(seq, "stdout", data)


def snap(
    chunks: list[Output],
    next_seq: int,
    *,
    exit_code: int | None = None,
    closed: bool = False,
    sandbox_denied: bool = False,
) -> ReadSnapshot:
    return ReadSnapshot(
        chunks, next_seq, exit_code is not None, exit_code, closed, sandbox_denied
    )


# --- the network's merge (gap fill, recovery) --------------------------------------------


def test_network_merge_takes_the_cursor_at_merge_time() -> None:
    """Pushes that arrived while the read was in flight are not published twice."""
    stream = ClientStream("p")
    assert stream.read_after(Reader.NETWORK) == 0  # the read is sent from 0
    stream.push_many([out(1), out(2)])  # ... then pushes advance the cursor
    answer = snap([out(1), out(2), out(3)], 4)
    assert stream.catch_up(Reader.NETWORK, answer) == [out(3)]
    assert stream.push_many(stream.catch_up(Reader.NETWORK, answer)) == [out(3)]
    assert stream.catch_up(Reader.NETWORK, answer) == []


def test_network_merge_held_events_explain_what_the_daemon_evicted() -> None:
    """The exit (seq 1) was missed; outputs 2..4 arrived and are held past the gap; the
    daemon retains only 4. The held ones explain 2 and 3, the read's exit seq 1."""
    stream = ClientStream("p")
    assert stream.push_many([out(2), out(3), out(4)]) == []
    assert set(stream.reorder.held()) == {2, 3, 4}
    answer = snap([out(4)], 6, exit_code=6, closed=True)
    events = stream.catch_up(Reader.NETWORK, answer)
    assert events == [Exited(1, 6), out(2), out(3), out(4), Closed(5)]
    assert stream.push_many(events) == events
    assert stream.exit_event == Exited(1, 6) and stream.closed_event == Closed(5)
    assert stream.finished and list(stream.queue) == events


def test_network_merge_without_the_held_events_is_a_gap() -> None:
    """The same read, with nothing held: seqs 2 and 3 are lost output."""
    stream = ClientStream("p")
    with pytest.raises(GapLost, match=r"seqs 1\.\.3 missing"):
        stream.catch_up(Reader.NETWORK, snap([out(4)], 6, exit_code=6, closed=True))


def test_a_held_close_past_the_read_ends_the_sequence() -> None:
    """A close pushed after the daemon answered (past its nextSeq) explains itself."""
    stream = ClientStream("p")
    stream.push_many([out(1)])
    stream.push_many([Closed(4)])  # held: 2 and 3 missing
    events = stream.catch_up(Reader.NETWORK, snap([out(3)], 4, exit_code=0))
    assert events == [Exited(2, 0), out(3), Closed(4)]
    stream.push_many(events)
    assert stream.closed_event == Closed(4) and not stream.reorder.held()


def test_a_legacy_exit_explains_its_seq_for_the_network() -> None:
    """A pushed exit without sandboxDenied waits for a read to complete it; its seq
    is known meanwhile and explains itself (the read rebuilds it, flag included)."""
    stream = ClientStream("p")
    stream.legacy_exit = Exited(2, 0)
    answer = snap([out(1)], 3, exit_code=0, sandbox_denied=True)
    assert stream.catch_up(Reader.NETWORK, answer) == [out(1), Exited(2, 0, True)]


def test_two_unexplained_seqs_with_one_exit_is_a_gap() -> None:
    stream = ClientStream("p")
    with pytest.raises(GapLost):
        stream.catch_up(Reader.NETWORK, snap([], 3, exit_code=0))
    assert stream.catch_up(Reader.NETWORK, snap([], 2, exit_code=0)) == [Exited(1, 0)]


def test_network_reads_from_what_a_lagging_consumer_has_not_taken() -> None:
    """afterSeq acknowledges: with a consumer lagging at queued_seq, the network reads
    from there (the daemon must keep the rest for the consumer), but merges from its
    own cursor."""
    stream = ClientStream("p", max_queue_events=2)
    stream.consumed = stream.consumer_active = True
    stream.push_many([out(1), out(2), out(3), out(4)])
    assert stream.lagging and stream.queued_seq == 2
    assert stream.read_after(Reader.NETWORK) == 2
    answer = snap([out(3), out(4), out(5)], 6)
    assert stream.catch_up(Reader.NETWORK, answer) == [out(5)]
    stream.consumer_active = False  # it left: nothing is held back for it
    assert stream.read_after(Reader.NETWORK) == 4


# --- the consumer's merge (lag) ------------------------------------------------------------


def lagging_stream(events: list[SeqEvent], room: int = 1) -> ClientStream:
    stream = ClientStream("p", max_queue_events=room)
    stream.consumed = stream.consumer_active = True
    stream.push_many(events)
    assert stream.lagging
    return stream


def test_consumer_merge_reads_from_its_own_cursor_and_leaves_lag_when_level() -> None:
    stream = lagging_stream([out(1), out(2), out(3)])
    assert stream.take() == out(1) and stream.take() is None
    assert stream.read_after(Reader.CONSUMER) == 1
    events = stream.catch_up(Reader.CONSUMER, snap([out(2), out(3)], 4))
    assert events == [out(2), out(3)]
    stream.accept_caught_up(events)
    assert not stream.lagging and list(stream.queue) == [out(2), out(3)]


def test_consumer_merge_rebuilds_an_exit_it_knows_but_has_not_queued() -> None:
    """The network published the exit (seq 3); the consumer, at seq 1, has not: the
    read rebuilds it; a read that lacks it cannot, and only the consumer fails."""
    stream = lagging_stream([out(1), out(2), Exited(3, 7), Closed(4)])
    stream.take()
    answer = snap([out(2)], 5, exit_code=7, closed=True)
    assert stream.catch_up(Reader.CONSUMER, answer) == [out(2), Exited(3, 7), Closed(4)]
    with pytest.raises(GapLost, match="exit at seq 3 is not in the read result"):
        stream.catch_up(Reader.CONSUMER, snap([out(2)], 4))
    assert stream.fail_consumer("gone")
    assert not stream.lagging and stream.take() == stream.consumer_failure
    assert stream.failure is None  # the process goes on


def test_consumer_merge_does_not_use_the_networks_held_events() -> None:
    """Events held past the network's gap are not the consumer's: its merge explains
    seqs by the read and the published exit only (the network's merge fills that gap)."""
    stream = lagging_stream([out(1)], room=0)
    stream.push_many([out(3)])  # held: 2 is missing
    with pytest.raises(GapLost):
        stream.catch_up(Reader.CONSUMER, snap([out(1)], 4))  # 2 and 3 evicted
    assert stream.catch_up(Reader.NETWORK, snap([out(2)], 4)) == [out(2), out(3)]


def test_evicted_output_after_the_consumer_cursor_is_a_gap() -> None:
    stream = lagging_stream([out(1), out(2), out(3)])
    stream.take()
    with pytest.raises(GapLost, match=r"seqs 2\.\.2 missing"):
        stream.catch_up(Reader.CONSUMER, snap([out(3)], 4))


# --- queue bounds and acknowledgement -----------------------------------------------------


def test_the_queue_is_bounded_by_bytes_too() -> None:
    stream = ClientStream("p", max_queue_bytes=4)
    stream.push_many([out(1, b"abc"), out(2, b"de")])
    assert stream.queued_seq == 1 and stream.lagging
    assert stream.queue_bytes == 3
    stream.take()
    assert stream.queue_bytes == 0


def test_acks_are_held_back_for_a_lagging_active_consumer_only() -> None:
    stream = lagging_stream([out(1), out(2), out(3)])
    assert stream.ackable_seq == 1
    assert stream.note_received([out(1), out(2), out(3)]) == 1
    stream.acked(1)
    assert stream.note_received([]) is None  # nothing more may go
    stream.consumer_active = False
    assert stream.ackable_seq == 3


def test_hold_output_acknowledges_only_what_a_consumer_took() -> None:
    stream = ClientStream("p", hold_output=True)
    assert stream.note_received(stream.push_many([out(1), out(2), out(3)])) is None
    assert stream.ackable_seq == 0  # no consumer yet: the daemon keeps it all
    stream.consumed = stream.consumer_active = True
    stream.take()
    assert stream.ackable_seq == 1
    stream.take()
    assert stream.note_received(stream.push_many([out(4)])) == 2
    stream.consumer_active = False  # the consumer left: nobody will take the rest
    assert stream.ackable_seq == 4
    without = ClientStream("p")
    assert without.note_received(without.push_many([out(1)])) == 1


def test_unacknowledged_output_adds_up_until_an_ack() -> None:
    """The counts that decide when the client acknowledges (ACK_BYTES, ACK_EVENTS)."""
    stream = ClientStream("p")
    stream.note_received(stream.push_many([out(1, b"abc"), out(2, b"de")]))
    stream.note_received(stream.push_many([out(3, b"f"), Exited(4, 0)]))
    assert (stream.unacked_bytes, stream.unacked_events) == (6, 4)
    stream.acked(4)
    assert (stream.unacked_bytes, stream.unacked_events, stream.acked_seq) == (0, 0, 4)
    stream.acked(2)  # an older ack sent late does not move the cursor back
    assert stream.acked_seq == 4


def test_a_failed_consumer_holds_no_acknowledgement_back() -> None:
    """Failing ends the consumer's lag: everything published may be acknowledged (the
    client sends that at once: the daemon may have paused the process for it)."""
    stream = lagging_stream([out(1), out(2), out(3)])
    stream.acked(1)
    assert stream.note_received([]) is None  # the lagging consumer holds acks back
    assert stream.fail_consumer("gone")
    assert not stream.lagging and stream.ackable_seq == 3
    assert stream.note_received([]) == 3
    assert not stream.fail_consumer("again")  # once
    assert stream.take() == out(1) and stream.take() == Failed("gone")


def test_a_failure_ends_the_sequence_once_and_outranks_the_consumers() -> None:
    stream = ClientStream("p")
    stream.push_many([out(1)])
    assert stream.fail("lost") is True and stream.finished
    assert stream.fail("again") is False
    assert not stream.fail_consumer("late")
    assert stream.take() == out(1) and stream.take() == Failed("lost")
    closed = ClientStream("p")
    closed.push_many([Exited(1, 0), Closed(2)])
    assert closed.fail("after the close") is False and closed.failure is None


def test_a_consumer_that_caught_up_past_the_network_ignores_the_pushes_it_read() -> None:
    """The consumer's read ran ahead of the pushes: they arrive later, already queued;
    they neither queue twice nor put the consumer back into lag."""
    stream = lagging_stream([out(1), out(2)])
    assert stream.take() == out(1)
    stream.accept_caught_up(stream.catch_up(Reader.CONSUMER, snap([out(2), out(3)], 4)))
    assert stream.queued_seq == 3 and stream.reorder.last_published_seq == 2
    assert not stream.lagging
    assert stream.push_many([out(3)]) == [out(3)]
    assert not stream.lagging and list(stream.queue) == [out(2), out(3)]


def test_catching_up_counts_the_queued_bytes_and_keeps_a_rebuilt_exit() -> None:
    """The queue's byte count covers what a catch-up queued; an exit the read rebuilt
    (the network had not published it) is kept: a later catch-up needs its seq."""
    stream = lagging_stream([out(1, b"a"), out(2, b"bc")])
    stream.take()
    events = stream.catch_up(Reader.CONSUMER, snap([out(2, b"bc"), out(3, b"def")], 5, exit_code=0))
    assert events == [out(2, b"bc"), out(3, b"def"), Exited(4, 0)]
    stream.accept_caught_up(events)
    assert stream.queue_bytes == 5 and stream.exit_event == Exited(4, 0)
    while stream.take() is not None:
        pass
    assert stream.queue_bytes == 0


def test_the_queue_takes_an_event_that_fills_its_byte_bound_exactly() -> None:
    stream = ClientStream("p", max_queue_bytes=4)
    stream.push_many([out(1, b"ab"), out(2, b"cd")])
    assert stream.queued_seq == 2 and not stream.lagging
    assert stream.queue_bytes == 4 and stream.process_id == "p"


def test_a_failed_consumer_is_queued_nothing_more() -> None:
    """After its Failed the consumer reads nothing: what the network publishes next
    is not queued behind the failure (it would sit there, past a gap)."""
    stream = lagging_stream([out(1), out(2)])
    assert stream.take() == out(1)
    assert stream.fail_consumer("gone")
    stream.push_many([out(3)])
    assert list(stream.queue) == [] and stream.take() == Failed("gone")


def test_no_consumer_yet_holds_no_acknowledgement_back() -> None:
    """A stream nobody iterates yet lags once its queue is full, but acknowledges all
    that arrived (a late consumer reads back what the daemon still retains), and has
    no legacy exit to fall back on (the shell tests it with ``is not None``)."""
    stream = ClientStream("p", max_queue_events=1)
    assert stream.note_received(stream.push_many([out(1), out(2), out(3)])) == 3
    assert stream.lagging and not stream.consumed and not stream.consumer_active
    assert stream.legacy_exit is None
