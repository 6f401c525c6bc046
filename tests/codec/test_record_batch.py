"""The record-batch codec shared by broker and clients, checked against kafka-python's independent one."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from storage.compression import Compression, DecompressionError, compress, decompress
from storage.record_batch import (
    CONTROL_LEADER_CHANGE,
    HEADER_SIZE,
    BatchTooLargeError,
    CorruptBatchError,
    InvalidBatchError,
    RecordInput,
    UnsupportedCompressionError,
    build_batch,
    build_control_batch,
    control_type_of,
    decode_records,
    decode_varint,
    encode_varint,
    iter_headers,
    iter_records,
    set_log_append_time,
    stamp_batch,
    validate_batches,
)

MAX = 1 << 20


def _records(n: int) -> list[RecordInput]:
    return [RecordInput(b"k%d" % i, b"v" * i, 1_000 + i, [("h", b"x"), ("n", None)]) for i in range(n)]


@pytest.mark.parametrize("codec", list(Compression))
def test_our_batches_parse_in_kafka_python(codec: Compression) -> None:
    batch = bytearray(build_batch(_records(40), compression=codec))
    validate_batches(batch, max_batch_bytes=MAX)
    stamp_batch(batch, 0, 500, 9)
    theirs = DefaultRecordBatch(bytes(batch))
    assert theirs.validate_crc()  # stamping base offset and epoch needs no CRC work
    assert theirs.base_offset == 500 and theirs.leader_epoch == 9
    records = list(theirs)
    assert [r.offset for r in records] == list(range(500, 540))
    assert records[7].key == b"k7" and records[7].value == b"v" * 7 and records[7].timestamp == 1_007
    assert records[7].headers == [("h", b"x"), ("n", None)]


@pytest.mark.parametrize("codec", list(Compression))
def test_kafka_python_batches_decode_here(codec: Compression) -> None:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=int(codec), is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=MAX,
    )
    for i in range(25):
        builder.append(i, timestamp=5_000 + i, key=None if i == 3 else b"a%d" % i, value=b"b" * i,
                       headers=[("hh", b"y")])
    raw = bytes(builder.build())
    (header,) = validate_batches(raw, max_batch_bytes=MAX)
    assert header.records_count == 25 and header.compression == codec
    records = decode_records(raw, header)
    assert records[3].key is None
    assert records[5].key == b"a5" and records[5].timestamp == 5_005 and records[5].headers == [("hh", b"y")]


def test_validation_errors_name_the_kafka_error() -> None:
    good = build_batch(_records(3))
    flipped = bytearray(good)
    flipped[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="CRC"):
        validate_batches(flipped, max_batch_bytes=MAX)
    with pytest.raises(BatchTooLargeError) as too_large:
        validate_batches(good, max_batch_bytes=len(good) - 1)
    assert too_large.value.error_name == "MESSAGE_TOO_LARGE"
    with pytest.raises(CorruptBatchError, match="truncated|remain"):
        validate_batches(good[:-5], max_batch_bytes=MAX)
    wrong_magic = bytearray(good)
    wrong_magic[16] = 1
    with pytest.raises(CorruptBatchError, match="magic"):
        validate_batches(wrong_magic, max_batch_bytes=MAX)
    control = build_control_batch(CONTROL_LEADER_CHANGE, b"", timestamp=1)
    with pytest.raises(InvalidBatchError):
        validate_batches(control, max_batch_bytes=MAX)
    validate_batches(control, max_batch_bytes=MAX, from_producer=False)
    bad_codec = bytearray(good)
    struct.pack_into(">h", bad_codec, 21, 7)
    struct.pack_into(">I", bad_codec, 17, __import__("crc32c").crc32c(bytes(bad_codec[21:])))
    with pytest.raises(UnsupportedCompressionError):
        validate_batches(bad_codec, max_batch_bytes=MAX)
    with pytest.raises(InvalidBatchError):
        validate_batches(b"", max_batch_bytes=MAX)


def test_runs_of_batches_and_control_batches_are_skipped_by_readers() -> None:
    run = build_batch(_records(2)) + build_control_batch(CONTROL_LEADER_CHANGE, b"", timestamp=1) + build_batch(_records(1))
    headers = [h for _, h in iter_headers(run)]
    assert [h.is_control for h in headers] == [False, True, False]
    assert len(list(iter_records(run))) == 3
    control = [r for r in iter_records(run, include_control=True) if r.key and len(r.key) == 4]
    assert control_type_of(control[0].key) == CONTROL_LEADER_CHANGE
    # a short tail (a torn write) ends iteration instead of raising
    assert len(list(iter_headers(run[:-3]))) == 2


def test_log_append_time_rewrites_timestamps_and_crc() -> None:
    batch = bytearray(build_batch(_records(3)))
    set_log_append_time(batch, 0, len(batch), 99_999)
    (header,) = validate_batches(batch, max_batch_bytes=MAX)
    assert header.timestamp_type == 1 and header.max_timestamp == 99_999
    assert {r.timestamp for r in decode_records(batch, header)} == {99_999}
    assert DefaultRecordBatch(bytes(batch)).validate_crc()


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varint_round_trip(n: int) -> None:
    out = bytearray()
    encode_varint(n, out)
    assert decode_varint(bytes(out), 0) == (n, len(out))


def test_truncated_varint_is_an_error() -> None:
    with pytest.raises(CorruptBatchError):
        decode_varint(b"\x80\x80", 0)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(list(Compression)), st.binary(max_size=200_000))
def test_compression_round_trip(codec: Compression, data: bytes) -> None:
    assert decompress(codec, compress(codec, data)) == data


@pytest.mark.parametrize("codec", [c for c in Compression if c != Compression.NONE])
def test_corrupt_compressed_payload_is_one_error_type(codec: Compression) -> None:
    with pytest.raises(DecompressionError):
        decompress(codec, b"\x00garbage-that-is-not-compressed" * 3)


def test_snappy_reads_raw_and_xerial_framing() -> None:
    import cramjam

    data = b"hello snappy " * 5000
    assert decompress(Compression.SNAPPY, bytes(cramjam.snappy.compress_raw(data))) == data
    framed = compress(Compression.SNAPPY, data)
    assert framed.startswith(b"\x82SNAPPY\x00")
    assert decompress(Compression.SNAPPY, framed) == data


@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_never_crash_validation(data: bytes) -> None:
    try:
        validate_batches(data, max_batch_bytes=MAX)
    except (CorruptBatchError, InvalidBatchError, BatchTooLargeError, UnsupportedCompressionError):
        pass


def test_header_size_is_kafkas() -> None:
    assert HEADER_SIZE == 61
