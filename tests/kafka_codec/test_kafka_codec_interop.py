"""Cross-checks against independent implementations: kafka-python 3.0.12 (its JSON-driven
``kafka.protocol`` messages and its hand-written ``kafka.protocol.old`` structs) and aiokafka
0.14.0's hand-written structs. Bytes must be identical in both directions."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import uuid
from typing import Any

import pytest

import proto.kafka as k
from proto.kafka.codec import present_fields
from proto.kafka.schema import Array, Struct

from .bodies import all_versions, full_body

kp = pytest.importorskip("kafka.protocol")
ko = pytest.importorskip("kafka.protocol.old")
ap = pytest.importorskip("aiokafka.protocol")
from kafka.protocol.api_message import ApiMessage  # noqa: E402


def _body(api: Any, version: int, response: bool) -> dict:
    body = full_body(api.response if response else api.request, version)
    if api.key == k.ApiKey.API_VERSIONS and response:
        body["error_code"] = 0  # kafka-python reads any error reply as v0 (we do so for 35 only)
    return body


# ---------------------------------------------------------------- kafka-python JSON messages

def _json_classes() -> dict[tuple[int, bool], type]:
    found = {}
    for mod_info in pkgutil.walk_packages(kp.__path__, "kafka.protocol."):
        if ".old" in mod_info.name:
            continue
        mod = importlib.import_module(mod_info.name)
        for obj in vars(mod).values():
            if (inspect.isclass(obj) and issubclass(obj, ApiMessage) and obj is not ApiMessage
                    and obj._json is not None):
                found[obj.API_KEY, obj.type == "response"] = obj
    return found


JSON_CLASSES = _json_classes()
JSON_CASES = [(api.key, v, r) for api, v, r in all_versions()
              if (int(api.key), r) in JSON_CLASSES
              and v <= JSON_CLASSES[int(api.key), r].max_version]


def _their_field(owner: Any, name: str) -> Any:
    fields = owner._struct.fields if hasattr(owner, "_struct") else owner.fields
    if name in fields:
        return name, fields[name]
    # kafka-python patches *_authorized_operations into a bitfield called authorized_operations
    assert name.endswith("authorized_operations"), name
    return "authorized_operations", fields["authorized_operations"]


def _bits(value: int) -> set[int] | None:
    bits = {b for b in range(32) if (value & 0xFFFFFFFF) >> b & 1}
    return None if bits == {31} else bits


def _to_theirs(owner: Any, data_class: type, body: dict, version: int) -> Any:
    kwargs = {}
    for name, value in body.items():
        their_name, f = _their_field(owner, name)
        if f.is_struct():
            value = _to_theirs(f, f.data_class, value, version)
        elif f.is_struct_array() and value is not None:
            value = [_to_theirs(f, f.data_class, x, version) for x in value]
        elif their_name != name or f.type_str == "bitfield":
            value = _bits(value)
        elif isinstance(value, memoryview):
            value = bytes(value)
        kwargs[their_name] = value
    return data_class(version=version, **kwargs)


def _norm(x: Any) -> Any:
    if isinstance(x, dict):
        return {("authorized_operations" if key.endswith("authorized_operations") else key):
                (_norm_bits(v) if key.endswith("authorized_operations") else _norm(v))
                for key, v in x.items()}
    if isinstance(x, list):
        return [_norm(v) for v in x]
    if isinstance(x, uuid.UUID) and x.int == 0:
        return None  # kafka-python's zero UUID
    if isinstance(x, (memoryview, bytearray)):
        return bytes(x)
    return x


def _norm_bits(x: Any) -> Any:
    return x if x is None or isinstance(x, set) else _bits(x)


@pytest.mark.parametrize("key,version,response", JSON_CASES,
                         ids=[f"{k.ApiKey(a).name}-v{v}-{'resp' if r else 'req'}"
                              for a, v, r in JSON_CASES])
def test_kafka_python_json_messages(key: int, version: int, response: bool) -> None:
    api = k.APIS[key]
    cls = JSON_CLASSES[int(key), response]
    body = _body(api, version, response)
    ours = k.encode_body(key, version, body, response=response)
    # ours -> theirs: same values, and their re-encoding is byte-identical
    theirs = cls.decode(ours, version=version)
    theirs._header = None
    assert _norm(theirs.to_dict(json=False)) == _norm(body)
    assert theirs.encode(version=version) == ours
    # theirs -> ours: built by kafka-python from the same values, decoded by us
    built = _to_theirs(cls, cls, body, version).encode(version=version)
    assert built == ours
    assert _norm(k.decode_body(key, version, built, response=response)) == _norm(body)


def test_kafka_python_json_coverage() -> None:
    assert len(JSON_CASES) == 390  # every API, version and direction we declare


# ---------------------------------------------------------------- hand-written structs

def _struct_classes(pkg: Any, prefix: str) -> dict[tuple[int, int, bool], type]:
    found = {}
    for mod_info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(prefix + mod_info.name)
        for name, obj in vars(mod).items():
            if (inspect.isclass(obj) and isinstance(getattr(obj, "API_KEY", None), int)
                    and isinstance(getattr(obj, "API_VERSION", None), int)
                    and hasattr(obj, "SCHEMA") and obj.API_KEY in k.APIS.keys()
                    and obj.API_VERSION in k.APIS[obj.API_KEY].versions):
                found[obj.API_KEY, obj.API_VERSION, "Response" in name] = obj
    return found


def _positional(st: Struct, version: int, flexible: bool, body: dict) -> tuple:
    values = [_pos_value(f.type, version, flexible, body[f.name])
              for f in present_fields(st, version) if not f.is_tagged(version)]
    if flexible:
        values.append({})
    return tuple(values)


def _pos_value(t: Any, version: int, flexible: bool, x: Any) -> Any:
    if x is None:
        return None
    if isinstance(t, Struct):
        return _positional(t, version, flexible, x)
    if isinstance(t, Array):
        return [_pos_value(t.element, version, flexible, e) for e in x]
    return bytes(x) if isinstance(x, memoryview) else x


# Where a library's positional struct nests values differently from Kafka's schema (same
# bytes, other shape) the "build from our values" direction cannot be done generically.
SHAPE_DIFFERS = {
    ("old", 3, False): "Metadata request topics as [string], not [{name}]",
    ("aio", 3, False): "Metadata request topics as [string], not [{name}]",
    ("old", 37, False): "CreatePartitions assignments as [[int32]]",
    ("aio", 37, False): "CreatePartitions assignments as [[int32]]",
    ("old", 18, True): "ApiVersions v3+ tagged fields kept as raw tags",
    ("old", 3, True): "Metadata v8+ authorized operations as a set of bits",
    ("old", 15, True): "DescribeGroups v3+ authorized operations as a set of bits",
}
# Real schema divergences in the libraries (bytes differ from Kafka's definition).
THEIR_BUGS = {
    ("aio", 2, 4, False): "aiokafka declares ListOffsets v4+ current_leader_epoch as int64",
    ("aio", 2, 5, False): "aiokafka declares ListOffsets v4+ current_leader_epoch as int64",
}

STRUCT_CASES = [(lib, key, v, r) for lib, pkg, prefix in (
    ("old", ko, "kafka.protocol.old."), ("aio", ap, "aiokafka.protocol."))
    for (key, v, r) in sorted(_struct_classes(pkg, prefix))]
_STRUCT_CLASSES = {"old": _struct_classes(ko, "kafka.protocol.old."),
                   "aio": _struct_classes(ap, "aiokafka.protocol.")}


@pytest.mark.parametrize("lib,key,version,response", STRUCT_CASES,
                         ids=[f"{lib}-{k.ApiKey(a).name}-v{v}-{'resp' if r else 'req'}"
                              for lib, a, v, r in STRUCT_CASES])
def test_hand_written_structs(lib: str, key: int, version: int, response: bool) -> None:
    if (lib, key, version, response) in THEIR_BUGS:
        pytest.skip(THEIR_BUGS[lib, key, version, response])
    api = k.APIS[key]
    cls = _STRUCT_CLASSES[lib][key, version, response]
    st = api.response if response else api.request
    body = _body(api, version, response)
    ours = k.encode_body(key, version, body, response=response)
    theirs = cls.decode(ours)
    assert theirs.encode() == ours
    if (lib, key, response) in SHAPE_DIFFERS:
        return
    values = _positional(st, version, version in api.flexible, body)
    assert cls(*values).encode() == ours


def test_hand_written_struct_coverage() -> None:
    assert len(STRUCT_CASES) >= 400
    skipped = [c for c in STRUCT_CASES if c in THEIR_BUGS]
    assert len(skipped) == len(THEIR_BUGS)
