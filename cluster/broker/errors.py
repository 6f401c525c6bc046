"""Errors of the broker core, named by Kafka's error names.

The core speaks Kafka error *names* only; each front door maps a name to its own wire form (the gRPC API's
`tidelog.v1.ErrorCode` plus a status code, the Kafka protocol's numeric code). Storage exceptions are
translated here, in one place.
"""

from __future__ import annotations


class BrokerError(Exception):
    """A request the broker refuses or cannot complete. `error_name` is Kafka's name for it."""

    error_name = "UNKNOWN_SERVER_ERROR"

    def __init__(self, message: str, *, error_name: str | None = None) -> None:
        super().__init__(message)
        if error_name is not None:
            self.error_name = error_name

    @property
    def message(self) -> str:
        return str(self)


class UnknownTopicOrPartitionError(BrokerError):
    error_name = "UNKNOWN_TOPIC_OR_PARTITION"


class TopicAlreadyExistsError(BrokerError):
    error_name = "TOPIC_ALREADY_EXISTS"


class InvalidTopicError(BrokerError):
    error_name = "INVALID_TOPIC_EXCEPTION"


class InvalidPartitionsError(BrokerError):
    error_name = "INVALID_PARTITIONS"


class InvalidConfigError(BrokerError):
    error_name = "INVALID_CONFIG"


class InvalidRequestError(BrokerError):
    error_name = "INVALID_REQUEST"


class InvalidRequiredAcksError(BrokerError):
    error_name = "INVALID_REQUIRED_ACKS"


class OffsetOutOfRangeError(BrokerError):
    error_name = "OFFSET_OUT_OF_RANGE"


class RecordListTooLargeError(BrokerError):
    error_name = "RECORD_LIST_TOO_LARGE"


class RequestTimedOutError(BrokerError):
    error_name = "REQUEST_TIMED_OUT"


class StorageFailureError(BrokerError):
    error_name = "KAFKA_STORAGE_ERROR"


class NotLeaderOrFollowerError(BrokerError):
    error_name = "NOT_LEADER_OR_FOLLOWER"
    leader_id = -1  # the leader this broker knows of (-1: none), so clients can go there


class NotControllerError(BrokerError):
    error_name = "NOT_CONTROLLER"


def leader_hint(exc: BaseException) -> int:
    """The leader id a NOT_LEADER_OR_FOLLOWER error names (-1 for none or for other errors)."""
    value = getattr(exc, "leader_id", -1)
    return value if isinstance(value, int) and value is not None else -1


def translate(exc: BaseException) -> BrokerError:
    """Map a storage (or any) exception to the BrokerError a front door reports.

    Storage and record-batch exceptions carry `error_name` (the Kafka error); anything else is an internal
    error, or KAFKA_STORAGE_ERROR for an OSError.
    """
    if isinstance(exc, BrokerError):
        return exc
    name = getattr(exc, "error_name", None)
    if isinstance(name, str):
        return BrokerError(str(exc), error_name=name)
    if isinstance(exc, OSError):
        return StorageFailureError(f"I/O error: {exc}")
    return BrokerError(f"internal error: {type(exc).__name__}: {exc}")
