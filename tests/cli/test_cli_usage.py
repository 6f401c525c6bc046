"""Every command has --help (exit 0); bad usage exits non-zero with exactly one line on stderr."""

import shutil
import subprocess

import pytest

from tidelog.testing import child_env, cli_command

HELP_COMMANDS = [
    [],
    ["serve"],
    ["topic"],
    ["topic", "create"],
    ["topic", "list"],
    ["topic", "describe"],
    ["topic", "delete"],
    ["topic", "alter-config"],
    ["produce"],
    ["consume"],
]


def run_cli(*args, stdin=None, timeout=30, env=None):
    return subprocess.run(cli_command(*args), input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=child_env(env))


def free_port():
    from tidelog._ports import free_port as pick

    return pick()


def test_every_command_has_help():
    from tidelog.cli import main

    for command in HELP_COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0, command


def test_help_in_a_real_process_and_console_script():
    result = run_cli("consume", "--help")
    assert result.returncode == 0
    assert "--from-beginning" in result.stdout and "--format" in result.stdout
    script = shutil.which("tidelog")
    if script is not None:  # installed with `pip install -e .`
        assert subprocess.run([script, "--help"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.parametrize("args", [
    ["bogus"],
    ["topic"],
    ["topic", "create"],
    ["topic", "create", "t", "--partitions", "zero"],
    ["topic", "create", "t", "--partitions", "-3"],
    ["topic", "create", "t", "--config", "novalue"],
    ["produce"],
    ["produce", "t", "--acks", "2"],
    ["produce", "t", "--compression", "brotli"],
    ["consume", "t", "--offset", "-1"],
    ["consume", "t", "--offset", "3", "--from-beginning"],
    ["consume", "t", "--timestamp", "yesterday-ish"],
    ["serve", "--grpc-port", "70000"],
    ["serve", "--group-config", "novalue"],
    ["topic", "add-partitions", "t"],
    ["topic", "add-partitions", "t", "--count", "0"],
])
def test_bad_arguments_exit_2_with_one_line(args, capsys):
    from tidelog.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tidelog: error: "), err


def test_unreachable_broker_is_one_line_not_a_traceback():
    port = free_port()  # nothing listens there
    for args in (["topic", "list"], ["topic", "create", "t"], ["consume", "t", "--timeout-ms", "100"]):
        result = run_cli(*args, "--bootstrap", f"127.0.0.1:{port}", "--timeout", "3")
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("tidelog: error: ") and "cannot reach broker" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_bootstrap_and_env_default(monkeypatch):
    result = run_cli("topic", "list", "--bootstrap", "nonsense")
    assert result.returncode == 1 and "HOST:PORT" in result.stderr
    port = free_port()
    result = run_cli("topic", "list", "--timeout", "3", env={"TIDELOG_BOOTSTRAP": f"127.0.0.1:{port}"})
    assert result.returncode == 1 and f"127.0.0.1:{port}" in result.stderr


def test_serve_reports_bad_settings_in_one_line(tmp_path):
    config = tmp_path / "tidelog.toml"
    config.write_text('grpc_port = 0\nno_such_setting = 1\n')
    result = run_cli("serve", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no_such_setting" in result.stderr
    result = run_cli("serve", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 1 and "does not exist" in result.stderr
