"""Keyed partitioning must match Kafka's Java client exactly (Utils.murmur2, toPositive, % n)."""

import random

import pytest

from tidelog.partitioner import StickyPartitioner, murmur2, partition_for_key

# Kafka's UtilsTest.testMurmur2 and the table in shared/kafka-protocol/README.md section 4.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}

README_TABLE = [
    # key, murmur2, partition of 3, partition of 6
    (b"", 275646681, 0, 3),
    (b"a", -1563381124, 1, 4),
    (b"k0", -704538303, 2, 5),
    (b"k1", 1684045097, 2, 5),
    (b"k2", 380483553, 0, 3),
    (b"key", -1079937367, 1, 1),
    (b"hello", 2132663229, 0, 3),
    (b"user-42", 1459644460, 1, 4),
    (b"foobar", -790332482, 0, 0),
    (b"\x00", 375494588, 2, 2),
    (b"\xff\xfe", 1717632651, 0, 3),
]


@pytest.mark.parametrize("key,expected", sorted(KAFKA_VECTORS.items()))
def test_murmur2_matches_kafka_utils_test(key, expected):
    assert murmur2(key) == expected


@pytest.mark.parametrize("key,hashed,p3,p6", README_TABLE)
def test_partition_for_key_matches_java_client(key, hashed, p3, p6):
    assert murmur2(key) == hashed
    assert partition_for_key(key, 3) == p3
    assert partition_for_key(key, 6) == p6


def test_murmur2_is_a_signed_int32_for_every_tail_length():
    rng = random.Random(7)
    for length in range(0, 40):
        h = murmur2(rng.randbytes(length))
        assert -(2**31) <= h < 2**31


def test_sticky_partitioner_sticks_until_the_batch_completes():
    sticky = StickyPartitioner(random.Random(1))
    first = sticky.partition("t", 6)
    assert all(sticky.partition("t", 6) == first for _ in range(100))
    sticky.on_new_batch("t", 6, first)
    second = sticky.partition("t", 6)
    assert second != first
    sticky.on_new_batch("t", 1, second)  # one partition: nowhere else to go
