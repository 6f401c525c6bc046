"""ProducerStateTable (sans-I/O idempotent-producer state) and the producer-id allocator, without sockets."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.broker.producer_state import (APPEND, DUPLICATE, REJECT, SEQUENCE_WRAP, ProducerStateTable,
                                           last_sequence)
from cluster.kafka.producer_ids import FileProducerIdBlocks, ProducerIdAllocator, ProducerIdFileError
from storage.record_batch import RecordInput, build_batch, build_control_batch

PID = 4242


def append(table: ProducerStateTable, pid: int, epoch: int, first_seq: int, count: int, ts: int = 1000):
    """Check then record like the append path; returns (verdict, base offset or error name)."""
    last_seq = last_sequence(first_seq, count - 1)
    check = table.check(pid, epoch, first_seq, last_seq)
    if check.verdict == APPEND:
        base = table.end_offset
        table.record(pid, epoch, first_seq, last_seq, base, base + count - 1, ts)
        return APPEND, base
    if check.verdict == DUPLICATE:
        return DUPLICATE, check.duplicate.first_offset
    return REJECT, check.error_name


def test_new_producer_then_in_sequence_batches_append():
    t = ProducerStateTable()
    assert append(t, PID, 0, 0, 3) == (APPEND, 0)
    assert append(t, PID, 0, 3, 2) == (APPEND, 3)
    assert t.entry(PID).last_seq == 4 and t.end_offset == 5


def test_unknown_producer_may_start_at_any_sequence():
    # Kafka since KIP-360: its state may have expired, so a non-zero first sequence is accepted.
    t = ProducerStateTable()
    assert append(t, PID, 3, 17, 1) == (APPEND, 0)


def test_retry_of_any_of_the_last_five_batches_gets_its_original_offset():
    t = ProducerStateTable()
    bases = [append(t, PID, 0, seq, 1)[1] for seq in range(7)]
    assert bases == list(range(7))
    for seq in range(2, 7):  # the last five
        assert append(t, PID, 0, seq, 1) == (DUPLICATE, seq)
    assert t.end_offset == 7, "a duplicate appends nothing"
    # Older than the last five: no longer recognisable, so it is out of order (never appended twice).
    assert append(t, PID, 0, 1, 1) == (REJECT, "OUT_OF_ORDER_SEQUENCE_NUMBER")


def test_duplicate_must_match_the_whole_sequence_range():
    t = ProducerStateTable()
    append(t, PID, 0, 0, 5)
    assert append(t, PID, 0, 0, 3)[0] == REJECT  # same first sequence, different batch


def test_sequence_gap_and_going_back_are_out_of_order():
    t = ProducerStateTable()
    append(t, PID, 0, 0, 2)
    assert append(t, PID, 0, 5, 1) == (REJECT, "OUT_OF_ORDER_SEQUENCE_NUMBER")
    assert append(t, PID, 0, 1, 1) == (REJECT, "OUT_OF_ORDER_SEQUENCE_NUMBER")
    assert append(t, PID, 0, 2, 1) == (APPEND, 2)


def test_epochs_fence_old_producers_and_restart_sequences():
    t = ProducerStateTable()
    append(t, PID, 1, 0, 2)
    assert append(t, PID, 0, 2, 1) == (REJECT, "INVALID_PRODUCER_EPOCH")
    assert append(t, PID, 2, 5, 1) == (REJECT, "OUT_OF_ORDER_SEQUENCE_NUMBER")  # a new epoch starts at 0
    assert append(t, PID, 2, 0, 1) == (APPEND, 2)
    assert append(t, PID, 1, 0, 2) == (REJECT, "INVALID_PRODUCER_EPOCH")  # not a duplicate any more
    assert t.entry(PID).producer_epoch == 2


def test_sequences_wrap_at_int32_max():
    t = ProducerStateTable()
    top = SEQUENCE_WRAP - 2
    assert append(t, PID, 0, top, 2) == (APPEND, 0)  # sequences top, top+1 = int32 max
    assert t.entry(PID).last_seq == SEQUENCE_WRAP - 1
    assert append(t, PID, 0, 0, 1) == (APPEND, 2)
    assert last_sequence(SEQUENCE_WRAP - 1, 2) == 1


def test_batches_without_producer_id_are_not_tracked_and_bad_ones_refused():
    t = ProducerStateTable()
    assert t.check(-1, -1, -1, -1).verdict == APPEND
    t.record(-1, -1, -1, -1, 0, 9, 0)
    assert len(t) == 0 and t.end_offset == 10
    assert t.check(PID, 0, -1, -1).error_name == "INVALID_RECORD"


def _log(*batches: bytes) -> bytes:
    """Stored bytes: batches with consecutive base offsets, as the log assigns them."""
    out = bytearray()
    offset = 0
    for b in batches:
        b = bytearray(b)
        b[0:8] = offset.to_bytes(8, "big")
        out += b
        offset += int.from_bytes(b[23:27], "big") + 1
    return bytes(out)


def _pbatch(n: int, pid: int, epoch: int, seq: int, ts: int = 1000) -> bytes:
    return build_batch([RecordInput(None, b"v%d" % i, ts) for i in range(n)], producer_id=pid,
                       producer_epoch=epoch, base_sequence=seq)


def test_load_rebuilds_the_table_from_batch_headers():
    data = _log(_pbatch(3, PID, 0, 0), build_batch([RecordInput(None, b"plain", 1)]),
                build_control_batch(2, b"", timestamp=1), _pbatch(2, PID, 0, 3), _pbatch(1, 7, 4, 9))
    t = ProducerStateTable()
    assert t.load(data) == 8
    assert append(t, PID, 0, 0, 3) == (DUPLICATE, 0)
    assert append(t, PID, 0, 3, 2) == (DUPLICATE, 5)
    assert append(t, PID, 0, 6, 1) == (REJECT, "OUT_OF_ORDER_SEQUENCE_NUMBER")
    assert append(t, 7, 4, 10, 1) == (APPEND, 8)
    # Loading the same bytes again changes nothing (batches below end_offset are skipped).
    before = t.entry(PID).batches.copy()
    t.load(data)
    assert t.entry(PID).batches == before and t.end_offset == 9


def test_load_stops_at_a_partial_batch():
    data = _log(_pbatch(3, PID, 0, 0), _pbatch(2, PID, 0, 3))
    t = ProducerStateTable()
    assert t.load(data[:-10]) == 3
    assert t.load(data[len(_pbatch(3, PID, 0, 0)):]) == 5


def test_expire_and_max_producers():
    t = ProducerStateTable(max_producers=3)
    for pid in range(5):
        append(t, pid, 0, 0, 1, ts=pid * 1000)
    assert sorted(t.producer_ids()) == [2, 3, 4], "the least recently appended producers go first"
    assert t.expire(now_ms=4500, max_age_ms=1000) == 2
    assert t.producer_ids() == [4]


def test_reset_forgets_everything():
    t = ProducerStateTable()
    append(t, PID, 0, 0, 1)
    t.reset(0)
    assert len(t) == 0 and t.end_offset == 0


# A model check: a producer with up to 5 batches in flight that may retry any of them, skip sequences,
# or bump its epoch. The table must (1) never append a retry twice, (2) answer a retry of one of the last
# five with its original offset, (3) give the same verdicts after being rebuilt from the log.
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["next", "retry", "gap", "bump", "old"]), st.integers(1, 4),
                          st.integers(0, 6)), max_size=40))
def test_model_against_log_rebuild(actions):
    t = ProducerStateTable()
    log = bytearray()
    epoch, next_seq = 0, 0
    sent: list[tuple[int, int, int, int]] = []  # (epoch, first_seq, count, base offset)
    for action, count, back in actions:
        if action == "next":
            verdict, base = append(t, PID, epoch, next_seq, count)
            assert verdict == APPEND
            sent.append((epoch, next_seq, count, base))
            log += _stamped(_pbatch(count, PID, epoch, next_seq), base)
            next_seq = (next_seq + count) % SEQUENCE_WRAP
        elif action == "retry" and sent:
            e, seq, n, base = sent[-1 - back % len(sent)]
            table_epoch = sent[-1][0]  # the table learns of an epoch from its first batch
            recent = [s for s in sent if s[0] == table_epoch][-5:]
            verdict, got = append(t, PID, e, seq, n)
            if (e, seq, n, base) in recent:
                assert (verdict, got) == (DUPLICATE, base)
            else:
                assert verdict == REJECT
        elif action == "gap" and sent:  # (an unknown producer may start anywhere)
            assert append(t, PID, epoch, next_seq + 1 + back, count)[0] == REJECT
        elif action == "bump":
            epoch, next_seq = epoch + 1, 0
        elif action == "old" and sent and sent[-1][0] > 0:
            assert append(t, PID, sent[-1][0] - 1, 0, 1) == (REJECT, "INVALID_PRODUCER_EPOCH")
    rebuilt = ProducerStateTable()
    rebuilt.load(bytes(log))
    assert rebuilt.end_offset == t.end_offset
    live, loaded = t.entry(PID), rebuilt.entry(PID)
    assert (live is None) == (loaded is None)
    if live is not None:
        assert list(live.batches) == list(loaded.batches) and live.producer_epoch == loaded.producer_epoch


def _stamped(b: bytes, base: int) -> bytes:
    out = bytearray(b)
    out[0:8] = base.to_bytes(8, "big")
    return bytes(out)


# ----------------------------------------------------------------------------------- producer ids

def test_producer_ids_are_unique_across_restarts(tmp_path):
    path = tmp_path / "ids.json"

    async def take(n: int, block: int) -> list[int]:
        alloc = ProducerIdAllocator(FileProducerIdBlocks(path).reserve, block_size=block)
        return list(await asyncio.gather(*(alloc.allocate() for _ in range(n))))

    first = asyncio.run(take(25, 10))
    assert first == list(range(25))
    assert json.loads(path.read_text())["next_block_start"] == 30, "a block is reserved before it is used"
    second = asyncio.run(take(5, 10))
    assert second == list(range(30, 35)), "ids of a block that was never used up are skipped, never reused"


def test_a_corrupt_producer_id_file_is_refused(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text('{"version": 1, "next_block_start": -5}')
    with pytest.raises(ProducerIdFileError):
        FileProducerIdBlocks(path).reserve_sync(10)
    path.write_text("not json")
    with pytest.raises(ProducerIdFileError):
        FileProducerIdBlocks(path).reserve_sync(10)
