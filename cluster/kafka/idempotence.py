"""Glue between the Kafka produce handler and `ProducerStateTable` until the Partition append path owns it.

One table per partition object, kept in step with the partition's log: before a producer batch is checked,
batches appended by anyone else since the table last looked (the gRPC front door, another listener, a
restart: the table starts empty at the log start) are scanned from the log, headers only. Our own appends are
recorded directly when they follow the table's end offset, so the steady state reads nothing back.
"""

from __future__ import annotations

import weakref

from cluster.broker.partition import Partition
from cluster.broker.producer_state import DEFAULT_MAX_PRODUCERS, ProducerStateTable

SCAN_CHUNK_BYTES = 4 * 1024 * 1024


class ProducerStates:
    def __init__(self, *, max_producers_per_partition: int = DEFAULT_MAX_PRODUCERS,
                 scan_chunk_bytes: int = SCAN_CHUNK_BYTES) -> None:
        # Keyed by the partition object: a deleted and recreated topic starts afresh.
        self._tables: weakref.WeakKeyDictionary[Partition, ProducerStateTable] = weakref.WeakKeyDictionary()
        self._max_producers = max_producers_per_partition
        self._chunk = scan_chunk_bytes

    def table_for(self, partition: Partition) -> ProducerStateTable:
        """The partition's table, caught up with its log end. Raises BrokerError if the log cannot be read."""
        table = self._tables.get(partition)
        end = partition.log_end_offset
        if table is None or end < table.end_offset:  # new, or the log was truncated under it
            table = ProducerStateTable(end_offset=partition.log_start_offset, max_producers=self._max_producers)
            self._tables[partition] = table
        if table.end_offset < end:
            self._catch_up(partition, table, end)
        return table

    def _catch_up(self, partition: Partition, table: ProducerStateTable, end: int) -> None:
        from cluster.broker.errors import translate

        log = getattr(partition, "log", None)
        offset = max(table.end_offset, partition.log_start_offset)
        if offset > table.end_offset:
            table.advance(offset)
        while offset < end:
            try:
                # The whole log up to its end (not just below the high watermark): an unacknowledged batch
                # is still a batch a retry must be matched against.
                data = log.read(offset, self._chunk) if log is not None else partition.read(offset, self._chunk)
            except Exception as exc:
                raise translate(exc) from exc
            if not data:
                break
            after = table.load(data)
            if after <= offset:
                break
            offset = after

    def after_append(self, table: ProducerStateTable, producer_id: int, producer_epoch: int, first_seq: int,
                     last_seq: int, base_offset: int, last_offset: int, max_timestamp: int) -> None:
        if table.end_offset == base_offset:
            table.record(producer_id, producer_epoch, first_seq, last_seq, base_offset, last_offset, max_timestamp)
        # Otherwise the table is behind the log and the next catch-up reads this batch from it.
