"""Kafka RecordBatch v2 (magic 2): the one data format of tidelog, on the wire and on disk.

Layout (big-endian), offsets into a batch:
     0 baseOffset int64            8 batchLength int32 (bytes after this field)
    12 partitionLeaderEpoch int32  16 magic int8 = 2        17 crc uint32 (CRC-32C of bytes 21..end)
    21 attributes int16            23 lastOffsetDelta int32 27 baseTimestamp int64
    35 maxTimestamp int64          43 producerId int64      51 producerEpoch int16
    53 baseSequence int32          57 recordsCount int32    61 records (one compressed blob if compressed)

The broker side of this module (`validate_batches`, `stamp_batch`) looks only at the 61-byte header and the
CRC: baseOffset and partitionLeaderEpoch lie outside the CRC, so stamping them costs no CRC work. The client
side (`build_batch`, `decode_batch`) encodes and decodes individual records; the broker never calls it on
the hot path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import crc32c

from storage.compression import Compression, DecompressionError, compress, decompress

MAGIC = 2
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the part not counted in batchLength
CRC_START = 21
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD  # a batch with no records

ATTR_COMPRESSION_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08  # 1 = LogAppendTime
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
ATTR_DELETE_HORIZON = 0x40

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1
NO_TIMESTAMP = -1

TIMESTAMP_CREATE_TIME = 0
TIMESTAMP_LOG_APPEND_TIME = 1

# Control record types (the key of the single record of a control batch). 0/1 are transaction markers;
# tidelog uses KRaft's LEADER_CHANGE for the Raft leader's no-op and KRAFT_VOTERS for membership entries.
CONTROL_ABORT = 0
CONTROL_COMMIT = 1
CONTROL_LEADER_CHANGE = 2
CONTROL_KRAFT_VOTERS = 6

_MAX_CODEC = int(Compression.ZSTD)
_OFFSET = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_INT16 = struct.Struct(">h")
_TIMESTAMP_AND_ATTRS = struct.Struct(">h")


class RecordBatchError(ValueError):
    """A batch that cannot be accepted. `error_name` is the Kafka error the front doors answer with."""

    error_name = "CORRUPT_MESSAGE"


class CorruptBatchError(RecordBatchError):
    error_name = "CORRUPT_MESSAGE"


class BatchTooLargeError(RecordBatchError):
    error_name = "MESSAGE_TOO_LARGE"


class InvalidBatchError(RecordBatchError):
    error_name = "INVALID_RECORD"


class UnsupportedCompressionError(RecordBatchError):
    error_name = "UNSUPPORTED_COMPRESSION_TYPE"


@dataclass(slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies."""
        return LOG_OVERHEAD + self.batch_length

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & ATTR_COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> int:
        return 1 if self.attributes & ATTR_TIMESTAMP_TYPE else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def last_sequence(self) -> int:
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        # Sequences wrap at int32 max, as in Kafka's DefaultRecordBatch.incrementSequence.
        return (self.base_sequence + self.last_offset_delta) % 0x80000000


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the 61-byte header at `pos`. The caller checks there are HEADER_SIZE bytes."""
    return BatchHeader(*HEADER.unpack_from(buf, pos))


def compute_crc(buf: bytes | bytearray | memoryview, pos: int, size: int) -> int:
    return crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size])


def iter_headers(buf: bytes | bytearray | memoryview) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for each whole batch of stored bytes (no CRC check). Stops at a short tail."""
    pos = 0
    end = len(buf)
    while pos + HEADER_SIZE <= end:
        header = parse_header(buf, pos)
        size = header.size
        if header.batch_length < MIN_BATCH_LENGTH or pos + size > end:
            return
        yield pos, header
        pos += size


def validate_batches(
    buf: bytes | bytearray | memoryview,
    *,
    max_batch_bytes: int,
    from_producer: bool = True,
) -> list[BatchHeader]:
    """Check a run of batches as a leader receives them: framing, magic, CRC-32C, counts. Never decodes records.

    `from_producer` adds the rules for client-produced batches: at least one record, offset deltas dense
    (a client never leaves gaps), no control batches. Replicated batches (compacted ones have gaps) skip them.
    Raises a RecordBatchError subclass; returns the parsed headers otherwise.
    """
    return [BatchHeader(*h) for h in validate_batches_raw(buf, max_batch_bytes=max_batch_bytes,
                                                          from_producer=from_producer)]


