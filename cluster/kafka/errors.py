"""Kafka error names (what the broker core speaks) to wire codes."""

from __future__ import annotations

from proto.kafka import ErrorCode

NONE = int(ErrorCode.NONE)


def code_of(name: str) -> int:
    """The wire code of a Kafka error name; UNKNOWN_SERVER_ERROR for names Kafka does not have."""
    try:
        return int(ErrorCode[name])
    except KeyError:
        return int(ErrorCode.UNKNOWN_SERVER_ERROR)


def name_of(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"
