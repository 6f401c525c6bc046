"""Request/response headers, size-prefixed frames and body encode/decode by (api, version).

A *frame* is the int32 size followed by the *payload* (header + body). Functions named
``*_payload`` take the bytes after the size prefix (what :class:`KafkaServerConnection` yields);
the others take or return whole frames. ``*_buffers`` variants return a list of buffers for
``writelines`` so that large records are never copied by the codec.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .api_keys import ApiKey
from .codec import Buffer, Plan, decode_struct, encode_struct_parts, plan_for
from .constants import request_header_version, response_header_version
from .errors import ErrorCode, KafkaProtocolError
from .messages import APIS, REQUEST_HEADER, RESPONSE_HEADER
from .schema import Struct

_I32 = struct.Struct(">i")
_HEAD = struct.Struct(">hhi")  # api_key, api_version, correlation_id
DEFAULT_CLIENT_ID = "tidelog"


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


_BODY_PLANS: dict[tuple[int, int, bool], tuple[Plan, Struct]] = {}
_REQ_HEADER_PLANS = {v: plan_for(REQUEST_HEADER, v, v >= 2) for v in (1, 2)}
_RESP_HEADER_PLANS = {v: plan_for(RESPONSE_HEADER, v, v >= 1) for v in (0, 1)}


def body_plan(api_key: int, api_version: int, response: bool) -> tuple[Plan, Struct]:
    """The compiled plan of one (api, version, direction); KafkaProtocolError if unsupported."""
    key = (api_key, api_version, response)
    found = _BODY_PLANS.get(key)
    if found is None:
        api = APIS.get(api_key)  # type: ignore[call-overload]
        if api is None:
            raise KafkaProtocolError(f"unknown API key {api_key}")
        if api_version not in api.versions:
            raise KafkaProtocolError(f"{api.name} v{api_version} is not supported "
                                     f"(versions {api.versions})")
        st = api.response if response else api.request
        found = _BODY_PLANS[key] = (plan_for(st, api_version, api_version in api.flexible), st)
    return found


def is_supported(api_key: int, api_version: int) -> bool:
    api = APIS.get(api_key)  # type: ignore[call-overload]
    return api is not None and api_version in api.versions


# ------------------------------------------------------------------------------ bodies

def encode_body(api_key: int, api_version: int, body: Mapping, *, response: bool,
                strict: bool = False) -> bytes:
    return b"".join(encode_body_buffers(api_key, api_version, body, response=response,
                                        strict=strict))


def encode_body_buffers(api_key: int, api_version: int, body: Mapping, *, response: bool,
                        strict: bool = False) -> list[Buffer]:
    plan, st = body_plan(api_key, api_version, response)
    return encode_struct_parts(plan, body, st, strict)


def decode_body(api_key: int, api_version: int, data: Buffer, *, response: bool,
                offset: int = 0, allow_trailing: bool = False) -> dict:
    plan, _ = body_plan(api_key, api_version, response)
    return decode_struct(plan, data, offset, allow_trailing)[0]


# ------------------------------------------------------------------------------ frames

def _nbytes(b: Buffer) -> int:
    return b.nbytes if isinstance(b, memoryview) else len(b)


def _frame(head: bytearray, parts: list[Buffer]) -> list[Buffer]:
    """Fill in the size prefix reserved at head[0:4]."""
    _I32.pack_into(head, 0, len(head) - 4 + sum(_nbytes(p) for p in parts))
    return [head, *parts]


def encode_request_buffers(api_key: int, api_version: int, correlation_id: int, body: Mapping,
                           client_id: str | None = DEFAULT_CLIENT_ID, *,
                           strict: bool = False) -> list[Buffer]:
    parts = encode_body_buffers(api_key, api_version, body, response=False, strict=strict)
    head = bytearray(4)
    _REQ_HEADER_PLANS[request_header_version(api_key, api_version)].encode(head, None, {
        "request_api_key": api_key, "request_api_version": api_version,
        "correlation_id": correlation_id, "client_id": client_id})
    return _frame(head, parts)


def encode_request(api_key: int, api_version: int, correlation_id: int, body: Mapping,
                   client_id: str | None = DEFAULT_CLIENT_ID, *, strict: bool = False) -> bytes:
    """A size-prefixed request frame (client side)."""
    return b"".join(encode_request_buffers(api_key, api_version, correlation_id, body, client_id,
                                           strict=strict))


def encode_response_buffers(api_key: int, api_version: int, correlation_id: int, body: Mapping,
                            *, strict: bool = False) -> list[Buffer]:
    parts = encode_body_buffers(api_key, api_version, body, response=True, strict=strict)
    head = bytearray(4)
    _RESP_HEADER_PLANS[response_header_version(api_key, api_version)].encode(
        head, None, {"correlation_id": correlation_id})
    return _frame(head, parts)


def encode_response(api_key: int, api_version: int, correlation_id: int, body: Mapping,
                    *, strict: bool = False) -> bytes:
    """A size-prefixed response frame (server side)."""
    return b"".join(encode_response_buffers(api_key, api_version, correlation_id, body,
                                            strict=strict))


def _payload_of(frame: Buffer) -> memoryview:
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    if len(buf) < 4:
        raise KafkaProtocolError(f"frame of {len(buf)} bytes has no size prefix")
    size = _I32.unpack_from(buf, 0)[0]
    if size != len(buf) - 4:
        raise KafkaProtocolError(f"frame size prefix says {size}, payload has {len(buf) - 4}")
    return buf[4:]


def peek_request_header(payload: Buffer) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id): readable whatever the API and version."""
    if len(payload) < _HEAD.size:
        raise KafkaProtocolError(f"request of {len(payload)} bytes is shorter than its header")
    return _HEAD.unpack_from(payload, 0)