def validate_batches_raw(
    buf: bytes | bytearray | memoryview,
    *,
    max_batch_bytes: int,
    from_producer: bool = True,
) -> list[tuple[int, ...]]:
    """`validate_batches` for the append hot path: the same checks and errors, but each header is returned as
    the plain HEADER tuple (fields in HEADER order: 0 baseOffset, 1 batchLength, 2 partitionLeaderEpoch,
    3 magic, 4 crc, 5 attributes, 6 lastOffsetDelta, 7 baseTimestamp, 8 maxTimestamp, 9 producerId,
    10 producerEpoch, 11 baseSequence, 12 recordsCount). Skipping the per-batch object keeps a 1 MiB run of
    16 KiB batches dominated by the CRC itself."""
    view = memoryview(buf)
    end = len(view)
    if end == 0:
        raise InvalidBatchError("empty record set")
    headers: list[tuple[int, ...]] = []
    add = headers.append
    unpack = HEADER.unpack_from
    crc = crc32c.crc32c
    # Locals, not module globals or enum members, inside the per-batch loop (an IntEnum lookup costs ~0.2 us).
    header_size, overhead, crc_start, magic, min_length = HEADER_SIZE, LOG_OVERHEAD, CRC_START, MAGIC, MIN_BATCH_LENGTH
    codec_mask, max_codec, control = ATTR_COMPRESSION_MASK, _MAX_CODEC, ATTR_CONTROL
    pos = 0
    while pos < end:
        if end - pos < header_size:
            raise CorruptBatchError(f"truncated batch: {end - pos} bytes left, a batch header is {HEADER_SIZE}")
        h = unpack(view, pos)
        size = h[1] + overhead
        if h[3] != magic or h[1] < min_length or size > max_batch_bytes or pos + size > end:
            _raise_framing(h, pos, end, max_batch_bytes)
        if crc(view[pos + crc_start : pos + size]) != h[4]:
            raise CorruptBatchError(f"CRC-32C mismatch in batch at byte {pos}")
        if (h[5] & codec_mask) > max_codec or h[12] < 0 or h[6] < 0 or (
            from_producer and (h[12] == 0 or h[6] != h[12] - 1 or h[5] & control)
        ):
            _raise_content(h, from_producer)
        add(h)
        pos += size
    return headers


def _raise_framing(h: tuple[int, ...], pos: int, end: int, max_batch_bytes: int) -> None:
    """The first framing rule `h` breaks, in the order a reader meets them."""
    if h[3] != MAGIC:
        raise CorruptBatchError(f"unsupported record batch magic {h[3]} (only magic 2 is accepted)")
    if h[1] < MIN_BATCH_LENGTH:
        raise CorruptBatchError(f"batch length {h[1]} is below the minimum {MIN_BATCH_LENGTH}")
    size = h[1] + LOG_OVERHEAD
    if size > max_batch_bytes:
        raise BatchTooLargeError(f"batch of {size} bytes exceeds max.message.bytes={max_batch_bytes}")
    raise CorruptBatchError(f"batch claims {size} bytes but only {end - pos} remain")


def _raise_content(h: tuple[int, ...], from_producer: bool) -> None:
    if h[5] & ATTR_COMPRESSION_MASK > Compression.ZSTD:
        raise UnsupportedCompressionError(f"unknown compression codec {h[5] & ATTR_COMPRESSION_MASK}")
    if h[12] < 0 or h[6] < 0:
        raise CorruptBatchError("negative record count or offset delta")
    if from_producer:
        if h[12] == 0:
            raise InvalidBatchError("a produced batch must hold at least one record")
        if h[6] != h[12] - 1:
            raise InvalidBatchError(f"lastOffsetDelta {h[6]} does not match {h[12]} records")
        raise InvalidBatchError("clients may not produce control batches")


def stamp_batch(buf: bytearray | memoryview, pos: int, base_offset: int, partition_leader_epoch: int) -> None:
    """Write baseOffset and partitionLeaderEpoch in place. Both are outside the CRC."""
    _OFFSET.pack_into(buf, pos, base_offset)
    _INT32.pack_into(buf, pos + 12, partition_leader_epoch)


