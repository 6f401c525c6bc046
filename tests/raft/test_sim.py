"""The deterministic simulator in CI: thousands of seeds, determinism, and proof it has teeth.

SEEDS_PER_ITEM x ITEMS seeds run (>= 2,000, mixing 3/5 nodes and every fault profile: the
defaults rotate with the seed); items are independent so ``pytest -n 2`` spreads them.
"""

from __future__ import annotations

import pytest

from cluster.raft import log as raft_log
from cluster.raft import node as raft_node
from cluster.raft import sim
from cluster.raft.types import AppendEntriesResponse

ITEMS = 40
SEEDS_PER_ITEM = 52  # 2,080 seeds
STEPS = 3000


@pytest.mark.parametrize("chunk", range(ITEMS))
def test_simulator_seeds(chunk: int) -> None:
    profiles: set[str] = set()
    for seed in range(chunk * SEEDS_PER_ITEM, (chunk + 1) * SEEDS_PER_ITEM):
        res = sim.run_seed(seed, STEPS)  # raises SimulationFailure with a replay command
        assert res.liveness_ticks <= sim.LIVENESS_BOUND_TICKS
        profiles.add(res.profile)
    assert profiles == set(sim.PROFILE_NAMES)  # every item mixes all fault profiles


def test_seed_mix_covers_node_counts_and_profiles() -> None:
    seeds = range(ITEMS * SEEDS_PER_ITEM)
    assert len(seeds) >= 2000
    assert {sim.default_nodes(s) for s in seeds} == {3, 5}
    assert {(sim.default_nodes(s), sim.default_profile(s)) for s in seeds} == {
        (n, p) for n in (3, 5) for p in sim.PROFILE_NAMES
    }


@pytest.mark.parametrize("seed", [3, 8, 11, 34])
def test_same_seed_same_trace(seed: int) -> None:
    a = sim.run_seed(seed, 1500)
    b = sim.run_seed(seed, 1500)
    assert a.trace_hash == b.trace_hash and a.steps == b.steps
    assert sim.run_seed(seed + 1, 1500).trace_hash != a.trace_hash


def test_simulator_exercises_the_interesting_paths() -> None:
    """Guard against a simulator that silently stops testing things."""
    totals = {"leaders": 0, "crashes": 0, "snapshots": 0, "conf": 0}
    for seed in range(0, 28):
        r = sim.run_seed(seed, STEPS)
        totals["leaders"] += r.leaders
        totals["crashes"] += r.crashes
        totals["snapshots"] += r.snapshots_installed
        totals["conf"] += r.conf_changes
        assert r.commits > 50, r
    assert totals["leaders"] > 60 and totals["crashes"] > 40
    assert totals["snapshots"] > 20 and totals["conf"] > 20, totals


# -- mutation sanity: break a rule, the simulator must notice -----------------------------------


def _first_failure(seeds: range, steps: int = STEPS, profile: str | None = None) -> str:
    for seed in seeds:
        try:
            sim.run_seed(seed, steps, profile=profile)
        except sim.SimulationFailure as exc:
            return exc.reason
    raise AssertionError("the simulator did not catch the injected bug")


def test_catches_votes_ignoring_log_up_to_date_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, i, t: True)
    reason = _first_failure(range(40))
    assert "lacks committed entry" in reason or "safety" in reason or "log matching" in reason


def test_catches_voting_twice_in_a_term(monkeypatch: pytest.MonkeyPatch) -> None:
    orig = raft_node.RaftNode._handle_vote_request

    def forgetful(self: raft_node.RaftNode, m: object) -> None:
        self.vote = None
        self.leader_id = None
        orig(self, m)  # type: ignore[arg-type]

    monkeypatch.setattr(raft_node.RaftNode, "_handle_vote_request", forgetful)
    reason = _first_failure(range(40))
    assert "two leaders" in reason or "granted its vote" in reason


def test_catches_acknowledging_before_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    orig = raft_node.RaftNode._send

    def eager(self: raft_node.RaftNode, m: object) -> None:
        if type(m) is AppendEntriesResponse:
            self._msgs.append(m)  # type: ignore[arg-type]  # sent before the persist
        else:
            orig(self, m)  # type: ignore[arg-type]

    monkeypatch.setattr(raft_node.RaftNode, "_send", eager)
    assert "durable" in _first_failure(range(10))


def test_catches_follower_not_truncating_conflicts(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_truncate(self: raft_log.RaftLog, prev_index: int, prev_term: int, commit: int,
                    entries: list) -> tuple[int, int] | None:  # type: ignore[type-arg]
        if not self.match_term(prev_index, prev_term):
            return None
        last = self.last_index()
        new = [e for e in entries if e.index > last]
        if new:
            self.append(new)
        last_new = entries[-1].last_index if entries else prev_index
        self.commit_to(min(commit, last_new))
        return (last_new, -2)

    monkeypatch.setattr(raft_log.RaftLog, "maybe_append", no_truncate)
    _first_failure(range(20))


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_runs_seeds_and_reports_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--seeds", "3", "--seed", "5", "--steps", "400"]) == 0
    out = capsys.readouterr().out
    assert "ok: 3 seeds" in out and "steps/s" in out


def test_cli_prints_the_replay_command_of_a_failing_seed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, i, t: True)
    assert sim.main(["--seeds", "40", "--steps", str(STEPS)]) == 1
    err = capsys.readouterr().err
    assert "FAIL seed" in err
    (replay,) = [line for line in err.splitlines() if line.startswith("replay: ")]
    cmd = replay.removeprefix("replay: ").split()
    assert cmd[:3] == ["python", "-m", "cluster.raft.sim"] and cmd[-1] == "-v"
    # The printed command reproduces the failure on its own.
    args = cmd[3:-1]
    assert sim.main(args) == 1


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        sim.main(["--nodes", "4"])
    assert exc.value.code == 2
    assert sim.main(["--steps", "0"]) == 2
    assert "error:" in capsys.readouterr().err
