"""Version negotiation, SASL, topic admin, configs and cluster description.

Tables written from Kafka's message schemas; see proto/kafka/messages/__init__.py.
"""

from ..api_keys import ApiKey
from ..schema import BOOL, BYTES, INT8, INT16, INT32, INT64, STRING, UUID, Api, Array, F, Struct

API_VERSIONS = Api(ApiKey.API_VERSIONS, "0-4", flexible="3+",
    request=(
        F("client_software_name", STRING, "3+", ignorable=True),
        F("client_software_version", STRING, "3+", ignorable=True),
    ),
    response=(
        F("error_code", INT16),
        F("api_keys", Array(Struct("ApiVersion",
            F("api_key", INT16),
            F("min_version", INT16),
            F("max_version", INT16),
        ))),
        F("throttle_time_ms", INT32, "1+", ignorable=True),
        F("supported_features", Array(Struct("SupportedFeatureKey",
            F("name", STRING, "3+"),
            F("min_version", INT16, "3+"),
            F("max_version", INT16, "3+"),
        )), "3+", tag=0, ignorable=True),
        F("finalized_features_epoch", INT64, "3+", tag=1, default=-1, ignorable=True),
        F("finalized_features", Array(Struct("FinalizedFeatureKey",
            F("name", STRING, "3+"),
            F("max_version_level", INT16, "3+"),
            F("min_version_level", INT16, "3+"),
        )), "3+", tag=2, ignorable=True),
        F("zk_migration_ready", BOOL, "3+", tag=3, ignorable=True),
    ),
)


SASL_HANDSHAKE = Api(ApiKey.SASL_HANDSHAKE, "0-1", flexible="none",
    request=(
        F("mechanism", STRING),
    ),
    response=(
        F("error_code", INT16),
        F("mechanisms", Array(STRING)),
    ),
)


SASL_AUTHENTICATE = Api(ApiKey.SASL_AUTHENTICATE, "0-2", flexible="2+",
    request=(
        F("auth_bytes", BYTES),
    ),
    response=(
        F("error_code", INT16),
        F("error_message", STRING, nullable="0+"),
        F("auth_bytes", BYTES),
        F("session_lifetime_ms", INT64, "1+", ignorable=True),
    ),
)


CREATE_TOPICS = Api(ApiKey.CREATE_TOPICS, "0-7", flexible="5+",
    request=(
        F("topics", Array(Struct("CreatableTopic",
            F("name", STRING),
            F("num_partitions", INT32),
            F("replication_factor", INT16),
            F("assignments", Array(Struct("CreatableReplicaAssignment",
                F("partition_index", INT32),
                F("broker_ids", Array(INT32)),
            ))),
            F("configs", Array(Struct("CreatableTopicConfig",
                F("name", STRING),
                F("value", STRING, nullable="0+"),
            ))),
        ))),
        F("timeout_ms", INT32, default=60000),
        F("validate_only", BOOL, "1+"),
    ),
    response=(
        F("throttle_time_ms", INT32, "2+", ignorable=True),
        F("topics", Array(Struct("CreatableTopicResult",
            F("name", STRING),
            F("topic_id", UUID, "7+", ignorable=True),
            F("error_code", INT16),
            F("error_message", STRING, "1+", nullable="0+", ignorable=True),
            F("topic_config_error_code", INT16, "5+", tag=0, ignorable=True),
            F("num_partitions", INT32, "5+", default=-1, ignorable=True),
            F("replication_factor", INT16, "5+", default=-1, ignorable=True),
            F("configs", Array(Struct("CreatableTopicConfigs",
                F("name", STRING, "5+"),
                F("value", STRING, "5+", nullable="5+"),
                F("read_only", BOOL, "5+"),
                F("config_source", INT8, "5+", default=-1, ignorable=True),
                F("is_sensitive", BOOL, "5+"),
            )), "5+", nullable="5+", ignorable=True),
        ))),
    ),
)


DELETE_TOPICS = Api(ApiKey.DELETE_TOPICS, "0-6", flexible="4+",
    request=(
        F("topics", Array(Struct("DeleteTopicState",
            F("name", STRING, "6+", nullable="6+", default=None),
            F("topic_id", UUID, "6+"),
        )), "6+"),
        F("topic_names", Array(STRING), "0-5", ignorable=True),
        F("timeout_ms", INT32),
    ),
    response=(
        F("throttle_time_ms", INT32, "1+", ignorable=True),
        F("responses", Array(Struct("DeletableTopicResult",
            F("name", STRING, nullable="6+"),
            F("topic_id", UUID, "6+", ignorable=True),
            F("error_code", INT16),
            F("error_message", STRING, "5+", nullable="5+", default=None, ignorable=True),
        ))),
    ),
)


CREATE_PARTITIONS = Api(ApiKey.CREATE_PARTITIONS, "0-3", flexible="2+",
    request=(
        F("topics", Array(Struct("CreatePartitionsTopic",
            F("name", STRING),
            F("count", INT32),
            F("assignments", Array(Struct("CreatePartitionsAssignment",
                F("broker_ids", Array(INT32)),
            )), nullable="0+"),
        ))),
        F("timeout_ms", INT32),
        F("validate_only", BOOL),
    ),
    response=(
        F("throttle_time_ms", INT32),
        F("results", Array(Struct("CreatePartitionsTopicResult",
            F("name", STRING),
            F("error_code", INT16),
            F("error_message", STRING, nullable="0+", default=None),
        ))),
    ),
)


DESCRIBE_CONFIGS = Api(ApiKey.DESCRIBE_CONFIGS, "0-4", flexible="4+",
    request=(
        F("resources", Array(Struct("DescribeConfigsResource",
            F("resource_type", INT8),
            F("resource_name", STRING),
            F("configuration_keys", Array(STRING), nullable="0+"),
        ))),
        F("include_synonyms", BOOL, "1+"),
        F("include_documentation", BOOL, "3+"),
    ),
    response=(
        F("throttle_time_ms", INT32),
        F("results", Array(Struct("DescribeConfigsResult",
            F("error_code", INT16),
            F("error_message", STRING, nullable="0+"),
            F("resource_type", INT8),
            F("resource_name", STRING),
            F("configs", Array(Struct("DescribeConfigsResourceResult",
                F("name", STRING),
                F("value", STRING, nullable="0+"),
                F("read_only", BOOL),
                F("is_default", BOOL, "0"),
                F("config_source", INT8, "1+", default=-1, ignorable=True),
                F("is_sensitive", BOOL),
                F("synonyms", Array(Struct("DescribeConfigsSynonym",
                    F("name", STRING, "1+"),
                    F("value", STRING, "1+", nullable="0+"),
                    F("source", INT8, "1+"),
                )), "1+", ignorable=True),
                F("config_type", INT8, "3+", ignorable=True),
                F("documentation", STRING, "3+", nullable="0+", ignorable=True),
            ))),
        ))),
    ),
)


DESCRIBE_CLUSTER = Api(ApiKey.DESCRIBE_CLUSTER, "0-1", flexible="0+",
    request=(
        F("include_cluster_authorized_operations", BOOL),
        F("endpoint_type", INT8, "1+", default=1),
    ),
    response=(
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", STRING, nullable="0+", default=None),
        F("endpoint_type", INT8, "1+", default=1),
        F("cluster_id", STRING),
        F("controller_id", INT32, default=-1),
        F("brokers", Array(Struct("DescribeClusterBroker",
            F("broker_id", INT32),
            F("host", STRING),
            F("port", INT32),
            F("rack", STRING, nullable="0+", default=None),
        ))),
        F("cluster_authorized_operations", INT32, default=-2147483648),
    ),
)
