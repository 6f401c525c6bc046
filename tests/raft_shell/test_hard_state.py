"""HardStateStore: every group's term/vote/commit in one checksummed append-only file."""

from __future__ import annotations

import os

import pytest

from cluster.raft import HardState
from cluster.raft.hard_state import STATE_FILE, HardStateCorrupt, HardStateStore
from storage.errors import StorageError


def test_states_of_many_groups_survive_a_restart(tmp_path) -> None:
    st = HardStateStore(str(tmp_path))
    st.stage("orders/0", HardState(3, 2, 17))
    st.stage(7, HardState(1, None, -1))
    st.stage("orders/0", HardState(4, None, 20))  # the later one wins within a cycle
    st.write_now()
    assert st.writes == 1
    st.stage("__controller", HardState(9, 1, 100))
    st.remove(7)
    st.write_now()
    st.close()
    st = HardStateStore(str(tmp_path))
    assert st.get("orders/0") == HardState(4, None, 20)
    assert st.get("__controller") == HardState(9, 1, 100)
    assert st.get(7) is None and sorted(map(str, st.groups())) == ["__controller", "orders/0"]
    st.close()


def test_one_write_per_cycle_whatever_the_number_of_groups(tmp_path) -> None:
    st = HardStateStore(str(tmp_path))
    for i in range(500):
        st.stage(f"t/{i}", HardState(1, 1, i))
    w = st.prepare()
    assert w is not None and not w.rewrite
    st.execute(w)
    assert st.prepare() is None  # nothing new
    st.close()


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_a_torn_last_record_is_ignored(tmp_path, cut: int) -> None:
    st = HardStateStore(str(tmp_path))
    st.stage("a", HardState(1, 1, 1))
    st.write_now()
    st.stage("a", HardState(2, 2, 2))
    st.write_now()
    st.close()
    path = tmp_path / STATE_FILE
    raw = path.read_bytes()
    path.write_bytes(raw[:-cut])
    st = HardStateStore(str(tmp_path))
    assert st.get("a") == HardState(1, 1, 1)
    st.stage("b", HardState(5, None, 0))  # appends go after the last good record
    st.write_now()
    st.close()
    st = HardStateStore(str(tmp_path))
    assert st.get("a") == HardState(1, 1, 1) and st.get("b") == HardState(5, None, 0)
    st.close()


def test_a_zero_filled_tail_is_ignored(tmp_path) -> None:
    st = HardStateStore(str(tmp_path))
    st.stage("a", HardState(1, 1, 1))
    st.write_now()
    st.close()
    with open(tmp_path / STATE_FILE, "ab") as f:
        f.write(b"\0" * 100)
    st = HardStateStore(str(tmp_path))
    assert st.get("a") == HardState(1, 1, 1)
    st.close()


def test_corruption_before_good_records_refuses_to_start(tmp_path) -> None:
    st = HardStateStore(str(tmp_path))
    for t in range(3):
        st.stage("a", HardState(t + 1, 1, t))
        st.write_now()
    st.close()
    path = tmp_path / STATE_FILE
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0x55  # inside the first record
    path.write_bytes(bytes(raw))
    with pytest.raises(HardStateCorrupt):
        HardStateStore(str(tmp_path))


def test_the_file_is_rewritten_when_it_grows(tmp_path) -> None:
    st = HardStateStore(str(tmp_path), compact_bytes=4096)
    for i in range(400):
        st.stage("g1", HardState(i + 1, None, i))
        st.stage("g2", HardState(1, 2, i))
        st.write_now()
    assert os.path.getsize(tmp_path / STATE_FILE) < 4096 + 200
    st.close()
    st = HardStateStore(str(tmp_path))
    assert st.get("g1") == HardState(400, None, 399) and st.get("g2") == HardState(1, 2, 399)
    st.close()


def test_a_failed_fsync_takes_the_store_offline(tmp_path, monkeypatch) -> None:
    st = HardStateStore(str(tmp_path))

    def boom(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", boom)
    st.stage("a", HardState(1, 1, 1))
    with pytest.raises(StorageError):
        st.write_now()
    monkeypatch.undo()
    st.stage("a", HardState(2, 1, 1))
    with pytest.raises(StorageError, match="offline"):
        st.write_now()
    st.close()


def test_commit_only_changes_are_written_without_fsync(tmp_path, monkeypatch) -> None:
    st = HardStateStore(str(tmp_path))
    st.stage("a", HardState(1, 1, 0))
    w = st.prepare()
    assert w is not None and w.sync  # a new term/vote: durable
    st.execute(w)
    st.stage("a", HardState(1, 1, 5))
    w = st.prepare()
    assert w is not None and not w.sync  # only the commit moved
    calls = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: calls.append(fd))
    st.execute(w)
    assert calls == []
    st.stage("a", HardState(2, None, 5))
    st.write_now(sync=False)
    assert len(calls) == 1  # the term changed: synced anyway
    monkeypatch.undo()
    st.close()
    assert HardStateStore(str(tmp_path)).get("a") == HardState(2, None, 5)
