"""Regenerate the Python modules of every proto/rpc/*.proto: `python -m proto.rpc.generate [--out DIR] [--only NAME]`.

Compiled with the repository root as the include path, so the modules are `proto/rpc/<name>_pb2.py` (+
`_pb2_grpc.py`, `.pyi`) and import each other as `proto.rpc....`. `--out DIR` writes the same tree under DIR
instead (the generated-code-is-current test compares the two). `--only raft` regenerates just
`proto/rpc/raft.proto` (repeatable), leaving the other modules untouched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RPC_DIR = Path(__file__).resolve().parent
REPO_ROOT = RPC_DIR.parent.parent


def proto_files(only: list[str] | None = None) -> list[Path]:
    files = sorted(RPC_DIR.glob("*.proto"))
    if only:
        unknown = set(only) - {p.stem for p in files}
        if unknown:
            raise ValueError(f"no proto/rpc/<name>.proto for: {', '.join(sorted(unknown))}")
        files = [p for p in files if p.stem in only]
    return files


def generated_names(only: list[str] | None = None) -> list[str]:
    """Paths, relative to the repository root, of every file `generate` writes."""
    names = []
    for proto in proto_files(only):
        stem = proto.relative_to(REPO_ROOT).with_suffix("")
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"]
    return names


def generate(out_dir: Path = REPO_ROOT, only: list[str] | None = None) -> list[Path]:
    from grpc_tools import protoc  # a development dependency only

    out_dir = Path(out_dir)
    (out_dir / "proto" / "rpc").mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    files = [str(p.relative_to(REPO_ROOT)) for p in proto_files(only)]
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    return [out_dir / name for name in generated_names(only)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proto.rpc.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="root to write under (default: the repo)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="regenerate only proto/rpc/NAME.proto (repeatable; default: every .proto)")
    args = parser.parse_args(argv)
    try:
        written = generate(args.out, args.only)
    except ValueError as exc:
        parser.error(str(exc))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
