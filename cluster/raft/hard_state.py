"""HardStateStore: term, vote and commit of every Raft group of a node in one file (``raft_state``).

Each Ready cycle appends one small checksummed record per group whose hard state changed, in ONE write,
and the host fsyncs the file once per cycle (in a worker thread, in parallel with the logs' fsyncs) when a
term or vote changed; records that only move commit indexes are written but not fsynced (etcd's rule:
commit knowledge may be lost, the core re-learns it). When
the file grows past ``compact_bytes`` (and past 4x its live size) the cycle rewrites it instead: temp file,
fsync, rename, directory fsync.

File: 8-byte magic ``TLHS0001``, then records ``length u32 | crc32c(payload) u32 | payload`` with payload
``op u8 (1 set, 2 remove) | id kind u8 (0 int, 1 str) | id length u16 | id | term i64 | vote i64 (0 = none)
| commit i64``. Recovery reads records in order; a torn or unchecksummed LAST record (a crash mid-write) is
cut off; a bad record followed by good ones is corruption and refuses to start (a lost vote is unsafe).

Ordering note for the host: the logs and this file are fsynced in parallel, so after a crash the commit
here may exceed the durable log; the host clamps it to the log's last index on start (commit is a cache
of knowledge, losing it is safe; nothing was acknowledged before both fsyncs completed).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass

import crc32c

from storage.errors import StorageError
from storage.fileutil import fsync_dir, write_all

from .types import GroupId, HardState

log = logging.getLogger("tidelog.raft")

STATE_FILE = "raft_state"
MAGIC = b"TLHS0001"
_REC_HEAD = struct.Struct(">II")  # payload length, crc32c(payload)
_REC_FIXED = struct.Struct(">BBH")  # op, id kind, id length
_REC_STATE = struct.Struct(">qqq")  # term, vote, commit
_OP_SET = 1
_OP_REMOVE = 2
MAX_GROUP_ID_BYTES = 4096
DEFAULT_COMPACT_BYTES = 4 << 20


class HardStateCorrupt(StorageError):
    pass


def _encode_id(group_id: GroupId) -> tuple[int, bytes]:
    if isinstance(group_id, int):
        return 0, str(group_id).encode()
    raw = group_id.encode()
    if len(raw) > MAX_GROUP_ID_BYTES:
        raise ValueError(f"group id of {len(raw)} bytes is too long")
    return 1, raw


def _record(op: int, group_id: GroupId, hs: HardState | None) -> bytes:
    kind, raw = _encode_id(group_id)
    hs = hs or HardState()
    payload = _REC_FIXED.pack(op, kind, len(raw)) + raw + _REC_STATE.pack(hs.term, hs.vote or 0, hs.commit)
    return _REC_HEAD.pack(len(payload), crc32c.crc32c(payload)) + payload


@dataclass(slots=True)
class StateWrite:
    """One cycle's work: bytes to append, or (rewrite=True) the whole new file; ``sync``: fsync it (a term
    or vote changed; a record that only moves a commit index need not be durable, as in etcd)."""

    data: bytes
    rewrite: bool
    sync: bool = True


class HardStateStore:
    """Loop side: ``get``/``stage``/``remove``/``prepare``; worker thread: ``execute``. One execute at a time."""

    def __init__(self, directory: str, *, compact_bytes: int = DEFAULT_COMPACT_BYTES) -> None:
        self.directory = directory
        self.path = os.path.join(directory, STATE_FILE)
        self.compact_bytes = compact_bytes
        self._states: dict[GroupId, HardState] = {}
        self._staged: dict[GroupId, HardState | None] = {}  # None: removal
        self._staged_sync = False  # a staged change must be fsynced (term, vote, removal)
        self._size = 0  # bytes in the file
        self._fd = -1
        self._lock = threading.Lock()
        self.failed: str | None = None
        self.writes = 0  # cycles written (observability, tests)
        os.makedirs(directory, exist_ok=True)
        self._load()

    # -- loop side --------------------------------------------------------------------------------

    def get(self, group_id: GroupId) -> HardState | None:
        return self._states.get(group_id)

    def groups(self) -> list[GroupId]:
        return list(self._states)

    def stage(self, group_id: GroupId, hs: HardState) -> None:
        old = self._states.get(group_id)
        if old is None or old.term != hs.term or old.vote != hs.vote:
            self._staged_sync = True
        self._states[group_id] = hs
        self._staged[group_id] = hs

    def remove(self, group_id: GroupId) -> None:
        if self._states.pop(group_id, None) is not None or group_id in self._staged:
            self._staged[group_id] = None
            self._staged_sync = True

    @property
    def has_staged(self) -> bool:
        return bool(self._staged)

    def prepare(self) -> StateWrite | None:
        """Take what was staged since the last prepare. None when nothing changed."""
        if not self._staged:
            return None
        staged, self._staged = self._staged, {}
        sync, self._staged_sync = self._staged_sync, False
        records = [_record(_OP_SET if hs is not None else _OP_REMOVE, gid, hs) for gid, hs in staged.items()]
        data = b"".join(records)
        live = 64 * max(1, len(self._states))
        if self._size + len(data) > max(self.compact_bytes, 4 * live):
            body = MAGIC + b"".join(_record(_OP_SET, gid, hs) for gid, hs in self._states.items())
            return StateWrite(body, True, True)
        return StateWrite(data, False, sync)

    # -- worker thread ------------------------------------------------------------------------------

    def execute(self, write: StateWrite) -> None:
        """Write (and fsync if ``write.sync``). Any failure takes the store offline (StorageError now and
        on every later call). Unsynced records become durable with the next synced write. The lock covers
        the write only: an fsync in a worker never holds up the loop's next (unsynced) write."""
        fd = -1
        try:
            with self._lock:
                if self.failed is not None:
                    raise StorageError(f"hard state store {self.path} is offline: {self.failed}")
                if write.rewrite:
                    self._rewrite(write.data)
                else:
                    write_all(self._fd, write.data)
                    self._size += len(write.data)
                    if write.sync:
                        fd = os.dup(self._fd)  # a concurrent rewrite may close self._fd
                self.writes += 1
            if fd >= 0:
                os.fdatasync(fd)
        except OSError as exc:
            with self._lock:
                self.failed = str(exc)
            log.critical("hard state store %s failed: %s; every Raft group of this node stops", self.path, exc)
            raise StorageError(f"hard state store {self.path} failed: {exc}") from exc
        finally:
            if fd >= 0:
                os.close(fd)

    def _rewrite(self, body: bytes) -> None:
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            write_all(fd, body)
            os.fdatasync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.replace(tmp, self.path)
        fsync_dir(self.directory)
        os.close(self._fd)
        self._fd = fd
        self._size = len(body)

    def write_now(self, *, sync: bool = True) -> None:
        """prepare + execute in the calling thread (tests, shutdown); fsynced unless sync=False and only
        commit indexes moved."""
        w = self.prepare()
        if w is not None:
            w.sync = w.sync or sync
            self.execute(w)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- recovery -------------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = b""
        if not raw:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            write_all(fd, MAGIC)
            os.fdatasync(fd)
            fsync_dir(self.directory)
            self._fd, self._size = fd, len(MAGIC)
            return
        if raw[: len(MAGIC)] != MAGIC:
            if len(raw) < len(MAGIC) and MAGIC.startswith(raw):
                raw = b""  # torn while being created: nothing was ever stored
            else:
                raise HardStateCorrupt(f"{self.path}: not a hard state file")
        pos = len(MAGIC) if raw else 0
        end = len(raw)
        states: dict[GroupId, HardState] = {}
        while pos < end:
            rec = self._parse(raw, pos)
            if rec is None:
                # Bad record: a torn tail is fine, anything followed by more data is not.
                claimed = _REC_HEAD.unpack_from(raw, pos)[0] if end - pos >= _REC_HEAD.size else 0
                zeros = raw.count(0, pos) == end - pos  # a crash can leave a zero-filled tail
                if end - pos < _REC_HEAD.size or pos + _REC_HEAD.size + claimed >= end or zeros:
                    log.warning("hard state store %s: ignoring a torn last record (%d bytes at %d)",
                                self.path, end - pos, pos)
                    break
                raise HardStateCorrupt(f"{self.path}: corrupt record at byte {pos} followed by more data")
            op, gid, hs, pos = rec
            if op == _OP_SET:
                states[gid] = hs
            else:
                states.pop(gid, None)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if pos < end or not raw:
            os.ftruncate(fd, pos)
            if not raw:
                write_all(fd, MAGIC)
                pos = len(MAGIC)
            os.fdatasync(fd)
        self._fd, self._size, self._states = fd, pos, states

    @staticmethod
    def _parse(raw: bytes, pos: int) -> tuple[int, GroupId, HardState, int] | None:
        end = len(raw)
        if end - pos < _REC_HEAD.size:
            return None
        length, crc = _REC_HEAD.unpack_from(raw, pos)
        start = pos + _REC_HEAD.size
        if length < _REC_FIXED.size + _REC_STATE.size or start + length > end:
            return None
        payload = raw[start : start + length]
        if crc32c.crc32c(payload) != crc:
            return None
        op, kind, id_len = _REC_FIXED.unpack_from(payload, 0)
        if op not in (_OP_SET, _OP_REMOVE) or _REC_FIXED.size + id_len + _REC_STATE.size != length:
            return None
        raw_id = payload[_REC_FIXED.size : _REC_FIXED.size + id_len].decode()
        gid: GroupId = int(raw_id) if kind == 0 else raw_id
        term, vote, commit = _REC_STATE.unpack_from(payload, _REC_FIXED.size + id_len)
        return op, gid, HardState(term, vote or None, commit), start + length
