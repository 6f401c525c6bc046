"""deploy/ and docs/deploy.md: every `tidelog ...` command line in them is accepted by the real CLI parser.

Nothing is run (no Docker daemon or Kubernetes here): commands are extracted from the files (JSON-style arrays
in YAML and Dockerfiles, shell lines everywhere else, inline code in the docs), shell variables are filled in
with example values, and each command is parsed by `tidelog.cli.build_parser()`. While this tidelog's `serve`
lacks the clustered flags (--peers, --raft-port, ...), those flags are checked by name against the contract
instead, and the test says so by skipping at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from tidelog import launcher as L
from tidelog.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs" / "deploy.md"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "kubernetes" / "tidelog.yaml"
UNIT = DEPLOY / "systemd" / "tidelog.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "tidelog.env.example"

# The contract's node flags (docs/cluster-design.md), with whether each takes a value.
CONTRACT_CLUSTER_FLAGS = {"--peers", "--raft-port", "--controller-voters", "--rack", "--default-replication-factor"}

# At least this many full `tidelog` command lines per file (so an extraction that silently finds nothing fails).
MIN_COMMANDS = {
    "deploy/docker-compose.yml": 6,  # 3 brokers + 3 health checks
    "deploy/Dockerfile": 1,
    "deploy/kubernetes/tidelog.yaml": 1,
    "deploy/systemd/tidelog.service": 1,
    "docs/deploy.md": 11,
}


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{ENV_EXAMPLE.name}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


# Example values for the shell variables the files use (an unknown variable fails the test).
EXAMPLES = {
    **env_example(),
    "HOSTNAME": "tidelog-0",
    "POD_NAMESPACE": "default",
    "DOMAIN": "tidelog.default.svc.cluster.local",
    "ORDINAL": "0",
    "CLUSTER_SIZE": "3",
    "PEERS": "1=tidelog-0.tidelog.default.svc.cluster.local:7072,2=tidelog-1.tidelog.default.svc.cluster.local:7072",
}


# --------------------------------------------------------------------------------------------------------
# extraction


def json_arrays(text: str) -> list[list[str]]:
    """Every JSON-style string array that holds a tidelog command: ["tidelog", ...] or ["CMD", "tidelog", ...]."""
    found = []
    for match in re.finditer(r'\[\s*"(?:CMD|tidelog)"', text):
        start = match.start()
        depth, i, in_string = 0, start, False
        while i < len(text):
            ch = text[i]
            if in_string:
                if ch == "\\":
                    i += 1
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        array = json.loads(text[start:i + 1])
        if array and array[0] == "CMD":
            array = array[1:]
        if array and array[0] == "tidelog":
            found.append(array)
    return found


_COMMAND_POSITION = {"exec", "&&", "||", ";", "|", "$", "sudo", "then", "do", "-", "#", "--"}
_CANDIDATE = re.compile(r"(^|[\s;&|=`])(\S*/)?tidelog(\s|$)")


def _top_level_commands() -> set[str]:
    import argparse

    return {name for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}


SUBCOMMANDS = _top_level_commands()  # serve, topic, produce, consume, cluster, ...


def substitute(line: str, where: str) -> str:
    def variable(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in EXAMPLES, f"{where}: no example value for ${name} in {line!r}"
        return EXAMPLES[name]

    assert "$((" not in line and "$(" not in line, f"{where}: command substitution in a tidelog line: {line!r}"
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", variable, line)


def shell_commands(text: str, where: str) -> list[list[str]]:
    """tidelog command lines in shell-like text: line continuations joined, `tidelog` (or a path ending in it)
    in command position, up to the next shell operator."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line.startswith("ExecStart="):
            line = line[len("ExecStart="):]
        if not _CANDIDATE.search(line) or line.lstrip("#- ").startswith(("[", '"', "command:", "test:", "CMD [")):
            continue
        line = line.split(" # ")[0].split("   # ")[0]  # trailing comments
        try:
            tokens = shlex.split(substitute(line, where), comments=False)
        except ValueError as exc:
            if not re.search(r"(^|exec |[;&|] )\s*(\S*/)?tidelog ", line):
                continue  # prose that merely mentions tidelog
            raise AssertionError(f"{where}: cannot split {line!r}: {exc}") from None
        comment = line.startswith("#")
        for i, token in enumerate(tokens):
            if os.path.basename(token) != "tidelog":
                continue
            if i and tokens[i - 1] not in _COMMAND_POSITION and not tokens[i - 1].startswith("ExecStart="):
                continue
            if comment and (i + 1 >= len(tokens) or tokens[i + 1] not in SUBCOMMANDS):
                continue  # a comment's prose ("# tidelog broker as a service"), not a usage line
            command = ["tidelog"]
            for t in tokens[i + 1:]:
                if t in ("&&", "||", ";", "|", ">", ">>", "2>&1") or t.startswith("#"):
                    break
                command.append(t)
            commands.append(command)
    return commands


