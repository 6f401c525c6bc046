"""Leader-epoch cache: epoch -> first offset written in that epoch (Raft's term(index), Kafka's
OffsetForLeaderEpoch). Persisted as Kafka's text checkpoint format: version, count, then "epoch offset" lines."""

from __future__ import annotations

import bisect
import logging

from storage.fileutil import atomic_write

log = logging.getLogger("tidelog.storage")

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
_VERSION = 0
MAX_ENTRIES = 1_000_000  # a checkpoint longer than this is corrupt, not a real history


class LeaderEpochCache:
    """Not thread-safe on its own: PartitionLog calls it under its lock; `snapshot()` copies for the flusher."""

    __slots__ = ("_epochs", "_starts", "dirty", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._epochs: list[int] = []  # strictly increasing
        self._starts: list[int] = []  # non-decreasing
        self.dirty = False

    # -- persistence ------------------------------------------------------------------------------------------
    def load(self) -> bool:
        """Read the checkpoint. False when it is missing or unreadable (the caller rebuilds from the log)."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(64 * MAX_ENTRIES).decode("ascii")
        except FileNotFoundError:
            return False
        except (OSError, UnicodeDecodeError):
            return False
        try:
            lines = text.split("\n")
            if int(lines[0]) != _VERSION:
                return False
            count = int(lines[1])
            if not 0 <= count <= MAX_ENTRIES or len(lines) < 2 + count:
                return False
            epochs: list[int] = []
            starts: list[int] = []
            for line in lines[2 : 2 + count]:
                e, s = line.split()
                epoch, start = int(e), int(s)
                if epochs and (epoch <= epochs[-1] or start < starts[-1]) or epoch < 0 or start < 0:
                    return False
                epochs.append(epoch)
                starts.append(start)
        except (ValueError, IndexError):
            return False
        self._epochs, self._starts = epochs, starts
        self.dirty = False
        return True

    def snapshot(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._starts))

    def write(self, entries: list[tuple[int, int]] | None = None) -> None:
        """Write the checkpoint durably (temp file, fsync, rename, fsync dir)."""
        if entries is None:
            entries = self.snapshot()
            self.dirty = False
        body = f"{_VERSION}\n{len(entries)}\n" + "".join(f"{e} {s}\n" for e, s in entries)
        atomic_write(self.path, body.encode("ascii"), durable=True)

    # -- queries ----------------------------------------------------------------------------------------------
    @property
    def latest_epoch(self) -> int:
        return self._epochs[-1] if self._epochs else UNDEFINED_EPOCH

    @property
    def entries(self) -> list[tuple[int, int]]:
        return self.snapshot()

    def epoch_for_offset(self, offset: int) -> int:
        """Epoch of the entry whose start is the largest <= offset; UNDEFINED_EPOCH when none."""
        i = bisect.bisect_right(self._starts, offset) - 1
        # Several epochs may share a start offset (an epoch that wrote nothing is never assigned, but a
        # truncate_from_start can pin two entries to the same start): the latest one wins.
        return self._epochs[i] if i >= 0 else UNDEFINED_EPOCH

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka OffsetForLeaderEpoch: (largest known epoch <= `epoch`, first offset of the next higher epoch or
        the log end offset). (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET) when `epoch` is above every known epoch
        or undefined."""
        if epoch == UNDEFINED_EPOCH or not self._epochs:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if epoch == self._epochs[-1]:
            return epoch, log_end_offset
        hi = bisect.bisect_right(self._epochs, epoch)  # first entry with a higher epoch
        if hi == len(self._epochs):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET  # newer than anything we know
        if hi == 0:
            return epoch, self._starts[0]  # older than every known epoch: it ended where the first one starts
        return self._epochs[hi - 1], self._starts[hi]

    # -- updates ----------------------------------------------------------------------------------------------
    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` starts at `start_offset`. True when the cache changed."""
        if epoch < 0:
            return False  # unstamped batch (partitionLeaderEpoch -1): nothing to learn
        if self._epochs:
            latest = self._epochs[-1]
            if epoch == latest:
                return False
            # Epochs never go back and start offsets never decrease: the log truncates the cache first.
            assert epoch > latest, f"leader epoch {epoch} is older than the latest {latest}"
            assert start_offset >= self._starts[-1], f"epoch {epoch} start {start_offset} < {self._starts[-1]}"
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        self.dirty = True
        return True

    def truncate_from_end(self, end_offset: int) -> bool:
        """Forget every epoch that starts at or after `end_offset` (the log was truncated there)."""
        i = bisect.bisect_left(self._starts, end_offset)
        if i == len(self._starts):
            return False
        del self._epochs[i:], self._starts[i:]
        self.dirty = True
        return True

    def truncate_from_start(self, start_offset: int) -> bool:
        """The log start moved to `start_offset`: drop epochs wholly before it, pin the one holding it there."""
        i = bisect.bisect_right(self._starts, start_offset) - 1
        if i < 0 or (i == 0 and self._starts[0] == start_offset):
            return False
        del self._epochs[:i], self._starts[:i]
        self._starts[0] = start_offset
        self.dirty = True
        return True

    def clear(self) -> None:
        if self._epochs:
            self._epochs.clear()
            self._starts.clear()
            self.dirty = True