def set_log_append_time(buf: bytearray | memoryview, pos: int, size: int, now_ms: int) -> None:
    """Topic with message.timestamp.type=LogAppendTime: set maxTimestamp and the type bit; re-CRC (Kafka does too)."""
    (attributes,) = _INT16.unpack_from(buf, pos + 21)
    _INT16.pack_into(buf, pos + 21, attributes | ATTR_TIMESTAMP_TYPE)
    _OFFSET.pack_into(buf, pos + 35, now_ms)
    struct.pack_into(">I", buf, pos + 17, compute_crc(buf, pos, size))


# ---------------------------------------------------------------------------------------------------------
# Client side: records


@dataclass(slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def encode_varint(n: int, out: bytearray) -> None:
    """Append a zigzag LEB128 varint (Kafka's varint/varlong for records)."""
    v = _zigzag(n) & 0xFFFFFFFFFFFFFFFF
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def decode_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Return (value, next position). Raises CorruptBatchError on a truncated or overlong varint."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise CorruptBatchError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise CorruptBatchError("varint is too long")
    return (result >> 1) ^ -(result & 1), pos


def _encode_record(
    out: bytearray,
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> None:
    body = bytearray(b"\x00")  # record attributes: unused
    encode_varint(timestamp_delta, body)
    encode_varint(offset_delta, body)
    if key is None:
        body.append(1)  # zigzag(-1)
    else:
        encode_varint(len(key), body)
        body += key
    if value is None:
        body.append(1)
    else:
        encode_varint(len(value), body)
        body += value
    encode_varint(len(headers), body)
    for hkey, hvalue in headers:
        hk = hkey.encode()
        encode_varint(len(hk), body)
        body += hk
        if hvalue is None:
            body.append(1)
        else:
            encode_varint(len(hvalue), body)
            body += hvalue
    encode_varint(len(body), out)
    out += body


@dataclass(slots=True)
class RecordInput:
    """What a producer hands to `build_batch`."""

    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Sequence[tuple[str, bytes | None]] = ()


def build_batch(
    records: Sequence[RecordInput],
    *,
    compression: Compression = Compression.NONE,
    base_offset: int = 0,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    is_transactional: bool = False,
    is_control: bool = False,
    timestamp_type: int = TIMESTAMP_CREATE_TIME,
) -> bytes:
    if not records:
        raise ValueError("a batch holds at least one record")
    base_timestamp = records[0].timestamp
    max_timestamp = base_timestamp
    body = bytearray()
    for delta, rec in enumerate(records):
        if rec.timestamp > max_timestamp:
            max_timestamp = rec.timestamp
        _encode_record(body, delta, rec.timestamp - base_timestamp, rec.key, rec.value, rec.headers)
    payload = compress(compression, bytes(body)) if compression != Compression.NONE else body
    attributes = int(compression)
    if timestamp_type == TIMESTAMP_LOG_APPEND_TIME:
        attributes |= ATTR_TIMESTAMP_TYPE
    if is_transactional:
        attributes |= ATTR_TRANSACTIONAL
    if is_control:
        attributes |= ATTR_CONTROL
    batch_length = HEADER_SIZE - LOG_OVERHEAD + len(payload)
    out = bytearray(HEADER_SIZE)
    HEADER.pack_into(
        out,
        0,
        base_offset,
        batch_length,
        partition_leader_epoch,
        MAGIC,
        0,
        attributes,
        len(records) - 1,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    )
    out += payload
    struct.pack_into(">I", out, 17, compute_crc(out, 0, len(out)))
    return bytes(out)


def build_control_batch(control_type: int, value: bytes, *, timestamp: int, base_offset: int = 0,
                        partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH) -> bytes:
    """One control record: key = int16 version 0 + int16 type (Kafka's ControlRecordType layout)."""
    key = _INT16.pack(0) + _INT16.pack(control_type)
    return build_batch(
        [RecordInput(key=key, value=value, timestamp=timestamp)],
        base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch,
        is_control=True,
    )


def control_type_of(key: bytes | None) -> int | None:
    if key is None or len(key) < 4:
        return None
    return _INT16.unpack_from(key, 2)[0]


def decode_records(buf: bytes | memoryview, header: BatchHeader, pos: int = 0) -> list[Record]:
    """Decode every record of the batch at `pos` (decompressing if needed). Client-side work."""
    view = memoryview(buf)
    if header.compression == Compression.NONE:
        data: bytes | memoryview = view[pos + HEADER_SIZE : pos + header.size]
    else:
        try:
            data = decompress(header.compression, view[pos + HEADER_SIZE : pos + header.size])
        except DecompressionError as exc:
            raise CorruptBatchError(str(exc)) from exc
    records: list[Record] = []
    rpos = 0
    dend = len(data)
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    log_append = header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
    for _ in range(header.records_count):
        length, rpos = decode_varint(data, rpos)
        rend = rpos + length
        if length < 0 or rend > dend:
            raise CorruptBatchError("record length runs past the batch")
        rpos += 1  # attributes
        ts_delta, rpos = decode_varint(data, rpos)
        off_delta, rpos = decode_varint(data, rpos)
        klen, rpos = decode_varint(data, rpos)
        if klen >= 0:
            key: bytes | None = bytes(data[rpos : rpos + klen])
            rpos += klen
        else:
            key = None
        vlen, rpos = decode_varint(data, rpos)
        if vlen >= 0:
            value: bytes | None = bytes(data[rpos : rpos + vlen])
            rpos += vlen
        else:
            value = None
        hcount, rpos = decode_varint(data, rpos)
        if hcount < 0 or hcount > length:
            raise CorruptBatchError("bad header count")
        headers: list[tuple[str, bytes | None]] = []
        for _h in range(hcount):
            hklen, rpos = decode_varint(data, rpos)
            if hklen < 0:
                raise CorruptBatchError("null header key")
            hkey = bytes(data[rpos : rpos + hklen]).decode("utf-8", errors="replace")
            rpos += hklen
            hvlen, rpos = decode_varint(data, rpos)
            if hvlen >= 0:
                hval: bytes | None = bytes(data[rpos : rpos + hvlen])
                rpos += hvlen
            else:
                hval = None
            headers.append((hkey, hval))
        if rpos != rend:
            raise CorruptBatchError("record length does not match its fields")
        timestamp = header.max_timestamp if log_append else base_ts + ts_delta
        records.append(Record(base_offset + off_delta, timestamp, key, value, headers))
    return records


def iter_records(buf: bytes | memoryview, *, include_control: bool = False) -> Iterator[Record]:
    """Decode every record of a run of stored batches, in offset order. Control batches are skipped."""
    for pos, header in iter_headers(buf):
        if header.is_control and not include_control:
            continue
        yield from decode_records(buf, header, pos)


def concat(batches: Iterable[bytes]) -> bytes:
    return b"".join(batches)


def rebuild_batch(header: BatchHeader, records: Sequence[Record], *, delete_horizon_ms: int | None = None) -> bytes:
    """Compaction: re-encode the kept `records` of a stored batch. Base offset, lastOffsetDelta, producer id,
    epoch and base sequence, partition leader epoch, compression, timestamp type and control/transactional bits
    stay; every record keeps its offset (its offset delta). With `delete_horizon_ms` the batch carries Kafka's
    delete-horizon flag and baseTimestamp holds the horizon (record timestamps stay right: their deltas are
    re-based on it). The header's CRC is recomputed."""
    if not records:
        raise ValueError("a rebuilt batch holds at least one record")
    log_append = header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
    attributes = header.attributes & ~ATTR_DELETE_HORIZON
    if delete_horizon_ms is not None:
        attributes |= ATTR_DELETE_HORIZON
        base_timestamp = delete_horizon_ms
    else:
        base_timestamp = records[0].timestamp
    max_timestamp = header.max_timestamp if log_append else max(r.timestamp for r in records)
    body = bytearray()
    for rec in records:
        delta = rec.offset - header.base_offset
        if not 0 <= delta <= header.last_offset_delta:
            raise ValueError(f"record offset {rec.offset} lies outside the batch")
        _encode_record(body, delta, rec.timestamp - base_timestamp, rec.key, rec.value, rec.headers)
    compression = header.compression
    payload = compress(compression, bytes(body)) if compression != Compression.NONE else body
    out = bytearray(HEADER_SIZE)
    HEADER.pack_into(
        out,
        0,
        header.base_offset,
        HEADER_SIZE - LOG_OVERHEAD + len(payload),
        header.partition_leader_epoch,
        MAGIC,
        0,
        attributes,
        header.last_offset_delta,
        base_timestamp,
        max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        len(records),
    )
    out += payload
    struct.pack_into(">I", out, 17, compute_crc(out, 0, len(out)))
    return bytes(out)


def delete_horizon_of(header: BatchHeader) -> int | None:
    """The delete horizon a compaction stored in the batch (baseTimestamp), or None."""
    return header.base_timestamp if header.attributes & ATTR_DELETE_HORIZON else None