def markdown_code(text: str) -> tuple[str, list[str]]:
    """(the fenced code blocks, the inline code spans) of a Markdown file."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    prose = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.S | re.M)
    return "\n".join(blocks), re.findall(r"`([^`\n]+)`", prose)


def commands_of(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """(full command lines, partial mentions) of one file."""
    where = str(path.relative_to(REPO))
    text = path.read_text()
    if path.suffix == ".md":
        code, spans = markdown_code(text)
        mentions = [shlex.split(s) for s in spans if s.startswith("tidelog ")]
        return shell_commands(code, where), mentions
    arrays = json_arrays(text)
    return arrays + shell_commands(text, where), []


def deploy_files() -> list[Path]:
    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
    return files + [DOCS]


# --------------------------------------------------------------------------------------------------------
# checking


def parse(argv: list[str]):
    """Parse argv (after `tidelog`) with the real parser; AssertionError with tidelog's one-line reason."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return build_parser().parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"tidelog {shlex.join(argv)}: {err.getvalue().strip() or exc}") from None


def options_of(argv: list[str]) -> tuple[list[str], set[str]]:
    """The subcommand path (e.g. ['cluster', 'up']) and the options that path's parser accepts."""
    import argparse

    parser = build_parser()
    path = []
    for word in argv:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            break
        parser = sub.choices[word]
        path.append(word)
    return path, {o for a in parser._actions for o in a.option_strings}


def without_missing_cluster_flags(argv: list[str], missing: set[str]) -> tuple[list[str], list[str]]:
    """argv minus the contract's clustered flags this serve lacks (checked by name instead)."""
    kept, dropped = [], []
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
            continue
        name = token.split("=", 1)[0]
        if name in missing:
            assert name in CONTRACT_CLUSTER_FLAGS
            dropped.append(name)
            skip_value = "=" not in token
            continue
        kept.append(token)
    return kept, dropped


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_tidelog_command_is_accepted_by_the_cli(path):
    commands, mentions = commands_of(path)
    rel = str(path.relative_to(REPO))
    assert len(commands) >= MIN_COMMANDS.get(rel, 0), (rel, commands)
    serve_has = L.serve_flags()
    missing = CONTRACT_CLUSTER_FLAGS - serve_has
    unchecked = set()
    for command in commands:
        argv = command[1:]
        if argv and argv[0] == "serve" and missing:
            argv, dropped = without_missing_cluster_flags(argv, missing)
            unchecked.update(dropped)
        args = parse(argv)
        assert args.command, command
    for mention in mentions:  # inline code in prose: the subcommand and each flag must exist
        path_words, options = options_of(mention[1:])
        assert path_words, f"{rel}: `{shlex.join(mention)}` names no tidelog command"
        for token in mention[1 + len(path_words):]:
            flag = token.split("=", 1)[0]
            if flag.startswith("--") and flag not in options and not (flag in missing and path_words == ["serve"]):
                raise AssertionError(f"{rel}: `{shlex.join(mention)}`: tidelog {' '.join(path_words)} has no {flag}")
    if unchecked:
        pytest.skip(f"{rel}: all else parsed; {', '.join(sorted(unchecked))} not in this tidelog serve yet "
                    f"(the clustered broker), checked against the contract by name only")


def test_the_compose_brokers_follow_the_launcher_layout_and_agree_on_peers():
    arrays = [a for a in json_arrays(COMPOSE.read_text()) if a[1] == "serve"]
    assert len(arrays) == 3
    peers = set()
    for i, argv in enumerate(arrays, 1):
        flags = dict(zip(argv[2::2], argv[3::2]))
        ports = L.node_ports(7100, i)
        assert flags["--node-id"] == str(i) and flags["--host"] == f"tidelog-{i}"
        assert int(flags["--grpc-port"]) == ports["grpc_port"] and int(flags["--kafka-port"]) == ports["kafka_port"]
        assert int(flags["--metrics-port"]) == ports["metrics_port"] and int(flags["--raft-port"]) == ports["raft_port"]
        peers.add(flags["--peers"])
        text = COMPOSE.read_text()
        for port in (ports["grpc_port"], ports["kafka_port"], ports["metrics_port"]):
            assert f'"{port}:{port}"' in text  # published one to one
        assert f'"--bootstrap", "tidelog-{i}:{ports["grpc_port"]}"' in text  # each health check asks itself
    assert peers == {"1=tidelog-1:7113,2=tidelog-2:7123,3=tidelog-3:7133"}