def decode_request_header(payload: Buffer) -> tuple[RequestHeader, int]:
    """The request header and the offset of the body.

    For an unknown API key the header is read as v1 (client_id included, no tagged fields):
    every header version starts that way.
    """
    api_key, api_version, _ = peek_request_header(payload)
    version = request_header_version(api_key, api_version)
    d, offset = decode_struct(_REQ_HEADER_PLANS[version], payload, 0, allow_trailing=True)
    return RequestHeader(d["request_api_key"], d["request_api_version"], d["correlation_id"],
                         d["client_id"]), offset


def decode_request_payload(payload: Buffer, *, allow_trailing: bool = False
                           ) -> tuple[RequestHeader, dict]:
    buf = payload if isinstance(payload, memoryview) else memoryview(payload)
    header, offset = decode_request_header(buf)
    plan, _ = body_plan(header.api_key, header.api_version, False)
    body = decode_struct(plan, buf, offset, allow_trailing)[0]
    return header, body


def decode_request(frame: Buffer) -> tuple[RequestHeader, dict]:
    """Decode a size-prefixed request frame (server side)."""
    return decode_request_payload(_payload_of(frame))


def decode_response_payload(api_key: int, api_version: int, payload: Buffer
                            ) -> tuple[int, dict]:
    """(correlation_id, body) of a response to a request of (api_key, api_version)."""
    buf = payload if isinstance(payload, memoryview) else memoryview(payload)
    hv = response_header_version(api_key, api_version)
    head, offset = decode_struct(_RESP_HEADER_PLANS[hv], buf, 0, allow_trailing=True)
    if (api_key == ApiKey.API_VERSIONS and api_version > 0 and len(buf) >= offset + 2
            and struct.unpack_from(">h", buf, offset)[0] == ErrorCode.UNSUPPORTED_VERSION):
        api_version = 0  # KIP-511: a too-new ApiVersions request is answered in v0
    plan, _ = body_plan(api_key, api_version, True)
    return head["correlation_id"], decode_struct(plan, buf, offset)[0]


def decode_response(api_key: int, api_version: int, frame: Buffer) -> tuple[int, dict]:
    """Decode a size-prefixed response frame (client side)."""
    return decode_response_payload(api_key, api_version, _payload_of(frame))


def header_dict(header: RequestHeader) -> dict[str, Any]:
    return {"api_key": header.api_key, "api_version": header.api_version,
            "correlation_id": header.correlation_id, "client_id": header.client_id}
