"""Idempotent and transactional producers.

Tables written from Kafka's message schemas; see proto/kafka/messages/__init__.py.
"""

from ..api_keys import ApiKey
from ..schema import BOOL, INT16, INT32, INT64, STRING, Api, Array, F, Struct

INIT_PRODUCER_ID = Api(ApiKey.INIT_PRODUCER_ID, "0-5", flexible="2+",
    request=(
        F("transactional_id", STRING, nullable="0+"),
        F("transaction_timeout_ms", INT32),
        F("producer_id", INT64, "3+", default=-1),
        F("producer_epoch", INT16, "3+", default=-1),
    ),
    response=(
        F("throttle_time_ms", INT32, ignorable=True),
        F("error_code", INT16),
        F("producer_id", INT64, default=-1),
        F("producer_epoch", INT16),
    ),
)


_ADD_PARTITIONS_TO_TXN_TOPIC = Struct("AddPartitionsToTxnTopic",
    F("name", STRING),
    F("partitions", Array(INT32)),
)

_ADD_PARTITIONS_TO_TXN_PARTITION_RESULT = Struct("AddPartitionsToTxnPartitionResult",
    F("partition_index", INT32),
    F("partition_error_code", INT16),
)

_ADD_PARTITIONS_TO_TXN_TOPIC_RESULT = Struct("AddPartitionsToTxnTopicResult",
    F("name", STRING),
    F("results_by_partition", Array(_ADD_PARTITIONS_TO_TXN_PARTITION_RESULT)),
)

ADD_PARTITIONS_TO_TXN = Api(ApiKey.ADD_PARTITIONS_TO_TXN, "0-5", flexible="3+",
    request=(
        F("transactions", Array(Struct("AddPartitionsToTxnTransaction",
            F("transactional_id", STRING, "4+"),
            F("producer_id", INT64, "4+"),
            F("producer_epoch", INT16, "4+"),
            F("verify_only", BOOL, "4+"),
            F("topics", Array(_ADD_PARTITIONS_TO_TXN_TOPIC), "4+"),
        )), "4+"),
        F("v3_and_below_transactional_id", STRING, "0-3"),
        F("v3_and_below_producer_id", INT64, "0-3"),
        F("v3_and_below_producer_epoch", INT16, "0-3"),
        F("v3_and_below_topics", Array(_ADD_PARTITIONS_TO_TXN_TOPIC), "0-3"),
    ),
    response=(
        F("throttle_time_ms", INT32),
        F("error_code", INT16, "4+", ignorable=True),
        F("results_by_transaction", Array(Struct("AddPartitionsToTxnResult",
            F("transactional_id", STRING, "4+"),
            F("topic_results", Array(_ADD_PARTITIONS_TO_TXN_TOPIC_RESULT), "4+"),
        )), "4+"),
        F("results_by_topic_v3_and_below", Array(_ADD_PARTITIONS_TO_TXN_TOPIC_RESULT), "0-3"),
    ),
)


ADD_OFFSETS_TO_TXN = Api(ApiKey.ADD_OFFSETS_TO_TXN, "0-4", flexible="3+",
    request=(
        F("transactional_id", STRING),
        F("producer_id", INT64),
        F("producer_epoch", INT16),
        F("group_id", STRING),
    ),
    response=(
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
    ),
)


END_TXN = Api(ApiKey.END_TXN, "0-4", flexible="3+",
    request=(
        F("transactional_id", STRING),
        F("producer_id", INT64),
        F("producer_epoch", INT16),
        F("committed", BOOL),
    ),
    response=(
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
    ),
)


TXN_OFFSET_COMMIT = Api(ApiKey.TXN_OFFSET_COMMIT, "0-4", flexible="3+",
    request=(
        F("transactional_id", STRING),
        F("group_id", STRING),
        F("producer_id", INT64),
        F("producer_epoch", INT16),
        F("generation_id", INT32, "3+", default=-1),
        F("member_id", STRING, "3+"),
        F("group_instance_id", STRING, "3+", nullable="3+", default=None),
        F("topics", Array(Struct("TxnOffsetCommitRequestTopic",
            F("name", STRING),
            F("partitions", Array(Struct("TxnOffsetCommitRequestPartition",
                F("partition_index", INT32),
                F("committed_offset", INT64),
                F("committed_leader_epoch", INT32, "2+", default=-1, ignorable=True),
                F("committed_metadata", STRING, nullable="0+"),
            ))),
        ))),
    ),
    response=(
        F("throttle_time_ms", INT32),
        F("topics", Array(Struct("TxnOffsetCommitResponseTopic",
            F("name", STRING),
            F("partitions", Array(Struct("TxnOffsetCommitResponsePartition",
                F("partition_index", INT32),
                F("error_code", INT16),
            ))),
        ))),
    ),
)
