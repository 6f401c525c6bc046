"""Declarative building blocks for Kafka message schemas.

A message is declared once, as Kafka's JSON does it: one struct whose fields carry version ranges
(``versions``, ``nullable``, ``tag``/``tagged``, ``default``, ``ignorable``). The codec
(:mod:`proto.kafka.codec`) specializes a declaration per version into an encoder and a decoder.

Example::

    F("topics", Array(Struct("Topic", F("name", STRING), F("partitions", Array(INT32)))), "1+")
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Union

from .api_keys import ApiKey

VERSION_MAX = 0x7FFF
ZERO_UUID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class Versions:
    """An inclusive version range; empty when ``lo > hi`` (Kafka's ``"none"``)."""

    lo: int
    hi: int

    @classmethod
    def parse(cls, spec: str) -> Versions:
        spec = spec.strip()
        if spec == "none":
            return NO_VERSIONS
        if spec.endswith("+"):
            return cls(int(spec[:-1]), VERSION_MAX)
        lo, sep, hi = spec.partition("-")
        return cls(int(lo), int(hi) if sep else int(lo))

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.lo <= version <= self.hi

    def __bool__(self) -> bool:
        return self.lo <= self.hi

    def __and__(self, other: Versions) -> Versions:
        both = Versions(max(self.lo, other.lo), min(self.hi, other.hi))
        return both if both else NO_VERSIONS

    def within(self, other: Versions) -> bool:
        return not self or (other.lo <= self.lo and self.hi <= other.hi)

    def __str__(self) -> str:
        if not self:
            return "none"
        if self.hi == VERSION_MAX:
            return f"{self.lo}+"
        return f"{self.lo}-{self.hi}" if self.lo != self.hi else str(self.lo)


NO_VERSIONS = Versions(1, 0)


@dataclass(frozen=True, slots=True)
class Prim:
    """A primitive wire type.

    ``fmt`` is the ``struct`` format of fixed-size types (None for variable-size ones) and
    ``size`` their wire size, or the smallest non-compact wire size of a variable-size type.
    """

    name: str
    fmt: str | None
    size: int
    default: Any

    def __repr__(self) -> str:
        return self.name.upper()


INT8 = Prim("int8", "b", 1, 0)
INT16 = Prim("int16", "h", 2, 0)
INT32 = Prim("int32", "i", 4, 0)
INT64 = Prim("int64", "q", 8, 0)
UINT16 = Prim("uint16", "H", 2, 0)
UINT32 = Prim("uint32", "I", 4, 0)
FLOAT64 = Prim("float64", "d", 8, 0.0)
BOOL = Prim("bool", "?", 1, False)
UUID = Prim("uuid", "16s", 16, ZERO_UUID)
VARINT = Prim("varint", None, 1, 0)  # zigzag, 32-bit
VARLONG = Prim("varlong", None, 1, 0)  # zigzag, 64-bit
STRING = Prim("string", None, 2, "")  # int16 length, or uvarint(len+1) when compact
BYTES = Prim("bytes", None, 4, b"")  # int32 length, or uvarint(len+1) when compact
# A RecordBatch blob: passed through as a memoryview on decode, never parsed by the codec.
RECORDS = Prim("records", None, 4, None)

INT_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
    "varint": (-(1 << 31), (1 << 31) - 1),
    "varlong": (-(1 << 63), (1 << 63) - 1),
}


class Struct:
    """An ordered list of fields; the wire order of non-tagged fields is the declaration order."""

    __slots__ = ("name", "fields", "by_name")

    def __init__(self, name: str, *fields: Field) -> None:
        self.name = name
        self.fields: tuple[Field, ...] = fields
        self.by_name: dict[str, Field] = {}
        for f in fields:
            assert f.name not in self.by_name, f"{name}: duplicate field {f.name}"
            self.by_name[f.name] = f

    def __repr__(self) -> str:
        return f"Struct({self.name!r})"


@dataclass(frozen=True, slots=True)
class Array:
    element: Union[Prim, Struct]


FieldType = Union[Prim, Array, Struct]
_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: FieldType
    versions: Versions
    nullable: Versions
    tag: int | None
    tagged: Versions
    default: Any  # _UNSET: the type's default (0, "", [], a default struct ...)
    ignorable: bool
    flexible: Versions | None  # overrides the message's flexible versions (header client_id)

    def is_tagged(self, version: int) -> bool:
        return version in self.tagged

    def is_compact(self, version: int, flexible: bool) -> bool:
        return flexible if self.flexible is None else version in self.flexible


def F(
    name: str,
    type: FieldType,
    versions: str = "0+",
    *,
    nullable: str = "none",
    tag: int | None = None,
    tagged: str | None = None,
    default: Any = _UNSET,
    ignorable: bool = False,
    flexible: str | None = None,
) -> Field:
    """Declare a field. ``tag`` makes it a tagged field in ``tagged`` versions (default: all)."""
    v = Versions.parse(versions)
    nv = Versions.parse(nullable) & v  # Kafka's files may say "0+" for a field added later
    tv = NO_VERSIONS if tag is None else Versions.parse(tagged or versions)
    assert tv.within(v), f"{name}: tagged {tv} outside {v}"
    assert nv == NO_VERSIONS or type in (STRING, BYTES, RECORDS) or isinstance(type, Array), name
    if default is None:
        assert nv or type is RECORDS, f"{name}: null default on a non-nullable field"
    return Field(name, type, v, nv, tag, tv, default, ignorable,
                 None if flexible is None else Versions.parse(flexible))


class Api:
    """One Kafka API: its request and response structs, sharing versions and flexible versions."""

    __slots__ = ("key", "name", "versions", "flexible", "request", "response")

    def __init__(self, key: ApiKey, versions: str, *, flexible: str,
                 request: Iterable[Field], response: Iterable[Field]) -> None:
        self.key = key
        self.name = "".join(w.capitalize() for w in key.name.split("_"))
        self.versions = Versions.parse(versions)
        self.flexible = Versions.parse(flexible)
        self.request = Struct(self.name + "Request", *request)
        self.response = Struct(self.name + "Response", *response)
        for st in (self.request, self.response):
            _check_tags(st, self.flexible)

    @property
    def flexible_from(self) -> int | None:
        return self.flexible.lo if self.flexible else None

    def __repr__(self) -> str:
        return f"Api({self.key.name}, {self.versions})"


def _check_tags(st: Struct, flexible: Versions) -> None:
    seen: dict[int, Versions] = {}
    for f in st.fields:
        if f.tag is not None:
            assert f.tagged.within(flexible), f"{st.name}.{f.name}: tagged outside flexible"
            other = seen.get(f.tag)
            assert other is None or other.hi < f.tagged.lo or f.tagged.hi < other.lo, (
                f"{st.name}: tag {f.tag} reused")
            seen[f.tag] = f.tagged
        t = f.type.element if isinstance(f.type, Array) else f.type
        if isinstance(t, Struct):
            _check_tags(t, flexible)
