"""A sans-I/O Kafka server connection (h11 style): bytes in, events out, bytes to send.

The asyncio shell owns the socket::

    conn = KafkaServerConnection(max_frame_bytes=100 << 20)
    def data_received(data):
        conn.receive_data(data)
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, Request): dispatch(event)        # handler -> conn.send_response
            elif isinstance(event, UnsupportedRequest):
                if event.response: transport.write(event.response)
                if event.close: transport.close(); return
            else: transport.close(); return                       # ProtocolViolation / closed

Frames are sliced out of the received chunks without copying when a frame lies in one chunk
and joined with one copy otherwise; a decoded ``records`` field is a view on that frame.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from .api_keys import ApiKey
from .codec import Buffer, decode_struct
from .constants import ADVERTISED_VERSIONS
from .errors import ErrorCode, KafkaProtocolError
from .framing import (RequestHeader, body_plan, decode_request_header, encode_response,
                      encode_response_buffers, peek_request_header)
from .messages import APIS

_I32 = struct.Struct(">i")
DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes
MIN_REQUEST_BYTES = 10  # api_key, api_version, correlation_id, client_id length


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed request of a served (api, version): hand it to a handler."""

    header: RequestHeader
    body: dict

    @property
    def expects_response(self) -> bool:
        # acks=0 produce requests get no response at all.
        return not (self.header.api_key == ApiKey.PRODUCE and self.body.get("acks") == 0)


