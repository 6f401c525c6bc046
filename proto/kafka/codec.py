"""One generic encoder and one generic decoder for Kafka message bodies.

The schema tables (:mod:`proto.kafka.schema`) are specialized per (struct, version): the first
use of a version generates a plain Python function for each struct (consecutive fixed-size
fields become one ``struct.unpack_from``/``pack``), compiles it once and caches the resulting
:class:`Plan`. ``plan.source`` shows the generated code.

Bodies are plain dicts with snake_case keys. Decoding yields every field of the version (absent
tagged fields get their defaults); encoding fills defaults for missing keys and ignores keys the
version does not have (``strict=True`` rejects unknown keys and non-default values of
non-ignorable fields, as Kafka does). ``records`` fields decode to a zero-copy ``memoryview``
of the input; on encode they may be any bytes-like object or a list of them, and large ones are
returned as separate buffers so a 1 MiB batch is never copied by the encoder.

Decoding is bounded: every length is checked against the bytes left before anything is
allocated, and any malformed input raises :class:`KafkaProtocolError` (nothing else).
"""

from __future__ import annotations

import copy
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import KafkaProtocolError
from .schema import (BOOL, BYTES, FLOAT64, INT_RANGES, RECORDS, STRING, UUID, VARINT, VARLONG,
                     ZERO_UUID, Array, Field, Prim, Struct, _UNSET)

Buffer = bytes | bytearray | memoryview
# Records at least this long go out as their own buffer instead of being copied into the body.
ZERO_COPY_MIN = 4096

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_unpack_from = struct.unpack_from
_pack = struct.pack
_NULL16 = _I16.pack(-1)
_NULL32 = _I32.pack(-1)


# ----------------------------------------------------------------------------- readers
# Each takes (buf: memoryview, pos) and returns (value, new_pos). Short reads surface as
# struct.error/IndexError and are turned into KafkaProtocolError by the entry points.

def _short(what: str, n: int, left: int) -> KafkaProtocolError:
    return KafkaProtocolError(f"{what} of {n} bytes but only {left} left")


