"""The gRPC front door (grpc.aio): thin handlers mapping tidelog.v1 messages to the broker core and back.

Errors: a BrokerError of a single-target call becomes a gRPC status plus the trailing metadata
`tidelog-error: <KAFKA_ERROR_NAME>`; multi-partition calls carry an ErrorCode per partition. Anything else a
handler raises is logged and answered UNKNOWN_SERVER_ERROR: a request can never take the server down.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket

import grpc

from cluster.broker.broker import Broker
from cluster.broker.errors import BrokerError, InvalidRequestError, leader_hint
from cluster.broker.types import (
    ACKS_ALL,
    ACKS_NONE,
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    ConfigSource,
    ConfigValue,
    FetchPartition,
    ListOffsetsPartition,
    ProducePartition,
    TopicInfo,
)
from proto.rpc import tidelog_v1_pb2 as pb
from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

ERROR_METADATA_KEY = "tidelog-error"
LEADER_METADATA_KEY = "tidelog-leader"  # with NOT_LEADER_OR_FOLLOWER: the broker id that leads, -1 if unknown
MiB = 1024 * 1024
# Requests a ProduceStream may have appended but not yet answered.
MAX_PRODUCE_STREAM_IN_FLIGHT = 64

_ERROR_CODES: dict[str, int] = {v.name: v.number for v in pb.ErrorCode.DESCRIPTOR.values}
_UNKNOWN = _ERROR_CODES["UNKNOWN_SERVER_ERROR"]

_STATUS_BY_ERROR: dict[str, grpc.StatusCode] = {
    "UNKNOWN_TOPIC_OR_PARTITION": grpc.StatusCode.NOT_FOUND,
    "TOPIC_ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "OFFSET_OUT_OF_RANGE": grpc.StatusCode.OUT_OF_RANGE,
    "RECORD_LIST_TOO_LARGE": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "THROTTLING_QUOTA_EXCEEDED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "REQUEST_TIMED_OUT": grpc.StatusCode.DEADLINE_EXCEEDED,
    "NOT_LEADER_OR_FOLLOWER": grpc.StatusCode.UNAVAILABLE,
    "LEADER_NOT_AVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "NOT_ENOUGH_REPLICAS": grpc.StatusCode.UNAVAILABLE,
    "NOT_CONTROLLER": grpc.StatusCode.UNAVAILABLE,
    "KAFKA_STORAGE_ERROR": grpc.StatusCode.UNAVAILABLE,
    "BROKER_NOT_AVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "UNKNOWN_SERVER_ERROR": grpc.StatusCode.INTERNAL,
    "UNSUPPORTED_VERSION": grpc.StatusCode.UNIMPLEMENTED,
}

_SOURCE = {
    ConfigSource.DEFAULT: pb.CONFIG_SOURCE_DEFAULT,
    ConfigSource.BROKER: pb.CONFIG_SOURCE_BROKER,
    ConfigSource.TOPIC: pb.CONFIG_SOURCE_TOPIC,
}


def error_code(name: str) -> int:
    return _ERROR_CODES.get(name, _UNKNOWN)


def status_for(name: str) -> grpc.StatusCode:
    return _STATUS_BY_ERROR.get(name, grpc.StatusCode.INVALID_ARGUMENT)


async def _abort(context: grpc.aio.ServicerContext, error: BrokerError) -> None:
    metadata: tuple[tuple[str, str], ...] = ((ERROR_METADATA_KEY, error.error_name),)
    if error.error_name == "NOT_LEADER_OR_FOLLOWER":
        metadata += ((LEADER_METADATA_KEY, str(leader_hint(error))),)
    await context.abort(status_for(error.error_name), f"{error.error_name}: {error}", trailing_metadata=metadata)


def _handler(method):
    """Turn BrokerErrors into statuses and anything unexpected into UNKNOWN_SERVER_ERROR (logged)."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except BrokerError as exc:
            await _abort(context, exc)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("%s failed", method.__name__)
            await _abort(context, BrokerError(f"internal error: {type(exc).__name__}: {exc}"))

    return wrapper


def _config_entries(values: list[ConfigValue]) -> list[pb.ConfigEntry]:
    return [pb.ConfigEntry(name=v.name, value=v.value, source=_SOURCE[v.source]) for v in values]


