"""Idempotent-producer state of one partition (Kafka's ProducerStateManager), sans-I/O.

For each producer id the table keeps its epoch and the metadata of its last five appended batches (first and
last sequence, first and last offset). Before a producer batch is appended, `check()` says whether to append
it, answer it as a duplicate of an earlier append (a client retry: Kafka answers success with the original
base offset), or refuse it (OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH). After the append,
`record()` remembers it.

Everything the table needs is in the 61-byte batch header (producerId, producerEpoch, baseSequence,
lastOffsetDelta, maxTimestamp), so `load()` rebuilds it from stored batches without decoding a record: after
a restart, and on a new leader, by scanning the log from any point to its end. `end_offset` is the log
offset up to which the table reflects the log.

Pure: no I/O, no clock (timestamps come in as arguments).
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field

# Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN: clients keep at most 5 requests in flight per partition.
BATCHES_PER_PRODUCER = 5
# A bound on producers remembered per partition (least recently appended ones are forgotten first; a
# forgotten producer is treated as new, as Kafka does once producer.id.expiration.ms has passed).
DEFAULT_MAX_PRODUCERS = 100_000
# Kafka's producer.id.expiration.ms default: one day.
DEFAULT_PRODUCER_ID_EXPIRATION_MS = 86_400_000

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
SEQUENCE_WRAP = 0x80000000  # sequences wrap from int32 max to 0

# Header fields read by `load`: attributes @21, lastOffsetDelta @23, maxTimestamp @35, producerId @43,
# producerEpoch @51, baseSequence @53.
_PREFIX = struct.Struct(">qi")  # baseOffset, batchLength
_TAIL = struct.Struct(">hiqqqhi")  # attributes .. baseSequence, from byte 21
_HEADER_SIZE = 61
_LOG_OVERHEAD = 12
_MIN_BATCH_LENGTH = _HEADER_SIZE - _LOG_OVERHEAD
_ATTR_CONTROL = 0x20

APPEND = "append"
DUPLICATE = "duplicate"
REJECT = "reject"


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    return (base_sequence + last_offset_delta) % SEQUENCE_WRAP


def in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == SEQUENCE_WRAP - 1)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    producer_epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=BATCHES_PER_PRODUCER))
    last_timestamp: int = -1

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    def find_duplicate(self, producer_epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if producer_epoch != self.producer_epoch:
            return None
        for meta in self.batches:
            if meta.first_seq == first_seq and meta.last_seq == last_seq:
                return meta
        return None


@dataclass(frozen=True, slots=True)
class SequenceCheck:
    """What to do with a producer batch: APPEND it, answer it as the DUPLICATE of `duplicate`, or REJECT it
    with `error_name` (a Kafka error name) and `message`."""

    verdict: str
    duplicate: BatchMetadata | None = None
    error_name: str = "NONE"
    message: str = ""


_APPEND = SequenceCheck(APPEND)


class ProducerStateTable:
    """The producer state of one partition. Not thread-safe: one owner (the partition's event loop)."""

    def __init__(self, *, end_offset: int = 0, max_producers: int = DEFAULT_MAX_PRODUCERS) -> None:
        assert max_producers > 0 and end_offset >= 0
        self._producers: OrderedDict[int, ProducerEntry] = OrderedDict()
        self.max_producers = max_producers
        self.end_offset = end_offset  # the table reflects every log batch below this offset

    def __len__(self) -> int:
        return len(self._producers)

    def entry(self, producer_id: int) -> ProducerEntry | None:
        return self._producers.get(producer_id)

    def producer_ids(self) -> list[int]:
        return list(self._producers)

    # -- the append path -----------------------------------------------------------------------------

    def check(self, producer_id: int, producer_epoch: int, first_seq: int, last_seq: int) -> SequenceCheck:
        """Kafka's duplicate, epoch and sequence checks for a client batch, in Kafka's order."""
        if producer_id < 0:
            return _APPEND  # not an idempotent producer
        if producer_epoch < 0 or first_seq < 0:
            return SequenceCheck(REJECT, error_name="INVALID_RECORD",
                                 message=f"producer {producer_id}: a batch with a producer id needs an epoch and a "
                                         f"base sequence (got epoch {producer_epoch}, sequence {first_seq})")
        entry = self._producers.get(producer_id)
        if entry is None:
            # Unknown (new, or its state expired): any sequence is accepted, as in Kafka since KIP-360.
            return _APPEND
        if producer_epoch < entry.producer_epoch:
            return SequenceCheck(REJECT, error_name="INVALID_PRODUCER_EPOCH",
                                 message=f"producer {producer_id}: epoch {producer_epoch} is older than the "
                                         f"current epoch {entry.producer_epoch}")
        duplicate = entry.find_duplicate(producer_epoch, first_seq, last_seq)
        if duplicate is not None:
            return SequenceCheck(DUPLICATE, duplicate=duplicate)
        if producer_epoch > entry.producer_epoch:
            if first_seq != 0:
                return SequenceCheck(REJECT, error_name="OUT_OF_ORDER_SEQUENCE_NUMBER",
                                     message=f"producer {producer_id}: new epoch {producer_epoch} must start at "
                                             f"sequence 0, not {first_seq}")
            return _APPEND
        if entry.batches and not in_sequence(entry.last_seq, first_seq):
            return SequenceCheck(REJECT, error_name="OUT_OF_ORDER_SEQUENCE_NUMBER",
                                 message=f"producer {producer_id} epoch {producer_epoch}: sequence {first_seq} "
                                         f"does not follow {entry.last_seq}")
        return _APPEND

    def record(self, producer_id: int, producer_epoch: int, first_seq: int, last_seq: int, first_offset: int,
               last_offset: int, max_timestamp: int) -> None:
        """Remember an appended batch (from the append path, or from the log when rebuilding)."""
        assert first_offset <= last_offset, "a batch holds at least one offset"
        assert last_offset >= self.end_offset, "offsets only grow"
        self.end_offset = last_offset + 1
        if producer_id < 0:
            return
        producers = self._producers
        entry = producers.get(producer_id)
        if entry is None:
            entry = producers[producer_id] = ProducerEntry(producer_id, producer_epoch)
            if len(producers) > self.max_producers:
                producers.popitem(last=False)
        else:
            producers.move_to_end(producer_id)
            if producer_epoch != entry.producer_epoch:
                # A new epoch starts a new sequence space (the log is the truth, so no ordering assert here).
                entry.producer_epoch = producer_epoch
                entry.batches.clear()
        entry.batches.append(BatchMetadata(first_seq, last_seq, first_offset, last_offset, max_timestamp))
        if max_timestamp > entry.last_timestamp:
            entry.last_timestamp = max_timestamp

    def advance(self, end_offset: int) -> None:
        """Batches below `end_offset` carried no producer state (e.g. a gap or batches read elsewhere)."""
        assert end_offset >= self.end_offset, "offsets only grow"
        self.end_offset = end_offset

    # -- rebuilding from the log ----------------------------------------------------------------------

    def load(self, buf: bytes | bytearray | memoryview) -> int:
        """Apply stored batches (headers only, no CRC check: the log validated them on append).

        Batches ending below `end_offset` are skipped, so overlapping reads are harmless. Returns the offset
        after the last whole batch seen (`end_offset` if there was none).
        """
        view = memoryview(buf)
        end = len(view)
        pos = 0
        prefix = _PREFIX.unpack_from
        tail = _TAIL.unpack_from
        while pos + _HEADER_SIZE <= end:
            base_offset, batch_length = prefix(view, pos)
            size = _LOG_OVERHEAD + batch_length
            if batch_length < _MIN_BATCH_LENGTH or pos + size > end:
                break
            attributes, last_delta, _base_ts, max_ts, producer_id, epoch, base_seq = tail(view, pos + 21)
            last_offset = base_offset + last_delta
            if last_offset >= self.end_offset:
                if producer_id >= 0 and not attributes & _ATTR_CONTROL and base_seq >= 0:
                    self.record(producer_id, epoch, base_seq, last_sequence(base_seq, last_delta),
                                base_offset, last_offset, max_ts)
                else:
                    self.end_offset = last_offset + 1
            pos += size
        return self.end_offset

    # -- housekeeping ---------------------------------------------------------------------------------

    def expire(self, now_ms: int, max_age_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS) -> int:
        """Forget producers whose last batch is older than `max_age_ms` (producer.id.expiration.ms)."""
        doomed = [pid for pid, e in self._producers.items() if e.last_timestamp < now_ms - max_age_ms]
        for pid in doomed:
            del self._producers[pid]
        return len(doomed)

    def reset(self, end_offset: int) -> None:
        """Forget everything (the log was truncated below `end_offset`); rebuild with `load`."""
        self._producers.clear()
        self.end_offset = end_offset


# -- the partition append path --------------------------------------------------------------------------

# Fields of a batch header tuple (storage.record_batch.HEADER order) used below.
_H_BASE_OFFSET, _H_LENGTH, _H_ATTRIBUTES, _H_LAST_DELTA, _H_MAX_TS, _H_PID, _H_EPOCH, _H_SEQ = 0, 1, 5, 6, 8, 9, 10, 11
_PEEK = struct.Struct(">qi")  # baseOffset, batchLength
_PEEK_PID = struct.Struct(">q")  # producerId @43


def has_producer_ids(buf: bytes | bytearray | memoryview) -> bool:
    """Whether any batch of a (not yet validated) record set carries a producer id: headers only, no CRC.
    Stops quietly at anything malformed (the append's validation reports it)."""
    end = len(buf)
    pos = 0
    while pos + _HEADER_SIZE <= end:
        _, length = _PEEK.unpack_from(buf, pos)
        if length < _MIN_BATCH_LENGTH:
            return False
        (pid,) = _PEEK_PID.unpack_from(buf, pos + 43)
        if pid >= 0:
            return True
        pos += _LOG_OVERHEAD + length
    return False


class ProducerStates:
    """The producer-state table of one partition, kept beside its log by the partition's append path.

    Built lazily (the first time an idempotent batch arrives) by scanning batch headers of the log from its
    start: `read(offset, max_bytes)` returns stored batches (not capped by the high watermark: an
    unacknowledged batch is still one a retry must match). The owner records each batch it appends
    (`record_appended`) and calls `invalidate()` when its log may have lost a tail (truncation, a new
    leader term): the next check rebuilds the table from the log.
    """

    SCAN_CHUNK_BYTES = 4 * 1024 * 1024

    def __init__(self, *, max_producers: int = DEFAULT_MAX_PRODUCERS) -> None:
        self._table: ProducerStateTable | None = None
        self._max_producers = max_producers

    @property
    def table(self) -> ProducerStateTable | None:
        return self._table

    def invalidate(self) -> None:
        self._table = None

    def prepare(self, read, log_start_offset: int, log_end_offset: int, next_offset: int | None = None
                ) -> ProducerStateTable:
        """The table, caught up with the log up to `log_end_offset` (then advanced to `next_offset`, the offset
        the next append gets, when offsets between the two hold no producer batches, e.g. a Raft no-op)."""
        table = self._table
        if table is None or table.end_offset > max(log_end_offset, next_offset or 0):
            table = self._table = ProducerStateTable(end_offset=log_start_offset, max_producers=self._max_producers)
        offset = max(table.end_offset, log_start_offset)
        if offset > table.end_offset:
            table.advance(offset)
        while offset < log_end_offset:
            data = read(offset, self.SCAN_CHUNK_BYTES)
            if not data:
                break
            after = table.load(data)
            if after <= offset:
                break
            offset = after
        if next_offset is not None and next_offset > table.end_offset:
            table.advance(next_offset)
        return table

    @staticmethod
    def check(table: ProducerStateTable, headers: list[tuple[int, ...]]) -> SequenceCheck:
        """The verdict for a validated run of producer batches (HEADER tuples). Several batches of one
        producer in one request are checked against each other too; a duplicate must come alone (Kafka's
        produce v3+ carries one batch per partition)."""
        if len(headers) == 1:
            h = headers[0]
            pid = h[_H_PID]
            if pid < 0:
                return _APPEND
            return table.check(pid, h[_H_EPOCH], h[_H_SEQ], last_sequence(h[_H_SEQ], h[_H_LAST_DELTA])
                               if h[_H_SEQ] >= 0 else NO_SEQUENCE)
        last: dict[int, tuple[int, int]] = {}  # pid -> (epoch, last seq) of earlier batches in this run
        for h in headers:
            pid = h[_H_PID]
            if pid < 0:
                continue
            epoch, seq = h[_H_EPOCH], h[_H_SEQ]
            seq_last = last_sequence(seq, h[_H_LAST_DELTA]) if seq >= 0 else NO_SEQUENCE
            earlier = last.get(pid)
            if earlier is None:
                verdict = table.check(pid, epoch, seq, seq_last)
                if verdict.verdict == DUPLICATE:
                    return SequenceCheck(REJECT, error_name="DUPLICATE_SEQUENCE_NUMBER",
                                         message=f"producer {pid}: a retried batch must be sent alone")
                if verdict.verdict == REJECT:
                    return verdict
            elif epoch != earlier[0] or not in_sequence(earlier[1], seq):
                return SequenceCheck(REJECT, error_name="OUT_OF_ORDER_SEQUENCE_NUMBER",
                                     message=f"producer {pid}: batches of one request are out of sequence")
            last[pid] = (epoch, seq_last)
        return _APPEND

    @staticmethod
    def record_appended(table: ProducerStateTable, h: tuple[int, ...], base_offset: int, last_offset: int,
                        max_timestamp: int) -> None:
        """Remember a batch just appended at [base_offset, last_offset] (offsets assigned by the append)."""
        if last_offset < table.end_offset:
            return
        if base_offset > table.end_offset:
            table.advance(base_offset)
        pid, seq = h[_H_PID], h[_H_SEQ]
        if pid >= 0 and seq >= 0 and not h[_H_ATTRIBUTES] & _ATTR_CONTROL:
            table.record(pid, h[_H_EPOCH], seq, last_sequence(seq, h[_H_LAST_DELTA]), base_offset, last_offset,
                         max_timestamp)
        else:
            table.advance(last_offset + 1)
