"""Representative bodies built from our own schema tables, for round-trip tests.

``full_body`` gives every field present in a version a value different from its default
(so a field the encoder dropped or misplaced changes the decoded body); ``null_body`` puts
None wherever the version allows null.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from proto.kafka.codec import field_default, present_fields
from proto.kafka.schema import (BOOL, BYTES, FLOAT64, INT_RANGES, RECORDS, STRING, UUID, Array,
                                Field, Prim, Struct)

# A minimal-looking RecordBatch stand-in: the codec never looks inside records.
RECORDS_SAMPLE = bytes(range(61)) + b"records!"


def full_body(st: Struct, version: int, *, nulls: bool = False, seed: int = 1) -> dict:
    counter = itertools.count(seed)
    return _struct(st, version, counter, nulls)


def _struct(st: Struct, version: int, counter: Any, nulls: bool) -> dict:
    return {f.name: _field(f, version, counter, nulls) for f in present_fields(st, version)}


def _field(f: Field, version: int, counter: Any, nulls: bool) -> Any:
    if nulls and version in f.nullable:
        return None
    t = f.type
    default = field_default(f, version)
    if isinstance(t, Struct):
        return _struct(t, version, counter, nulls)
    if isinstance(t, Array):
        if isinstance(t.element, Struct):
            return [_struct(t.element, version, counter, nulls) for _ in range(2)]
        return [_prim(t.element, None, counter) for _ in range(3)]
    return _prim(t, default, counter)


def _prim(t: Prim, default: Any, counter: Any) -> Any:
    n = next(counter)
    if t.name in INT_RANGES:
        lo, hi = INT_RANGES[t.name]
        span = min(hi, 100_000_000_000) if t.name not in ("int8",) else 100
        value = (n * 7919) % span + 1
        if n % 3 == 0 and lo < 0:
            value = -value
        if value == default:
            value += 1
        return value
    if t is BOOL:
        return not default if default is not None else True
    if t is FLOAT64:
        return n + 0.5
    if t is STRING:
        return f"s{n}-é"
    if t is BYTES:
        return bytes([n % 256, 0, 255]) * 2
    if t is RECORDS:
        return RECORDS_SAMPLE + bytes([n % 256])
    if t is UUID:
        return uuid.UUID(int=(n << 64) | 0xABCDEF)
    raise AssertionError(t)


def all_versions():
    """(api, version, is_response) for every declared version of every API."""
    from proto.kafka.messages import APIS
    for api in APIS.values():
        for version in range(api.versions.lo, api.versions.hi + 1):
            for response in (False, True):
                yield api, version, response
