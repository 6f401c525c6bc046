"""Consumer groups: coordinator discovery, membership, committed offsets.

Tables written from Kafka's message schemas; see proto/kafka/messages/__init__.py.
"""

from ..api_keys import ApiKey
from ..schema import BOOL, BYTES, INT8, INT16, INT32, INT64, STRING, Api, Array, F, Struct

FIND_COORDINATOR = Api(ApiKey.FIND_COORDINATOR, "0-6", flexible="3+",
    request=(
        F("key", STRING, "0-3"),
        F("key_type", INT8, "1+"),
        F("coordinator_keys", Array(STRING), "4+"),
    ),
    response=(
        F("throttle_time_ms", INT32, "1+", ignorable=True),
        F("error_code", INT16, "0-3"),
        F("error_message", STRING, "1-3", nullable="1-3", ignorable=True),
        F("node_id", INT32, "0-3"),
        F("host", STRING, "0-3"),
        F("port", INT32, "0-3"),
        F("coordinators", Array(Struct("Coordinator",
            F("key", STRING, "4+"),
            F("node_id", INT32, "4+"),
            F("host", STRING, "4+"),
            F("port", INT32, "4+"),
            F("error_code", INT16, "4+"),
            F("error_message", STRING, "4+", nullable="4+", ignorable=True),
        )), "4+"),
    ),
)


JOIN_GROUP = Api(ApiKey.JOIN_GROUP, "0-9", flexible="6+",
    request=(
        F("group_id", STRING),
        F("session_timeout_ms", INT32),
        F("rebalance_timeout_ms", INT32, "1+", default=-1, ignorable=True),
        F("member_id", STRING),
        F("group_instance_id", STRING, "5+", nullable="5+", default=None),
        F("protocol_type", STRING),
        F("protocols", Array(Struct("JoinGroupRequestProtocol",
            F("name", STRING),
            F("metadata", BYTES),
        ))),
        F("reason", STRING, "8+", nullable="8+", default=None, ignorable=True),
    ),
    response=(
        F("throttle_time_ms", INT32, "2+", ignorable=True),
        F("error_code", INT16),
        F("generation_id", INT32, default=-1),
        F("protocol_type", STRING, "7+", nullable="7+", default=None, ignorable=True),
        F("protocol_name", STRING, nullable="7+"),
        F("leader", STRING),
        F("skip_assignment", BOOL, "9+"),
        F("member_id", STRING),
        F("members", Array(Struct("JoinGroupResponseMember",
            F("member_id", STRING),
            F("group_instance_id", STRING, "5+", nullable="5+", default=None, ignorable=True),
            F("metadata", BYTES),
        ))),
    ),
)


HEARTBEAT = Api(ApiKey.HEARTBEAT, "0-4", flexible="4+",
    request=(
        F("group_id", STRING),
        F("generation_id", INT32),
        F("member_id", STRING),
        F("group_instance_id", STRING, "3+", nullable="3+", default=None),
    ),
    response=(
        F("throttle_time_ms", INT32, "1+", ignorable=True),
        F("error_code", INT16),
    ),
)


LEAVE_GROUP = Api(ApiKey.LEAVE_GROUP, "0-5", flexible="4+",
    request=(
        F("group_id", STRING),
        F("member_id", STRING, "0-2"),
        F("members", Array(Struct("MemberIdentity",
            F("member_id", STRING, "3+"),
            F("group_instance_id", STRING, "3+", nullable="3+", default=None),
            F("reason", STRING, "5+", nullable="5+", default=None, ignorable=True),
        )), "3+"),
    ),
    response=(
        F("throttle_time_ms", INT32, "1+", ignorable=True),
        F("error_code", INT16),
        F("members", Array(Struct("MemberResponse",
            F("member_id", STRING, "3+"),
            F("group_instance_id", STRING, "3+", nullable="3+"),
            F("error_code", INT16, "3+"),
        )), "3+"),
    ),
)


SYNC_GROUP = Api(ApiKey.SYNC_GROUP, "0-5", flexible="4+",
    request=(
        F("group_id", STRING),
        F("generation_id", INT32),
        F("member_id", STRING),
        F("group_instance_id", STRING, "3+", nullable="3+", default=None),
        F("protocol_type", STRING, "5+", nullable="5+", default=None, ignorable=True),
        F("protocol_name", STRING, "5+", nullable="5+", default=None, ignorable=True),
        F("assignments", Array(Struct("SyncGroupRequestAssignment",
            F("member_id", STRING),
            F("assignment", BYTES),
        ))),
    ),
    response=(
        F("throttle_time_ms", INT32, "1+", ignorable=True),
        F("error_code", INT16),
        F("protocol_type", STRING, "5+", nullable="5+", default=None, ignorable=True),
        F("protocol_name", STRING, "5+", nullable="5+", default=None, ignorable=True),
        F("assignment", BYTES),
    ),
)


DESCRIBE_GROUPS = Api(ApiKey.DESCRIBE_GROUPS, "0-5", flexible="5+",
    request=(
        F("groups", Array(STRING)),
        F("include_authorized_operations", BOOL, "3+"),
    ),
    response=(
        F("throttle_time_ms", INT32, "1+", ignorable=True),
        F("groups", Array(Struct("DescribedGroup",
            F("error_code", INT16),
            F("group_id", STRING),
            F("group_state", STRING),
            F("protocol_type", STRING),
            F("protocol_data", STRING),
            F("members", Array(Struct("DescribedGroupMember",
                F("member_id", STRING),
                F("group_instance_id", STRING, "4+", nullable="4+", default=None, ignorable=True),
                F("client_id", STRING),
                F("client_host", STRING),
                F("member_metadata", BYTES),
                F("member_assignment", BYTES),
            ))),
            F("authorized_operations", INT32, "3+", default=-2147483648),
        ))),
    ),
)