@dataclass(frozen=True, slots=True)
class UnsupportedRequest:
    """A request of an unknown API key or of a version this broker does not serve.

    Write ``response`` (a complete frame, or None when none is possible), then close the
    connection if ``close``. ApiVersions is always answered (KIP-511) and never closes.
    """

    header: RequestHeader
    reason: str
    response: bytes | None
    close: bool


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """Malformed or oversize input: the shell must close the connection (nothing to answer)."""

    reason: str
    correlation_id: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection between frames."""


Event = Request | UnsupportedRequest | ProtocolViolation | ConnectionClosed | _NeedData


class KafkaServerConnection:
    """Turns received bytes into request events; encodes responses. No I/O, no clock.

    ``max_frame_bytes`` is checked against the 4-byte size prefix before the frame is buffered.
    ``max_buffer_bytes`` bounds everything held (default: one maximal frame plus 1 MiB); the
    shell keeps under it by draining :meth:`next_event` after each :meth:`receive_data`.
    ``supported`` narrows the served versions (default: everything advertised).
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, *,
                 max_buffer_bytes: int | None = None,
                 supported: Mapping[int, tuple[int, int]] | None = None) -> None:
        assert max_frame_bytes >= MIN_REQUEST_BYTES
        self.max_frame_bytes = max_frame_bytes
        self.max_buffer_bytes = (max_frame_bytes + 4 + (1 << 20) if max_buffer_bytes is None
                                 else max_buffer_bytes)
        assert self.max_buffer_bytes >= max_frame_bytes + 4
        self.supported: Mapping[int, tuple[int, int]] = (
            ADVERTISED_VERSIONS if supported is None else supported)
        self._chunks: deque[memoryview] = deque()
        self._offset = 0  # consumed bytes of _chunks[0]
        self._buffered = 0
        self._frame_size: int | None = None  # size prefix read, payload pending
        self._eof = False
        self._broken: ProtocolViolation | None = None

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes from the socket; ``b""`` means the peer closed its side."""
        if self._broken is not None or self._eof:
            return
        if not data:
            self._eof = True
            return
        if not isinstance(data, bytes):  # a caller's reusable buffer must not change under us
            data = bytes(data)
        if self._buffered + len(data) > self.max_buffer_bytes:
            self._fail(f"receive buffer limit of {self.max_buffer_bytes} bytes exceeded")
            return
        self._chunks.append(memoryview(data))
        self._buffered += len(data)

    def next_event(self) -> Event:
        if self._broken is not None:
            return self._broken
        if self._frame_size is None:
            if self._buffered < 4:
                return self._at_end(self._buffered > 0)
            size = _I32.unpack(self._take(4))[0]
            if size < MIN_REQUEST_BYTES:
                return self._fail(f"frame size {size} is below the smallest request")
            if size > self.max_frame_bytes:
                return self._fail(f"frame of {size} bytes exceeds max_frame_bytes "
                                  f"{self.max_frame_bytes}")
            self._frame_size = size
        if self._buffered < self._frame_size:
            return self._at_end(True)
        payload = self._take(self._frame_size)
        self._frame_size = None
        return self._parse(payload)

    def send_response(self, header: RequestHeader, body: Mapping) -> bytes:
        """The framed response to ``header``'s request."""
        return encode_response(header.api_key, header.api_version, header.correlation_id, body)

    def send_response_buffers(self, header: RequestHeader, body: Mapping) -> list[Buffer]:
        """Same as :meth:`send_response` as a list for ``writelines`` (records not copied)."""
        return encode_response_buffers(header.api_key, header.api_version,
                                       header.correlation_id, body)

    # -- internals
    def _at_end(self, partial: bool) -> Event:
        if not self._eof:
            return NEED_DATA
        if partial:
            return self._fail("connection closed in the middle of a frame")
        return ConnectionClosed()

    def _fail(self, reason: str, correlation_id: int | None = None) -> ProtocolViolation:
        self._broken = ProtocolViolation(reason, correlation_id)
        self._chunks.clear()
        self._buffered = 0
        return self._broken

    def _take(self, n: int) -> memoryview:
        """Remove n buffered bytes: a view when they lie in one chunk, else one joined copy."""
        assert 0 < n <= self._buffered
        self._buffered -= n
        first = self._chunks[0]
        start = self._offset
        if len(first) - start >= n:
            self._offset += n
            if self._offset == len(first):
                self._chunks.popleft()
                self._offset = 0
            return first[start:start + n]
        out = bytearray(n)
        filled = 0
        while filled < n:
            chunk = self._chunks[0]
            piece = min(len(chunk) - self._offset, n - filled)
            out[filled:filled + piece] = chunk[self._offset:self._offset + piece]
            filled += piece
            self._offset += piece
            if self._offset == len(chunk):
                self._chunks.popleft()
                self._offset = 0
        return memoryview(out)

    def _parse(self, payload: memoryview) -> Event:
        api_key, api_version, correlation_id = peek_request_header(payload)
        api = APIS.get(api_key)  # type: ignore[call-overload]
        served = self.supported.get(api_key)
        if api is None or served is None or not (
                served[0] <= api_version <= served[1] and api_version in api.versions):
            return self._unsupported(payload, api_key, api_version, correlation_id, served)
        try:
            header, offset = decode_request_header(payload)
            plan, _ = body_plan(api_key, api_version, False)
            # Like Kafka, bytes after a complete body are ignored.
            body = decode_struct(plan, payload, offset, allow_trailing=True)[0]
        except KafkaProtocolError as e:
            return self._fail(f"malformed request: {e}", correlation_id)
        return Request(header, body)

    def _unsupported(self, payload: memoryview, api_key: int, api_version: int,
                     correlation_id: int, served: tuple[int, int] | None) -> Event:
        try:
            header = decode_request_header(payload)[0]
        except KafkaProtocolError:
            header = RequestHeader(api_key, api_version, correlation_id, None)
        if served is None or api_key not in APIS:
            return UnsupportedRequest(header, f"unknown API key {api_key}", None, True)
        reason = (f"{APIS[api_key].name} v{api_version} not served "
                  f"(versions {served[0]}-{served[1]})")
        if api_key == ApiKey.API_VERSIONS:
            # KIP-511: a v0 body with error 35 and our ApiVersions range; the client retries.
            body = {"error_code": ErrorCode.UNSUPPORTED_VERSION,
                    "api_keys": [{"api_key": api_key, "min_version": served[0],
                                  "max_version": served[1]}]}
            return UnsupportedRequest(header, reason, encode_response(api_key, 0, correlation_id,
                                                                      body), False)
        if api_version in APIS[api_key].versions:
            _, st = body_plan(api_key, api_version, True)
            error_field = st.by_name.get("error_code")
            if error_field is not None and api_version in error_field.versions:
                body = {"error_code": ErrorCode.UNSUPPORTED_VERSION}
                return UnsupportedRequest(header, reason, encode_response(
                    api_key, api_version, correlation_id, body), False)
        return UnsupportedRequest(header, reason, None, True)
