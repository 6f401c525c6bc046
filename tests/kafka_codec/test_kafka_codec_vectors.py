"""Hand-checked byte vectors for the tricky parts of the encoding."""

from __future__ import annotations

import pytest

import proto.kafka as k
from proto.kafka.codec import decode_struct, encode_struct_parts, plan_for
from proto.kafka.schema import INT32, STRING, VARINT, VARLONG, Array, F, Struct

H = bytes.fromhex
T = Struct("T", F("s", STRING, nullable="0+"), F("a", Array(INT32), nullable="0+"))


def _enc(st: Struct, body: dict, flexible: bool = True) -> bytes:
    return b"".join(encode_struct_parts(plan_for(st, 0, flexible), body, st))


def _dec(st: Struct, data: bytes, flexible: bool = True) -> dict:
    return decode_struct(plan_for(st, 0, flexible), data)[0]


@pytest.mark.parametrize("body,wire", [
    ({"s": "abc", "a": [1, 2]}, "04616263" "03" "00000001" "00000002" "00"),
    ({"s": None, "a": None}, "00" "00" "00"),
    ({"s": "", "a": []}, "01" "01" "00"),
    ({"s": "x" * 300, "a": []}, "ad02" + "78" * 300 + "01" "00"),  # uvarint(301)
])
def test_compact_strings_and_arrays(body: dict, wire: str) -> None:
    assert _enc(T, body) == H(wire)
    assert _dec(T, H(wire)) == body


def test_non_compact_strings_and_arrays() -> None:
    assert _enc(T, {"s": "abc", "a": [7]}, False) == H("0003616263" "00000001" "00000007")
    assert _enc(T, {"s": None, "a": None}, False) == H("ffff" "ffffffff")
    assert _dec(T, H("ffff" "ffffffff"), False) == {"s": None, "a": None}


@pytest.mark.parametrize("value,wire", [(0, "00"), (-1, "01"), (1, "02"), (63, "7e"),
                                        (-64, "7f"), (64, "8001"), (-(1 << 31), "ffffffff0f")])
def test_zigzag_varints(value: int, wire: str) -> None:
    st = Struct("V", F("v", VARINT), F("w", VARLONG))
    assert _enc(st, {"v": value, "w": value}, False) == H(wire * 2)
    assert _dec(st, H(wire * 2), False) == {"v": value, "w": value}


def test_request_header_v2_keeps_int16_client_id_and_api_versions_v3_parses() -> None:
    frame = H("00000016" "0012" "0003" "00000001" "0003" "636c69" "00"  # header v2
              "03746c" "04312e30" "00")  # compact "tl", compact "1.0", no tags
    header, body = k.decode_request(frame)
    assert header == k.RequestHeader(18, 3, 1, "cli")
    assert body == {"client_software_name": "tl", "client_software_version": "1.0"}
    assert k.encode_request(18, 3, 1, body, client_id="cli") == frame
    assert k.valid_client_software("tl", "1.0")
    assert not k.valid_client_software("-bad", "1.0")


def test_request_header_v1_and_null_client_id() -> None:
    frame = k.encode_request(3, 0, 9, {"topics": []}, client_id=None)
    assert frame == H("0000000e" "0003" "0000" "00000009" "ffff" "00000000")
    assert k.decode_request(frame) == (k.RequestHeader(3, 0, 9, None), {"topics": []})


def test_unknown_tagged_fields_are_skipped() -> None:
    payload = H("0012" "0003" "00000001" "0003" "636c69"
                "02" "05" "01" "ff" "07" "00"  # header tags: two unknown (tag 5, tag 7)
                "03746c" "04312e30" "01" "63" "03" "aabbcc")  # body: unknown tag 99, 3 bytes
    header, body = k.decode_request_payload(payload)
    assert header.client_id == "cli"
    assert body == {"client_software_name": "tl", "client_software_version": "1.0"}


def test_api_versions_response_uses_header_v0_even_when_flexible() -> None:
    body = {"error_code": 0, "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4}]}
    frame = k.encode_response(18, 3, 7, body)
    assert frame == H("00000013" "00000007"  # header v0: no tag section
                      "0000" "02" "0012" "0000" "0004" "00" "00000000" "00")
    assert k.decode_response(18, 3, frame)[0] == 7
    # any other flexible response uses header v1 (one empty tag section after the id)
    assert k.encode_response(3, 9, 7, {})[4:9] == H("00000007" "00")
    assert k.encode_response(3, 8, 7, {})[4:12] == H("00000007" "00000000")  # v8: header v0


def test_tagged_fields_are_written_in_tag_order() -> None:
    body = {"zk_migration_ready": True, "finalized_features_epoch": 5}  # tag 3, then tag 1
    wire = k.encode_body(18, 3, body, response=True)
    assert wire.endswith(H("02" "01" "08" "0000000000000005" "03" "01" "01"))
    decoded = k.decode_body(18, 3, wire, response=True)
    assert decoded["zk_migration_ready"] is True and decoded["finalized_features_epoch"] == 5


def test_too_new_api_versions_answer_is_read_as_v0() -> None:
    body = {"error_code": 35, "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4}]}
    frame = k.encode_response(18, 0, 3, body)
    assert frame == H("00000010" "00000003" "0023" "00000001" "0012" "0000" "0004")
    assert k.decode_response(18, 4, frame) == (3, body)


def test_produce_v3_records_pass_through() -> None:
    frame = H("0000002c" "0000" "0003" "0000000b" "0002" "6964"
              "ffff" "ffff" "00007530" "00000001" "0001" "74"
              "00000001" "00000000" "00000005" "6162636465")
    header, body = k.decode_request(frame)
    assert header == k.RequestHeader(0, 3, 11, "id")
    assert body["transactional_id"] is None and body["acks"] == -1
    records = body["topic_data"][0]["partition_data"][0]["records"]
    assert isinstance(records, memoryview) and records == b"abcde"
    assert records.obj is frame  # a view on the frame, not a copy
    assert k.encode_request(0, 3, 11, body, client_id="id") == frame


def test_tags_sorted_even_when_declared_out_of_order() -> None:
    st = Struct("X", F("b", INT32, tag=2), F("a", INT32, tag=1))
    wire = _enc(st, {"b": 2, "a": 1})
    assert wire == H("02" "01" "04" "00000001" "02" "04" "00000002")
    assert _dec(st, wire) == {"b": 2, "a": 1}


@pytest.mark.parametrize("version,request_wire,response_wire", [
    (0, "00000002" "000161" "00026263",
     "00000000" "00000002" "000161" "0000" "00026263" "0045"),  # int32 arrays, int16 strings
    (2, "03" "0261" "036263" "00",
     "00000000" "03" "0261" "0000" "00" "036263" "0045" "00" "00"),  # compact, a tag section per struct
])
def test_delete_groups_request_and_response(version: int, request_wire: str, response_wire: str) -> None:
    request = {"groups_names": ["a", "bc"]}
    assert k.encode_body(k.ApiKey.DELETE_GROUPS, version, request, response=False, strict=True) == H(request_wire)
    assert k.decode_body(k.ApiKey.DELETE_GROUPS, version, H(request_wire), response=False) == request
    response = {"throttle_time_ms": 0, "results": [{"group_id": "a", "error_code": 0},
                                                   {"group_id": "bc", "error_code": 69}]}  # NON_EMPTY_GROUP
    assert k.encode_body(k.ApiKey.DELETE_GROUPS, version, response, response=True, strict=True) == H(response_wire)
    assert k.decode_body(k.ApiKey.DELETE_GROUPS, version, H(response_wire), response=True) == response
