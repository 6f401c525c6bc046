"""tidelog's Kafka wire-protocol codec: declarative schema tables, one generic encoder/decoder,
headers and framing, and a sans-I/O server connection. No sockets here.

Bodies are dicts with snake_case keys (Kafka's field names); ``records`` fields are passed
through as memoryviews (decode) or bytes-like objects / lists of them (encode).
"""

from .api_keys import ApiKey
from .codec import Plan, plan_for
from .connection import (NEED_DATA, ConnectionClosed, KafkaServerConnection, ProtocolViolation,
                         Request, UnsupportedRequest)
from .constants import (ADVERTISED_VERSIONS, FLEXIBLE_FROM, api_versions_entries, is_flexible,
                        request_header_version, response_header_version, valid_client_software)
from .consumer_protocol import (decode_assignment, decode_subscription, encode_assignment,
                                encode_subscription)
from .errors import RETRIABLE_ERRORS, ErrorCode, KafkaProtocolError
from .framing import (RequestHeader, body_plan, decode_body, decode_request,
                      decode_request_header, decode_request_payload, decode_response,
                      decode_response_payload, encode_body, encode_body_buffers, encode_request,
                      encode_request_buffers, encode_response, encode_response_buffers,
                      is_supported)
from .messages import APIS

__all__ = [
    "ADVERTISED_VERSIONS", "APIS", "FLEXIBLE_FROM", "NEED_DATA", "RETRIABLE_ERRORS", "ApiKey",
    "ConnectionClosed", "ErrorCode", "KafkaProtocolError", "KafkaServerConnection", "Plan",
    "ProtocolViolation", "Request", "RequestHeader", "UnsupportedRequest",
    "api_versions_entries", "body_plan", "decode_assignment", "decode_body", "decode_request",
    "decode_request_header", "decode_request_payload", "decode_response",
    "decode_response_payload", "decode_subscription", "encode_assignment", "encode_body",
    "encode_body_buffers", "encode_request", "encode_request_buffers", "encode_response",
    "encode_response_buffers", "encode_subscription", "is_flexible", "is_supported", "plan_for",
    "request_header_version", "response_header_version", "valid_client_software",
]
