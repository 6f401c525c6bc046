"""The broker core: topics, produce/fetch/list-offsets over the `Partition` seam, long-poll, metrics.

Free of front-door types: the gRPC server (cluster/grpc_server.py) and the Kafka listener call
`cluster.broker.broker.Broker` with the plain data of `cluster.broker.types`.
"""