def _topic_description(info: TopicInfo) -> pb.TopicDescription:
    return pb.TopicDescription(
        name=info.name,
        topic_id=info.topic_id,
        partitions=[
            pb.PartitionDescription(
                partition=s.partition,
                log_start_offset=s.log_start_offset,
                log_end_offset=s.log_end_offset,
                high_watermark=s.high_watermark,
                size_bytes=s.size_bytes,
                leader_id=s.leader_id,
                leader_epoch=s.leader_epoch,
                replicas=list(s.replicas),
                isr=list(s.isr),
            )
            for s in info.partitions
        ],
        configs=_config_entries(info.configs),
    )


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    @_handler
    async def CreateTopic(self, request, context):
        if request.replication_factor < 0:
            raise BrokerError(f"replication factor must be at least 1, got {request.replication_factor}",
                              error_name="INVALID_REPLICATION_FACTOR")
        info = await self._broker.create_topic(request.name, request.partitions, dict(request.configs),
                                               validate_only=request.validate_only,
                                               replication_factor=request.replication_factor or None)
        return pb.CreateTopicResponse(topic=_topic_description(info))

    @_handler
    async def CreatePartitions(self, request, context):
        await self._broker.create_partitions(request.topic, request.count, validate_only=request.validate_only)
        return pb.CreatePartitionsResponse(topic=_topic_description(self._broker.describe_topic(request.topic)))

    @_handler
    async def DeleteTopic(self, request, context):
        await self._broker.delete_topic(request.name)
        return pb.DeleteTopicResponse()

    @_handler
    async def ListTopics(self, request, context):
        return pb.ListTopicsResponse(topics=[
            pb.TopicSummary(name=t.name, topic_id=t.topic_id, partitions=t.partition_count)
            for t in self._broker.list_topics()
        ])

    @_handler
    async def DescribeTopic(self, request, context):
        return pb.DescribeTopicResponse(topic=_topic_description(self._broker.describe_topic(request.name)))

    @_handler
    async def AlterConfigs(self, request, context):
        values = await self._broker.alter_configs(request.topic, dict(request.set), list(request.delete),
                                                  validate_only=request.validate_only)
        return pb.AlterConfigsResponse(configs=_config_entries(values))

    @_handler
    async def DescribeConfigs(self, request, context):
        return pb.DescribeConfigsResponse(configs=_config_entries(self._broker.describe_configs(request.topic)))


def _produce_response(correlation_id: int, results) -> pb.ProduceResponse:
    return pb.ProduceResponse(correlation_id=correlation_id, partitions=[
        pb.PartitionProduceResult(
            topic=r.topic,
            partition=r.partition,
            error_code=error_code(r.error_name),
            error_message=r.error_message,
            base_offset=r.base_offset,
            log_append_time_ms=r.log_append_time_ms,
            log_start_offset=r.log_start_offset,
            leader_id=r.leader_id,
        )
        for r in results
    ])


def _produce_error_response(request: pb.ProduceRequest, error: BrokerError) -> pb.ProduceResponse:
    code = error_code(error.error_name)
    return pb.ProduceResponse(correlation_id=request.correlation_id, partitions=[
        pb.PartitionProduceResult(topic=p.topic, partition=p.partition, error_code=code, error_message=str(error),
                                  base_offset=-1, log_append_time_ms=-1, log_start_offset=-1)
        for p in request.partitions
    ])


def _acks(request: pb.ProduceRequest) -> int:
    return request.acks if request.HasField("acks") else ACKS_ALL


def _produce_specs(request: pb.ProduceRequest) -> list[ProducePartition]:
    return [ProducePartition(p.topic, p.partition, p.records) for p in request.partitions]


