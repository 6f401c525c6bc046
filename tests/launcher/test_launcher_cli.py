"""`tidelog cluster ...` on the command line: --help everywhere, bad usage is one line and non-zero."""

from __future__ import annotations

import subprocess

import pytest

from tidelog.testing import child_env, cli_command

CLUSTER_COMMANDS = ["up", "status", "down", "restart-node", "start-node", "kill-node", "stop-node", "pause-node",
                    "resume-node"]


@pytest.mark.parametrize("command", [["cluster"]] + [["cluster", c] for c in CLUSTER_COMMANDS])
def test_every_cluster_command_has_help(command, capsys):
    from tidelog.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tidelog {' '.join(command)}")
    if command != ["cluster"]:
        assert "--data-dir DIR" in out


@pytest.mark.parametrize("args", [
    ["cluster"],
    ["cluster", "bogus"],
    ["cluster", "up", "--nodes", "0"],
    ["cluster", "up", "--nodes", "three"],
    ["cluster", "up", "--base-port", "70000"],
    ["cluster", "up", "--timeout", "0"],
    ["cluster", "up", "--timeout", "soon"],
    ["cluster", "up", "--controller-voters", "1,x"],
    ["cluster", "up", "--log-level", "loud"],
    ["cluster", "status", "--timeout", "-1"],
    ["cluster", "down", "extra"],
    ["cluster", "restart-node"],
    ["cluster", "restart-node", "0"],
    ["cluster", "kill-node", "two"],
    ["cluster", "start-node", "1", "--kill"],
    ["cluster", "pause-node"],
])
def test_bad_arguments_exit_2_with_one_line(args, capsys):
    from tidelog.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tidelog: error: "), err


@pytest.mark.parametrize("args, message", [
    (["status"], "no cluster in"),
    (["down"], "no cluster in"),
    (["kill-node", "1"], "no cluster in"),
    (["restart-node", "2"], "no cluster in"),
    (["start-node", "1"], "no cluster in"),
    (["pause-node", "1"], "no cluster in"),
    (["up", "--nodes", "3", "--base-port", "65510"], "too high for 3 nodes"),
])
def test_failures_are_one_line_and_exit_1(tmp_path, args, message, capsys):
    from tidelog.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["cluster", *args, "--data-dir", str(tmp_path / "d")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tidelog: error: ") and message in err, err


def test_a_damaged_cluster_file_is_one_line(tmp_path, capsys):
    from tidelog.cli import main

    (tmp_path / "cluster.json").write_text("{\"version\": 1")
    for command in (["status"], ["down"], ["up"], ["kill-node", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["cluster", *command, "--data-dir", str(tmp_path)])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not valid JSON" in err, (command, err)


def test_help_in_a_real_process():
    result = subprocess.run(cli_command("cluster", "up", "--help"), capture_output=True, text=True, timeout=30,
                            env=child_env())
    assert result.returncode == 0 and "--foreground" in result.stdout and "--base-port" in result.stdout
