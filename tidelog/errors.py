"""Client-side errors. Each carries `error_name`, Kafka's name for it, and whether retrying may help."""

from __future__ import annotations

# Kafka's retriable errors that a tidelog client retries (Errors.java: subclasses of RetriableException).
RETRIABLE = frozenset({
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_OR_FOLLOWER",
    "REQUEST_TIMED_OUT",
    "REPLICA_NOT_AVAILABLE",
    "NETWORK_EXCEPTION",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "KAFKA_STORAGE_ERROR",
    "BROKER_NOT_AVAILABLE",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "THROTTLING_QUOTA_EXCEEDED",
    "NOT_CONTROLLER",
})

# Errors after which a client asks the cluster again where partitions live.
METADATA_STALE = frozenset({
    "NOT_LEADER_OR_FOLLOWER",
    "LEADER_NOT_AVAILABLE",
    "BROKER_NOT_AVAILABLE",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "NETWORK_EXCEPTION",
    "REQUEST_TIMED_OUT",
})


class TidelogError(Exception):
    """Base of every error the client raises."""

    error_name = "UNKNOWN_SERVER_ERROR"
    leader_id = -1  # NOT_LEADER_OR_FOLLOWER: the broker the answering one believes leads (-1: unknown)

    def __init__(self, message: str, *, error_name: str | None = None) -> None:
        super().__init__(message)
        if error_name is not None:
            self.error_name = error_name

    @property
    def retriable(self) -> bool:
        return self.error_name in RETRIABLE


class BrokerUnavailableError(TidelogError):
    """The broker cannot be reached (connection refused, reset, or timed out)."""

    error_name = "BROKER_NOT_AVAILABLE"


class UnknownTopicOrPartitionError(TidelogError):
    error_name = "UNKNOWN_TOPIC_OR_PARTITION"


class TopicAlreadyExistsError(TidelogError):
    error_name = "TOPIC_ALREADY_EXISTS"


class OffsetOutOfRangeError(TidelogError):
    error_name = "OFFSET_OUT_OF_RANGE"


class InvalidConfigError(TidelogError):
    error_name = "INVALID_CONFIG"


class MessageTooLargeError(TidelogError):
    error_name = "MESSAGE_TOO_LARGE"


class CorruptMessageError(TidelogError):
    error_name = "CORRUPT_MESSAGE"


class RequestTimedOutError(TidelogError):
    error_name = "REQUEST_TIMED_OUT"


class ProducerClosedError(TidelogError):
    error_name = "PRODUCER_CLOSED"


_BY_NAME: dict[str, type[TidelogError]] = {
    cls.error_name: cls
    for cls in (BrokerUnavailableError, UnknownTopicOrPartitionError, TopicAlreadyExistsError,
                OffsetOutOfRangeError, InvalidConfigError, MessageTooLargeError, CorruptMessageError,
                RequestTimedOutError)
}


def error_for(error_name: str, message: str) -> TidelogError:
    """The exception for a Kafka error name (the specific subclass when there is one)."""
    cls = _BY_NAME.get(error_name, TidelogError)
    return cls(message or error_name, error_name=error_name)