class LogServicer(pb_grpc.LogServiceServicer):
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    @_handler
    async def Produce(self, request, context):
        results = await self._broker.produce(_produce_specs(request), acks=_acks(request),
                                             timeout_ms=request.timeout_ms)
        return _produce_response(request.correlation_id, results)

    async def ProduceStream(self, request_iterator, context):
        """Append each request as it arrives (in order), answer each once acknowledged."""
        broker = self._broker
        in_flight = asyncio.Semaphore(MAX_PRODUCE_STREAM_IN_FLIGHT)
        responses: asyncio.Queue[pb.ProduceResponse | None] = asyncio.Queue(MAX_PRODUCE_STREAM_IN_FLIGHT + 1)
        waiters: set[asyncio.Task] = set()

        async def writer() -> None:
            while (response := await responses.get()) is not None:
                await context.write(response)

        async def answer(request: pb.ProduceRequest, pending) -> None:
            try:
                results = await pending.wait()
                await responses.put(_produce_response(request.correlation_id, results))
            finally:
                in_flight.release()

        write_task = asyncio.create_task(writer())
        try:
            async for request in request_iterator:
                await in_flight.acquire()
                if write_task.done():
                    break
                acks = _acks(request)
                try:
                    pending = broker.begin_produce(_produce_specs(request), acks=acks, timeout_ms=request.timeout_ms)
                except BrokerError as exc:
                    in_flight.release()
                    await responses.put(_produce_error_response(request, exc))
                    continue
                except Exception as exc:
                    log.exception("ProduceStream request failed")
                    in_flight.release()
                    await responses.put(_produce_error_response(request, BrokerError(f"internal error: {exc}")))
                    continue
                if acks == ACKS_NONE:
                    in_flight.release()  # Kafka: no response to acks=0
                elif not pending.needs_wait:
                    in_flight.release()
                    await responses.put(_produce_response(request.correlation_id, await pending.wait()))
                else:
                    task = asyncio.create_task(answer(request, pending))
                    waiters.add(task)
                    task.add_done_callback(waiters.discard)
            if waiters:
                await asyncio.gather(*waiters, return_exceptions=True)
            await responses.put(None)
            await write_task
        finally:
            for task in waiters:
                task.cancel()
            write_task.cancel()

    @_handler
    async def Fetch(self, request, context):
        specs = [FetchPartition(p.topic, p.partition, p.fetch_offset, p.max_bytes) for p in request.partitions]
        results = await self._broker.fetch(specs, max_wait_ms=request.max_wait_ms, min_bytes=request.min_bytes,
                                           max_bytes=request.max_bytes)
        return pb.FetchResponse(partitions=[
            pb.FetchPartitionResult(
                topic=r.topic,
                partition=r.partition,
                error_code=error_code(r.error_name),
                error_message=r.error_message,
                high_watermark=r.high_watermark,
                log_start_offset=r.log_start_offset,
                last_stable_offset=r.last_stable_offset,
                records=bytes(r.records),
                leader_id=r.leader_id,
            )
            for r in results
        ])

    async def Subscribe(self, request, context):
        try:
            which = request.WhichOneof("start")
            offset = timestamp = None
            if which == "offset":
                offset = request.offset
                if offset < 0:
                    raise BrokerError(f"offset {offset} is negative", error_name="OFFSET_OUT_OF_RANGE")
            elif which == "timestamp_ms":
                timestamp = request.timestamp_ms
            elif which == "position" and request.position == pb.OFFSET_SPEC_EARLIEST:
                offset = EARLIEST_TIMESTAMP
            else:
                offset = LATEST_TIMESTAMP
            if request.max_bytes < 0:
                raise InvalidRequestError(f"max_bytes {request.max_bytes} is negative")
            chunks = self._broker.subscribe(request.topic, request.partition, offset=offset, timestamp_ms=timestamp,
                                            max_bytes=request.max_bytes)
            async for chunk in chunks:
                # write() completes only once the transport took the message: HTTP/2 flow control paces us.
                await context.write(pb.SubscribeResponse(
                    records=bytes(chunk.records),
                    next_offset=chunk.next_offset,
                    high_watermark=chunk.high_watermark,
                    log_start_offset=chunk.log_start_offset,
                    start_offset=chunk.start_offset,
                ))
        except BrokerError as exc:
            await _abort(context, exc)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("Subscribe failed")
            await _abort(context, BrokerError(f"internal error: {type(exc).__name__}: {exc}"))

    @_handler
    async def ListOffsets(self, request, context):
        specs = []
        bad: dict[int, str] = {}
        for i, p in enumerate(request.partitions):
            which = p.WhichOneof("spec")
            if which == "timestamp_ms":
                ts = p.timestamp_ms
                if ts < 0:
                    bad[i] = f"timestamp {ts} is negative"
            elif which == "position" and p.position == pb.OFFSET_SPEC_EARLIEST:
                ts = EARLIEST_TIMESTAMP
            elif which == "position" and p.position == pb.OFFSET_SPEC_LATEST:
                ts = LATEST_TIMESTAMP
            else:
                ts = LATEST_TIMESTAMP
                bad[i] = "set either position (EARLIEST or LATEST) or timestamp_ms"
            specs.append(ListOffsetsPartition(p.topic, p.partition, ts))
        results = self._broker.list_offsets(specs)
        out = []
        for i, r in enumerate(results):
            if i in bad:
                out.append(pb.ListOffsetsResult(topic=r.topic, partition=r.partition,
                                                error_code=error_code("INVALID_REQUEST"), error_message=bad[i],
                                                offset=-1, timestamp_ms=-1))
            else:
                out.append(pb.ListOffsetsResult(topic=r.topic, partition=r.partition,
                                                error_code=error_code(r.error_name), error_message=r.error_message,
                                                offset=r.offset, timestamp_ms=r.timestamp, leader_id=r.leader_id))
        return pb.ListOffsetsResponse(partitions=out)


