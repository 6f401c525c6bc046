from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_TYPE_UNSPECIFIED: _ClassVar[MessageType]
    REQUEST_VOTE: _ClassVar[MessageType]
    REQUEST_VOTE_RESPONSE: _ClassVar[MessageType]
    APPEND_ENTRIES: _ClassVar[MessageType]
    APPEND_ENTRIES_RESPONSE: _ClassVar[MessageType]
    HEARTBEAT: _ClassVar[MessageType]
    HEARTBEAT_RESPONSE: _ClassVar[MessageType]
    INSTALL_SNAPSHOT: _ClassVar[MessageType]
    TIMEOUT_NOW: _ClassVar[MessageType]
MESSAGE_TYPE_UNSPECIFIED: MessageType
REQUEST_VOTE: MessageType
REQUEST_VOTE_RESPONSE: MessageType
APPEND_ENTRIES: MessageType
APPEND_ENTRIES_RESPONSE: MessageType
HEARTBEAT: MessageType
HEARTBEAT_RESPONSE: MessageType
INSTALL_SNAPSHOT: MessageType
TIMEOUT_NOW: MessageType

class Envelope(_message.Message):
    __slots__ = ("from_node", "messages", "hints")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    hints: _containers.RepeatedCompositeFieldContainer[LeaderHint]
    def __init__(self, from_node: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ..., hints: _Optional[_Iterable[_Union[LeaderHint, _Mapping]]] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("group_name", "group_number", "type", "from_node", "to_node", "term", "index", "log_term", "commit", "reject_hint_index", "reject_hint_term", "flags", "entry_meta", "entry_data", "snapshot")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_TERM_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_META_FIELD_NUMBER: _ClassVar[int]
    ENTRY_DATA_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    group_number: int
    type: MessageType
    from_node: int
    to_node: int
    term: int
    index: int
    log_term: int
    commit: int
    reject_hint_index: int
    reject_hint_term: int
    flags: int
    entry_meta: _containers.RepeatedScalarFieldContainer[int]
    entry_data: _containers.RepeatedScalarFieldContainer[bytes]
    snapshot: SnapshotMeta
    def __init__(self, group_name: _Optional[str] = ..., group_number: _Optional[int] = ..., type: _Optional[_Union[MessageType, str]] = ..., from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., term: _Optional[int] = ..., index: _Optional[int] = ..., log_term: _Optional[int] = ..., commit: _Optional[int] = ..., reject_hint_index: _Optional[int] = ..., reject_hint_term: _Optional[int] = ..., flags: _Optional[int] = ..., entry_meta: _Optional[_Iterable[int]] = ..., entry_data: _Optional[_Iterable[bytes]] = ..., snapshot: _Optional[_Union[SnapshotMeta, _Mapping]] = ...) -> None: ...

class SnapshotMeta(_message.Message):
    __slots__ = ("index", "term", "voters", "learners", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class LeaderHint(_message.Message):
    __slots__ = ("group_name", "group_number", "leader_id", "term", "isr")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    group_number: int
    leader_id: int
    term: int
    isr: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, group_name: _Optional[str] = ..., group_number: _Optional[int] = ..., leader_id: _Optional[int] = ..., term: _Optional[int] = ..., isr: _Optional[_Iterable[int]] = ...) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("method", "payload")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    method: str
    payload: bytes
    def __init__(self, method: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class CallResponse(_message.Message):
    __slots__ = ("payload", "error")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    error: str
    def __init__(self, payload: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...