LIST_GROUPS = Api(ApiKey.LIST_GROUPS, "0-5", flexible="3+",
    request=(
        F("states_filter", Array(STRING), "4+"),
        F("types_filter", Array(STRING), "5+"),
    ),
    response=(
        F("throttle_time_ms", INT32, "1+", ignorable=True),
        F("error_code", INT16),
        F("groups", Array(Struct("ListedGroup",
            F("group_id", STRING),
            F("protocol_type", STRING),
            F("group_state", STRING, "4+", ignorable=True),
            F("group_type", STRING, "5+", ignorable=True),
        ))),
    ),
)


OFFSET_COMMIT = Api(ApiKey.OFFSET_COMMIT, "0-9", flexible="8+",
    request=(
        F("group_id", STRING),
        F("generation_id_or_member_epoch", INT32, "1+", default=-1, ignorable=True),
        F("member_id", STRING, "1+", ignorable=True),
        F("group_instance_id", STRING, "7+", nullable="7+", default=None),
        F("retention_time_ms", INT64, "2-4", default=-1, ignorable=True),
        F("topics", Array(Struct("OffsetCommitRequestTopic",
            F("name", STRING),
            F("partitions", Array(Struct("OffsetCommitRequestPartition",
                F("partition_index", INT32),
                F("committed_offset", INT64),
                F("committed_leader_epoch", INT32, "6+", default=-1, ignorable=True),
                F("commit_timestamp", INT64, "1", default=-1),
                F("committed_metadata", STRING, nullable="0+"),
            ))),
        ))),
    ),
    response=(
        F("throttle_time_ms", INT32, "3+", ignorable=True),
        F("topics", Array(Struct("OffsetCommitResponseTopic",
            F("name", STRING),
            F("partitions", Array(Struct("OffsetCommitResponsePartition",
                F("partition_index", INT32),
                F("error_code", INT16),
            ))),
        ))),
    ),
)


OFFSET_FETCH = Api(ApiKey.OFFSET_FETCH, "0-9", flexible="6+",
    request=(
        F("group_id", STRING, "0-7"),
        F("topics", Array(Struct("OffsetFetchRequestTopic",
            F("name", STRING, "0-7"),
            F("partition_indexes", Array(INT32), "0-7"),
        )), "0-7", nullable="2-7"),
        F("groups", Array(Struct("OffsetFetchRequestGroup",
            F("group_id", STRING, "8+"),
            F("member_id", STRING, "9+", nullable="9+", default=None, ignorable=True),
            F("member_epoch", INT32, "9+", default=-1, ignorable=True),
            F("topics", Array(Struct("OffsetFetchRequestTopics",
                F("name", STRING, "8+"),
                F("partition_indexes", Array(INT32), "8+"),
            )), "8+", nullable="8+"),
        )), "8+"),
        F("require_stable", BOOL, "7+"),
    ),
    response=(
        F("throttle_time_ms", INT32, "3+", ignorable=True),
        F("topics", Array(Struct("OffsetFetchResponseTopic",
            F("name", STRING, "0-7"),
            F("partitions", Array(Struct("OffsetFetchResponsePartition",
                F("partition_index", INT32, "0-7"),
                F("committed_offset", INT64, "0-7"),
                F("committed_leader_epoch", INT32, "5-7", default=-1, ignorable=True),
                F("metadata", STRING, "0-7", nullable="0-7"),
                F("error_code", INT16, "0-7"),
            )), "0-7"),
        )), "0-7"),
        F("error_code", INT16, "2-7", ignorable=True),
        F("groups", Array(Struct("OffsetFetchResponseGroup",
            F("group_id", STRING, "8+"),
            F("topics", Array(Struct("OffsetFetchResponseTopics",
                F("name", STRING, "8+"),
                F("partitions", Array(Struct("OffsetFetchResponsePartitions",
                    F("partition_index", INT32, "8+"),
                    F("committed_offset", INT64, "8+"),
                    F("committed_leader_epoch", INT32, "8+", default=-1, ignorable=True),
                    F("metadata", STRING, "8+", nullable="8+"),
                    F("error_code", INT16, "8+"),
                )), "8+"),
            )), "8+"),
            F("error_code", INT16, "8+"),
        )), "8+"),
    ),
)


# v1: same as v0 (throttling after the response); v2: flexible.
DELETE_GROUPS = Api(ApiKey.DELETE_GROUPS, "0-2", flexible="2+",
    request=(
        F("groups_names", Array(STRING)),
    ),
    response=(
        F("throttle_time_ms", INT32),
        F("results", Array(Struct("DeletableGroupResult",
            F("group_id", STRING),
            F("error_code", INT16),
        ))),
    ),
)

OFFSET_DELETE = Api(ApiKey.OFFSET_DELETE, "0", flexible="none",
    request=(
        F("group_id", STRING),
        F("topics", Array(Struct("OffsetDeleteRequestTopic",
            F("name", STRING),
            F("partitions", Array(Struct("OffsetDeleteRequestPartition",
                F("partition_index", INT32),
            ))),
        ))),
    ),
    response=(
        F("error_code", INT16),
        F("throttle_time_ms", INT32, ignorable=True),
        F("topics", Array(Struct("OffsetDeleteResponseTopic",
            F("name", STRING),
            F("partitions", Array(Struct("OffsetDeleteResponsePartition",
                F("partition_index", INT32),
                F("error_code", INT16),
            ))),
        ))),
    ),
)