class ClusterServicer(pb_grpc.ClusterServiceServicer):
    """Cluster status (DescribeCluster) and replica moves (ReassignPartition), from the cluster runtime
    (cluster.replication.runtime.ClusterRuntime); a standalone broker describes itself as a one-node cluster."""

    def __init__(self, broker: Broker, runtime=None) -> None:
        self._broker = broker
        self._runtime = runtime

    @_handler
    async def DescribeCluster(self, request, context):
        runtime = self._runtime
        if runtime is not None:
            return runtime.describe_cluster()
        broker = self._broker
        node = broker.node_id
        partitions = []
        for t in broker.list_topics():
            for p in range(t.partition_count):
                part = broker.partition(t.name, p)
                partitions.append(pb.PartitionStatus(
                    topic=t.name, partition=p, leader_id=node, leader_epoch=part.leader_epoch, replicas=[node],
                    isr=[node], high_watermark=part.high_watermark, log_end_offset=part.log_end_offset))
        return pb.DescribeClusterResponse(cluster_id=broker.cluster_id, node_id=node, controller_id=node,
                                          brokers=[pb.BrokerStatus(broker_id=node, alive=True)],
                                          partitions=partitions)

    @_handler
    async def ReassignPartition(self, request, context):
        if self._runtime is None:
            raise InvalidRequestError("a standalone broker has no replicas to move")
        if not request.replicas:
            raise BrokerError("give the new replica list", error_name="INVALID_REPLICA_ASSIGNMENT")
        timeout = (request.timeout_ms or 60_000) / 1000
        replicas, target = await self._runtime.reassign_partition(
            request.topic, request.partition, list(request.replicas), wait=request.wait, timeout=timeout)
        return pb.ReassignPartitionResponse(replicas=replicas, target_replicas=target or [])


def _check_port_free(host: str, port: int) -> None:
    """Fail with a clear OSError before gRPC tries (and logs its own multi-line complaint)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class GrpcServer:
    """The gRPC listener of one broker."""

    def __init__(self, broker: Broker, *, host: str = "127.0.0.1", port: int = 0,
                 max_concurrent_rpcs: int = 1024, runtime=None, extra_servicers=()) -> None:
        self._broker = broker
        self._host = host
        self._requested_port = port
        self.port: int | None = None
        limit = broker.config.max_request_bytes + MiB  # over it, grpc refuses before reading the body
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", broker.config.max_fetch_bytes + MiB),
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", 256),
            ],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(broker), self._server)
        pb_grpc.add_LogServiceServicer_to_server(LogServicer(broker), self._server)
        pb_grpc.add_ClusterServiceServicer_to_server(ClusterServicer(broker, runtime), self._server)
        for add in extra_servicers:  # (e.g. the consumer-group service) add(server)
            add(self._server)

    async def start(self) -> int:
        host = f"[{self._host}]" if ":" in self._host else self._host
        address = f"{host}:{self._requested_port}"
        if self._requested_port:
            _check_port_free(self._host, self._requested_port)
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if not self.port:
            raise OSError(f"cannot listen on {address}")
        await self._server.start()
        return self.port

    async def stop(self, grace: float | None = 1.0) -> None:
        await self._server.stop(grace)