def test_the_image_carries_every_package_pyproject_installs():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {p.rstrip("*").rstrip(".") for p in patterns}
    dockerfile = DOCKERFILE.read_text()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for package in top_level:
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, flags=re.M), package
        assert f"!{package}" in ignore, package
    assert "COPY pyproject.toml README.md ./" in dockerfile


def _stub_tidelog(tmp_path: Path) -> Path:
    """A stand-in `tidelog` on PATH that writes its arguments, NUL-separated, to $STUB_OUT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "tidelog"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$STUB_OUT"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def k8s_start_script() -> str:
    """The container's `sh -c` script: the YAML block literal under `args:` (read as text: no YAML library)."""
    lines = K8S.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- |")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    body = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        body.append(line[indent:])
    return "\n".join(body) + "\n"


@pytest.mark.parametrize("pod, namespace, size", [("tidelog-0", "default", 3), ("tidelog-2", "prod", 3),
                                                  ("tidelog-4", "prod", 5)])
def test_the_statefulset_start_script_derives_id_and_peers_from_the_pod(tmp_path, pod, namespace, size):
    script = k8s_start_script()
    assert "exec tidelog serve" in script
    out = tmp_path / "argv"
    env = {"PATH": f"{_stub_tidelog(tmp_path)}:/usr/bin:/bin", "HOSTNAME": pod, "POD_NAMESPACE": namespace,
           "CLUSTER_SIZE": str(size), "STUB_OUT": str(out)}
    result = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    argv = out.read_bytes().rstrip(b"\0").decode().split("\0")
    flags = dict(zip(argv[1::2], argv[2::2]))
    ordinal = int(pod.rsplit("-", 1)[1])
    domain = f"tidelog.{namespace}.svc.cluster.local"
    assert argv[0] == "serve"
    assert flags["--node-id"] == str(ordinal + 1)
    assert flags["--host"] == f"{pod}.{domain}"
    assert flags["--peers"] == ",".join(f"{k + 1}=tidelog-{k}.{domain}:7072" for k in range(size))
    assert flags["--raft-port"] == "7072" and flags["--controller-voters"] == "1,2,3"
    missing = CONTRACT_CLUSTER_FLAGS - L.serve_flags()
    parsed = parse(without_missing_cluster_flags(argv, missing)[0])
    assert parsed.node_id == ordinal + 1 and parsed.grpc_port == 7070 and parsed.kafka_port == 9092


def test_the_statefulset_pieces_are_there():
    text = K8S.read_text()
    for needle in ("kind: StatefulSet", "serviceName: tidelog", "clusterIP: None", "publishNotReadyAddresses: true",
                   "podManagementPolicy: Parallel", "volumeClaimTemplates:", "terminationGracePeriodSeconds: 60",
                   "kind: PodDisruptionBudget", "fieldPath: metadata.namespace"):
        assert needle in text, needle
    replicas = re.search(r"^\s+replicas: (\d+)$", text, flags=re.M).group(1)
    size = re.search(r'name: CLUSTER_SIZE\n\s+value: "(\d+)"', text).group(1)
    assert replicas == size == "3"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_the_kubernetes_manifests_render_offline():
    result = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "kubernetes")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\nkind: ") + result.stdout.startswith("kind: ") >= 1
    assert "kind: StatefulSet" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_systemd_unit_verifies(tmp_path):
    # verify checks the executable exists and the env file is readable: point both at real files.
    unit = UNIT.read_text().replace("/opt/tidelog/venv/bin/tidelog", "/bin/true")
    unit = unit.replace("EnvironmentFile=/etc/tidelog/tidelog.env", f"EnvironmentFile={ENV_EXAMPLE}")
    copy = tmp_path / "tidelog.service"
    copy.write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if str(copy) in line or "tidelog.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_the_systemd_unit_takes_every_value_from_the_env_file():
    exec_start = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    used = set(re.findall(r"\$\{(\w+)\}", exec_start))
    assert used == set(env_example()), (used ^ set(env_example()))
    assert "$" not in re.sub(r"\$\{\w+\}", "", exec_start)  # ${VAR} only: one argument each, never split