def rd_uvarint(buf: memoryview, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    while True:
        pos += 1
        b = buf[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 28:
            raise KafkaProtocolError("unsigned varint longer than 5 bytes")


def _rd_zigzag(buf: memoryview, pos: int, max_shift: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > max_shift:
            raise KafkaProtocolError("varint too long")


def rd_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    return _rd_zigzag(buf, pos, 28)


def rd_varlong(buf: memoryview, pos: int) -> tuple[int, int]:
    return _rd_zigzag(buf, pos, 63)


def _take(buf: memoryview, pos: int, n: int, what: str) -> int:
    end = pos + n
    if end > len(buf):
        raise _short(what, n, len(buf) - pos)
    return end


def rd_str(buf: memoryview, pos: int) -> tuple[str, int]:
    n = _I16.unpack_from(buf, pos)[0]
    pos += 2
    if n < 0:
        raise KafkaProtocolError("null for a non-nullable string")
    end = _take(buf, pos, n, "string")
    return str(buf[pos:end], "utf-8"), end


def rd_nstr(buf: memoryview, pos: int) -> tuple[str | None, int]:
    n = _I16.unpack_from(buf, pos)[0]
    pos += 2
    if n < 0:
        return None, pos
    end = _take(buf, pos, n, "string")
    return str(buf[pos:end], "utf-8"), end


def rd_cstr(buf: memoryview, pos: int) -> tuple[str, int]:
    n, pos = rd_uvarint(buf, pos)
    if n == 0:
        raise KafkaProtocolError("null for a non-nullable compact string")
    end = _take(buf, pos, n - 1, "compact string")
    return str(buf[pos:end], "utf-8"), end


def rd_cnstr(buf: memoryview, pos: int) -> tuple[str | None, int]:
    n, pos = rd_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _take(buf, pos, n - 1, "compact string")
    return str(buf[pos:end], "utf-8"), end


def rd_bytes(buf: memoryview, pos: int) -> tuple[bytes, int]:
    n = _I32.unpack_from(buf, pos)[0]
    pos += 4
    if n < 0:
        raise KafkaProtocolError("null for non-nullable bytes")
    end = _take(buf, pos, n, "bytes")
    return bytes(buf[pos:end]), end


def rd_nbytes(buf: memoryview, pos: int) -> tuple[bytes | None, int]:
    n = _I32.unpack_from(buf, pos)[0]
    pos += 4
    if n < 0:
        return None, pos
    end = _take(buf, pos, n, "bytes")
    return bytes(buf[pos:end]), end


def rd_cbytes(buf: memoryview, pos: int) -> tuple[bytes, int]:
    n, pos = rd_uvarint(buf, pos)
    if n == 0:
        raise KafkaProtocolError("null for non-nullable compact bytes")
    end = _take(buf, pos, n - 1, "compact bytes")
    return bytes(buf[pos:end]), end


def rd_cnbytes(buf: memoryview, pos: int) -> tuple[bytes | None, int]:
    n, pos = rd_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _take(buf, pos, n - 1, "compact bytes")
    return bytes(buf[pos:end]), end


def rd_records(buf: memoryview, pos: int) -> tuple[memoryview | None, int]:
    n = _I32.unpack_from(buf, pos)[0]
    pos += 4
    if n < 0:
        return None, pos
    end = _take(buf, pos, n, "records")
    return buf[pos:end], end  # zero-copy: a view on the frame


def rd_crecords(buf: memoryview, pos: int) -> tuple[memoryview | None, int]:
    n, pos = rd_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _take(buf, pos, n - 1, "records")
    return buf[pos:end], end


def rd_alen(buf: memoryview, pos: int, min_size: int) -> tuple[int, int]:
    """Array length (int32, negative = null), checked against the bytes left."""
    n = _I32.unpack_from(buf, pos)[0]
    pos += 4
    if n > 0 and n * min_size > len(buf) - pos:
        raise KafkaProtocolError(f"array of {n} elements cannot fit in {len(buf) - pos} bytes")
    return n, pos


def rd_calen(buf: memoryview, pos: int, min_size: int) -> tuple[int, int]:
    """Compact array length (uvarint n+1, 0 = null → -1), checked against the bytes left."""
    n, pos = rd_uvarint(buf, pos)
    n -= 1
    if n > 0 and n * min_size > len(buf) - pos:
        raise KafkaProtocolError(f"array of {n} elements cannot fit in {len(buf) - pos} bytes")
    return n, pos


def skip_tagged(buf: memoryview, pos: int) -> int:
    """Skip a tagged-field section whose tags are all unknown here."""
    n, pos = rd_uvarint(buf, pos)
    for _ in range(n):
        _tag, pos = rd_uvarint(buf, pos)
        size, pos = rd_uvarint(buf, pos)
        pos = _take(buf, pos, size, "tagged field")
    return pos


def rd_tagged(buf: memoryview, pos: int,
              known: dict[int, Callable[[memoryview, int], tuple[Any, int]]]) -> tuple[dict, int]:
    """Read a tagged-field section; returns {tag: value} for known tags, skips unknown ones."""
    n, pos = rd_uvarint(buf, pos)
    found: dict[int, Any] = {}
    for _ in range(n):
        tag, pos = rd_uvarint(buf, pos)
        size, pos = rd_uvarint(buf, pos)
        end = _take(buf, pos, size, "tagged field")
        reader = known.get(tag)
        if reader is not None:
            if tag in found:
                raise KafkaProtocolError(f"tagged field {tag} appears twice")
            value, used = reader(buf[pos:end], 0)
            if used != size:
                raise KafkaProtocolError(f"tagged field {tag}: {size} bytes declared, {used} used")
            found[tag] = value
        pos = end
    return found, pos


_ZERO16 = bytes(16)


def uuid_of(raw: bytes) -> uuid.UUID:
    return ZERO_UUID if raw == _ZERO16 else uuid.UUID(bytes=raw)


# ----------------------------------------------------------------------------- writers

def w_uvarint(out: bytearray, n: int) -> None:
    if n < 0x80:
        out.append(n)
        return
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def w_varint(out: bytearray, n: int) -> None:
    lo, hi = INT_RANGES["varint"]
    if not lo <= n <= hi:
        raise KafkaProtocolError(f"varint out of range: {n}")
    w_uvarint(out, ((n << 1) ^ (n >> 31)) & 0xFFFFFFFF)


def w_varlong(out: bytearray, n: int) -> None:
    lo, hi = INT_RANGES["varlong"]
    if not lo <= n <= hi:
        raise KafkaProtocolError(f"varlong out of range: {n}")
    w_uvarint(out, ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF)


def _utf8(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 0x7FFF:
        raise KafkaProtocolError(f"string of {len(b)} bytes exceeds 32767")
    return b


def w_str(out: bytearray, s: str) -> None:
    b = _utf8(s)
    out += _I16.pack(len(b))
    out += b


def w_nstr(out: bytearray, s: str | None) -> None:
    if s is None:
        out += _NULL16
    else:
        w_str(out, s)


def w_cstr(out: bytearray, s: str) -> None:
    b = _utf8(s)
    w_uvarint(out, len(b) + 1)
    out += b


def w_cnstr(out: bytearray, s: str | None) -> None:
    if s is None:
        out.append(0)
    else:
        w_cstr(out, s)


def w_bytes(out: bytearray, b: Buffer) -> None:
    out += _I32.pack(len(b))
    out += b


def w_nbytes(out: bytearray, b: Buffer | None) -> None:
    if b is None:
        out += _NULL32
    else:
        w_bytes(out, b)


def w_cbytes(out: bytearray, b: Buffer) -> None:
    w_uvarint(out, len(b) + 1)
    out += b


def w_cnbytes(out: bytearray, b: Buffer | None) -> None:
    if b is None:
        out.append(0)
    else:
        w_cbytes(out, b)


def _records_parts(value: Any) -> tuple[int, Sequence[Buffer]]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return memoryview(value).nbytes, (value,)
    chunks = list(value)
    return sum(memoryview(c).nbytes for c in chunks), chunks


def _w_records_body(out: bytearray, parts: list | None, chunks: Sequence[Buffer],
                    size: int) -> None:
    if parts is None or size < ZERO_COPY_MIN:
        for c in chunks:
            out += c
        return
    # Big payloads travel as their own buffers: flush what is buffered so far, then the chunks.
    parts.append(bytes(out))
    out.clear()
    parts.extend(chunks)


def w_records(out: bytearray, parts: list | None, value: Any) -> None:
    if value is None:
        out += _NULL32
        return
    size, chunks = _records_parts(value)
    out += _I32.pack(size)
    _w_records_body(out, parts, chunks, size)


def w_crecords(out: bytearray, parts: list | None, value: Any) -> None:
    if value is None:
        out.append(0)
        return
    size, chunks = _records_parts(value)
    w_uvarint(out, size + 1)
    _w_records_body(out, parts, chunks, size)


def w_tagged(out: bytearray, tagged: list[tuple[int, bytearray]]) -> None:
    w_uvarint(out, len(tagged))
    for tag, data in tagged:
        w_uvarint(out, tag)
        w_uvarint(out, len(data))
        out += data


def uuid_raw(u: uuid.UUID | bytes) -> bytes:
    return u.bytes if isinstance(u, uuid.UUID) else bytes(u)


def is_default_struct(value: Mapping, defaults: dict) -> bool:
    get = value.get
    return all(get(k, dv) == dv for k, dv in defaults.items())


# ----------------------------------------------------------------------------- plans

@dataclass(slots=True)
class Plan:
    """A struct specialized for one version: the generated decoder and encoder."""

    name: str
    version: int
    flexible: bool
    decode: Callable[[memoryview, int], tuple[dict, int]]
    encode: Callable[[bytearray, list | None, Mapping], None]
    source: str


_PLANS: dict[tuple[int, int, bool], Plan] = {}


def plan_for(st: Struct, version: int, flexible: bool) -> Plan:
    key = (id(st), version, flexible)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _Generator(version, flexible).compile(st)
    return plan


def present_fields(st: Struct, version: int) -> list[Field]:
    return [f for f in st.fields if version in f.versions]


def field_default(f: Field, version: int) -> Any:
    """A fresh default value for ``f`` (a new list or dict for arrays and structs)."""
    if f.default is not _UNSET:
        return f.default
    t = f.type
    if isinstance(t, Array):
        return []
    if isinstance(t, Struct):
        return struct_default(t, version)
    return t.default


def struct_default(st: Struct, version: int) -> dict:
    return {f.name: field_default(f, version) for f in present_fields(st, version)}


def min_wire_size(t: Prim | Array | Struct, version: int, compact: bool, flexible: bool) -> int:
    """Smallest encoding of a value of type ``t``: bounds array lengths on decode."""
    if isinstance(t, Array):
        return 1 if compact else 4
    if isinstance(t, Struct):
        size = 1 if flexible else 0
        for f in present_fields(t, version):
            if not f.is_tagged(version):
                size += min_wire_size(f.type, version, f.is_compact(version, flexible), flexible)
        return size
    if t.fmt is not None or t in (VARINT, VARLONG):
        return t.size
    return 1 if compact else t.size


_READERS = {  # (prim, nullable, compact) -> reader name
    (STRING, False, False): "rd_str", (STRING, True, False): "rd_nstr",
    (STRING, False, True): "rd_cstr", (STRING, True, True): "rd_cnstr",
    (BYTES, False, False): "rd_bytes", (BYTES, True, False): "rd_nbytes",
    (BYTES, False, True): "rd_cbytes", (BYTES, True, True): "rd_cnbytes",
    (RECORDS, False, False): "rd_records", (RECORDS, True, False): "rd_records",
    (RECORDS, False, True): "rd_crecords", (RECORDS, True, True): "rd_crecords",
}
_WRITERS = {
    (STRING, False, False): "w_str", (STRING, True, False): "w_nstr",
    (STRING, False, True): "w_cstr", (STRING, True, True): "w_cnstr",
    (BYTES, False, False): "w_bytes", (BYTES, True, False): "w_nbytes",
    (BYTES, False, True): "w_cbytes", (BYTES, True, True): "w_cnbytes",
}


class _Generator:
    """Writes the Python source of one struct's decoder and encoder for one version."""

    def __init__(self, version: int, flexible: bool) -> None:
        self.version = version
        self.flexible = flexible
        self.ns: dict[str, Any] = {
            name: obj for name, obj in globals().items()
            if name.startswith(("rd_", "w_")) or name in (
                "skip_tagged", "uuid_of", "uuid_raw", "is_default_struct", "KafkaProtocolError",
                "ZERO_UUID")
        }
        self.ns.update(_unpack_from=_unpack_from, _pack=_pack, _I32=_I32, _NULL32=_NULL32,
                       deepcopy=copy.deepcopy)
        self.lines: list[str] = []
        self.done: dict[int, tuple[str, str]] = {}
        self.n = 0

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any, prefix: str = "K") -> str:
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            return repr(value)
        name = self._name(prefix)
        self.ns[name] = value
        return name

    def compile(self, st: Struct) -> Plan:
        dec, enc = self.struct_fns(st)
        source = "\n".join(self.lines) + "\n"
        code = compile(source, f"<kafka {st.name} v{self.version}>", "exec")
        exec(code, self.ns)  # noqa: S102 - source generated from our own tables only
        return Plan(st.name, self.version, self.flexible, self.ns[dec], self.ns[enc], source)

    # -- structs
    def struct_fns(self, st: Struct) -> tuple[str, str]:
        if id(st) in self.done:
            return self.done[id(st)]
        base = f"{st.name}_v{self.version}"
        names = self.done[id(st)] = (self._name(f"d_{base}_"), self._name(f"e_{base}_"))
        self.lines += self.struct_decoder(st, names[0]) + [""]
        self.lines += self.struct_encoder(st, names[1]) + [""]
        return names

    def _fixed(self, f: Field) -> bool:
        t = f.type
        return isinstance(t, Prim) and t.fmt is not None and not f.is_tagged(self.version)

    def struct_decoder(self, st: Struct, fname: str) -> list[str]:
        v = self.version
        fields = present_fields(st, v)
        body: list[str] = []
        var = {f.name: f"v{i}" for i, f in enumerate(fields)}
        run: list[Field] = []

        def flush() -> None:
            if not run:
                return
            fmt = ">" + "".join(f.type.fmt for f in run)
            s = self.const(struct.Struct(fmt), "S")
            targets = "".join(var[f.name] + ", " for f in run)
            body.append(f"{targets}= {s}.unpack_from(buf, pos); pos += {struct.calcsize(fmt)}")
            for f in run:
                if f.type is UUID:
                    body.append(f"{var[f.name]} = uuid_of({var[f.name]})")
            run.clear()

        for f in fields:
            if f.is_tagged(v):
                continue
            if self._fixed(f):
                run.append(f)
                continue
            flush()
            body += self.read_value(f.type, var[f.name], f.is_compact(v, self.flexible),
                                    v in f.nullable, st.name + "." + f.name)
        flush()
        tagged = sorted((f for f in fields if f.is_tagged(v)), key=lambda f: f.tag)
        if self.flexible and tagged:
            known = {}
            for f in tagged:
                if isinstance(f.type, Struct):
                    known[f.tag] = self.struct_fns(f.type)[0]
                    continue
                rname = self._name(f"t_{st.name}_{f.name}_")
                rbody = self.read_value(f.type, "x", True, v in f.nullable, f.name)
                self.lines += [f"def {rname}(buf, pos):"] + ["    " + ln for ln in rbody]
                self.lines += ["    return x, pos", ""]
                known[f.tag] = rname
            table = "{" + ", ".join(f"{t}: {r}" for t, r in known.items()) + "}"
            body.append(f"tg, pos = rd_tagged(buf, pos, {table})")
            for f in tagged:
                dflt = self.fresh_default(f)
                body.append(f"{var[f.name]} = tg[{f.tag}] if {f.tag} in tg else {dflt}")
        elif self.flexible:
            body.append("if buf[pos]: pos = skip_tagged(buf, pos)")
            body.append("else: pos += 1")
        ret = ", ".join(f"{f.name!r}: {var[f.name]}" for f in fields)
        body.append(f"return {{{ret}}}, pos")
        return [f"def {fname}(buf, pos):"] + ["    " + ln for ln in body]

    def fresh_default(self, f: Field) -> str:
        dv = field_default(f, self.version)
        if isinstance(dv, (list, dict)):
            if not dv:
                return "[]" if isinstance(dv, list) else "{}"
            flat = all(not isinstance(x, (list, dict)) for x in dv.values())
            return f"{self.const(dv, 'D')}.copy()" if flat else f"deepcopy({self.const(dv, 'D')})"
        return self.const(dv, "D")

    def read_value(self, t: Any, target: str, compact: bool, nullable: bool,
                   where: str) -> list[str]:
        if isinstance(t, Struct):
            dec, _ = self.struct_fns(t)
            return [f"{target}, pos = {dec}(buf, pos)"]
        if isinstance(t, Array):
            return self.read_array(t, target, compact, nullable, where)
        if t.fmt is not None:
            s = self.const(struct.Struct(">" + t.fmt), "S")
            lines = [f"{target}, = {s}.unpack_from(buf, pos); pos += {t.size}"]
            if t is UUID:
                lines.append(f"{target} = uuid_of({target})")
            return lines
        if t is VARINT:
            return [f"{target}, pos = rd_varint(buf, pos)"]
        if t is VARLONG:
            return [f"{target}, pos = rd_varlong(buf, pos)"]
        return [f"{target}, pos = {_READERS[t, nullable, compact]}(buf, pos)"]

    def read_array(self, t: Array, target: str, compact: bool, nullable: bool,
                   where: str) -> list[str]:
        el = t.element
        size = min_wire_size(el, self.version, compact, self.flexible)
        n = self._name("n")
        lines = [f"{n}, pos = {'rd_calen' if compact else 'rd_alen'}(buf, pos, {max(size, 1)})",
                 f"if {n} < 0:"]
        if nullable:
            lines.append(f"    {target} = None")
        else:
            lines.append(f"    raise KafkaProtocolError('null array for non-nullable {where}')")
        if isinstance(el, Prim) and el.fmt is not None and el is not UUID:
            lines += ["else:",
                      f"    {target} = list(_unpack_from('>%d{el.fmt}' % {n}, buf, pos))",
                      f"    pos += {n} * {el.size}"]
            return lines
        x = self._name("x")
        inner = self.read_value(el, x, compact, False, where + "[]")
        lines += ["else:", f"    {target} = []", f"    for _ in range({n}):"]
        lines += ["        " + ln for ln in inner]
        lines.append(f"        {target}.append({x})")
        return lines

    def struct_encoder(self, st: Struct, fname: str) -> list[str]:
        v = self.version
        fields = present_fields(st, v)
        body: list[str] = []
        run: list[Field] = []

        def get(f: Field) -> str:
            if isinstance(f.type, Array):  # read-only default: no list allocated per call
                return f"d.get({f.name!r}, {'None' if f.default is None else '()'})"
            return f"d.get({f.name!r}, {self.const(field_default(f, v), 'D')})"

        def flush() -> None:
            if not run:
                return
            fmt = ">" + "".join(f.type.fmt for f in run)
            s = self.const(struct.Struct(fmt), "S")
            args = ", ".join(f"uuid_raw({get(f)})" if f.type is UUID else get(f) for f in run)
            body.append(f"out += {s}.pack({args})")
            run.clear()

        for f in fields:
            if f.is_tagged(v):
                continue
            if self._fixed(f):
                run.append(f)
                continue
            flush()
            body += self.write_value(f.type, get(f), "out", f.is_compact(v, self.flexible),
                                     v in f.nullable)
        flush()
        tagged = sorted((f for f in fields if f.is_tagged(v)), key=lambda f: f.tag)
        if self.flexible and tagged:
            body.append("tg = []")
            for f in tagged:
                x = self._name("x")
                body.append(f"{x} = {get(f)}")
                body.append(f"if {self.non_default_test(f, x)}:")
                body.append("    tb = bytearray()")
                body += ["    " + ln for ln in
                         self.write_value(f.type, x, "tb", True, v in f.nullable, parts="None")]
                body.append(f"    tg.append(({f.tag}, tb))")
            body.append("w_tagged(out, tg)")
        elif self.flexible:
            body.append("out.append(0)")
        if not body:
            body.append("pass")
        return [f"def {fname}(out, parts, d):"] + ["    " + ln for ln in body]

    def non_default_test(self, f: Field, x: str) -> str:
        t = f.type
        if isinstance(t, Array):
            return f"{x} is not None" if f.default is None else x
        if isinstance(t, Struct):
            dflt = self.const(struct_default(t, self.version), "D")
            return f"{x} is not None and not is_default_struct({x}, {dflt})"
        dv = field_default(f, self.version)
        if dv is None:
            return f"{x} is not None"
        return f"{x} != {self.const(dv)}"

    def write_value(self, t: Any, expr: str, out: str, compact: bool, nullable: bool,
                    parts: str = "parts") -> list[str]:
        if isinstance(t, Struct):
            _, enc = self.struct_fns(t)
            return [f"{enc}({out}, {parts}, {expr})"]
        if isinstance(t, Array):
            return self.write_array(t, expr, out, compact, nullable, parts)
        if t.fmt is not None:
            s = self.const(struct.Struct(">" + t.fmt), "S")
            arg = f"uuid_raw({expr})" if t is UUID else expr
            return [f"{out} += {s}.pack({arg})"]
        if t is VARINT:
            return [f"w_varint({out}, {expr})"]
        if t is VARLONG:
            return [f"w_varlong({out}, {expr})"]
        if t is RECORDS:
            return [f"{'w_crecords' if compact else 'w_records'}({out}, {parts}, {expr})"]
        return [f"{_WRITERS[t, nullable, compact]}({out}, {expr})"]

    def write_array(self, t: Array, expr: str, out: str, compact: bool, nullable: bool,
                    parts: str) -> list[str]:
        a = self._name("a")
        lines = [f"{a} = {expr}"]
        null = f"{out}.append(0)" if compact else f"{out} += _NULL32"
        if nullable:
            lines += [f"if {a} is None:", f"    {null}", "else:"]
            ind = "    "
        else:
            ind = ""
        count = f"w_uvarint({out}, len({a}) + 1)" if compact else f"{out} += _I32.pack(len({a}))"
        lines.append(ind + count)
        el = t.element
        if isinstance(el, Prim) and el.fmt is not None and el is not UUID:
            lines.append(ind + f"{out} += _pack('>%d{el.fmt}' % len({a}), *{a})")
            return lines
        x = self._name("x")
        lines.append(ind + f"for {x} in {a}:")
        lines += [ind + "    " + ln for ln in self.write_value(el, x, out, compact, False, parts)]
        return lines


# ----------------------------------------------------------------------------- entry points

_DECODE_ERRORS = (struct.error, IndexError, UnicodeDecodeError, ValueError)
_ENCODE_ERRORS = (struct.error, TypeError, AttributeError, ValueError, OverflowError,
                  UnicodeEncodeError, KeyError)


def decode_struct(plan: Plan, data: Buffer, offset: int = 0,
                  allow_trailing: bool = False) -> tuple[dict, int]:
    """Decode ``data[offset:]`` with ``plan``; returns (body, end offset)."""
    buf = data if isinstance(data, memoryview) else memoryview(data)
    try:
        body, pos = plan.decode(buf, offset)
    except KafkaProtocolError as e:
        raise KafkaProtocolError(f"{plan.name} v{plan.version}: {e}") from None
    except _DECODE_ERRORS as e:
        raise KafkaProtocolError(f"{plan.name} v{plan.version}: truncated or malformed "
                                 f"({type(e).__name__}: {e})") from None
    if pos != len(buf) and not allow_trailing:
        raise KafkaProtocolError(f"{plan.name} v{plan.version}: {len(buf) - pos} trailing bytes")
    return body, pos


def encode_struct_parts(plan: Plan, body: Mapping, st: Struct | None = None,
                        strict: bool = False) -> list[Buffer]:
    """Encode ``body``; returns a list of buffers (large records stay separate, uncopied)."""
    if strict and st is not None:
        validate(st, plan.version, plan.flexible, body)
    out = bytearray()
    parts: list[Buffer] = []
    try:
        plan.encode(out, parts, body)
    except _ENCODE_ERRORS + (KafkaProtocolError,) as e:
        detail = ""
        if st is not None:
            try:
                validate(st, plan.version, plan.flexible, body)
            except KafkaProtocolError as ve:
                detail = f" ({ve})"
        raise KafkaProtocolError(
            f"cannot encode {plan.name} v{plan.version}: {type(e).__name__}: {e}{detail}") from None
    if out or not parts:
        parts.append(out)
    return parts


# ----------------------------------------------------------------------------- validation

def validate(st: Struct, version: int, flexible: bool, body: Any, path: str = "") -> None:
    """Slow, precise check of a body against a struct version (strict encode, error messages).

    Rejects unknown keys, wrong types, nulls where the version has no null, and non-default
    values of non-ignorable fields the version does not carry (Kafka's rule).
    """
    path = path or st.name
    if not isinstance(body, Mapping):
        raise KafkaProtocolError(f"{path}: expected a mapping, got {type(body).__name__}")
    for key in body:
        if key not in st.by_name:
            raise KafkaProtocolError(f"{path}: unknown field {key!r}")
    for f in st.fields:
        where = f"{path}.{f.name}"
        if version not in f.versions:
            if f.ignorable or f.name not in body:
                continue
            value = body[f.name]
            if not _is_default(f, value, version):
                raise KafkaProtocolError(f"{where}: not in version {version} and not ignorable")
            continue
        if f.name in body:
            _validate_value(f.type, body[f.name], version, flexible, version in f.nullable, where)


def _is_default(f: Field, value: Any, version: int) -> bool:
    if isinstance(f.type, Array):
        return value == (None if f.default is None else []) or value == ()
    if isinstance(f.type, Struct):
        return isinstance(value, Mapping) and all(
            value.get(k, dv) == dv for k, dv in struct_default(f.type, f.versions.lo).items())
    return value == field_default(f, version)


def _validate_value(t: Any, value: Any, version: int, flexible: bool, nullable: bool,
                    where: str) -> None:
    if value is None:
        if nullable or t is RECORDS:
            return
        raise KafkaProtocolError(f"{where}: null in a version where it is not nullable")
    if isinstance(t, Struct):
        validate(t, version, flexible, value, where)
    elif isinstance(t, Array):
        if not isinstance(value, (list, tuple)):
            raise KafkaProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _validate_value(t.element, item, version, flexible, False, f"{where}[{i}]")
    elif t.name in INT_RANGES:
        lo, hi = INT_RANGES[t.name]
        if not isinstance(value, int) or not lo <= value <= hi:
            raise KafkaProtocolError(f"{where}: {value!r} is not a valid {t.name}")
    elif t is BOOL:
        if not isinstance(value, (bool, int)):
            raise KafkaProtocolError(f"{where}: expected a bool, got {type(value).__name__}")
    elif t is FLOAT64:
        if not isinstance(value, (float, int)):
            raise KafkaProtocolError(f"{where}: expected a float, got {type(value).__name__}")
    elif t is STRING:
        if not isinstance(value, str):
            raise KafkaProtocolError(f"{where}: expected a str, got {type(value).__name__}")
        if len(value.encode("utf-8", "surrogatepass")) > 0x7FFF:
            raise KafkaProtocolError(f"{where}: string longer than 32767 bytes")
    elif t is UUID:
        if not isinstance(value, uuid.UUID) and not (
                isinstance(value, (bytes, bytearray)) and len(value) == 16):
            raise KafkaProtocolError(f"{where}: expected a uuid.UUID")
    elif t is BYTES:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise KafkaProtocolError(f"{where}: expected bytes, got {type(value).__name__}")
    elif t is RECORDS:
        chunks = [value] if isinstance(value, (bytes, bytearray, memoryview)) else value
        if not isinstance(chunks, (list, tuple)) or not all(
                isinstance(c, (bytes, bytearray, memoryview)) for c in chunks):
            raise KafkaProtocolError(f"{where}: expected bytes-like records or a list of them")
