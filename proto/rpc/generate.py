"""Regenerate the Python modules of every proto/rpc/*.proto: `python -m proto.rpc.generate [--out DIR]`.

Compiled with the repository root as the include path, so the modules are `proto/rpc/<name>_pb2.py` (+
`_pb2_grpc.py`, `.pyi`) and import each other as `proto.rpc....`. `--out DIR` writes the same tree under DIR
instead (the generated-code-is-current test compares the two).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RPC_DIR = Path(__file__).resolve().parent
REPO_ROOT = RPC_DIR.parent.parent


def proto_files() -> list[Path]:
    return sorted(RPC_DIR.glob("*.proto"))


def generated_names() -> list[str]:
    """Paths, relative to the repository root, of every file `generate` writes."""
    names = []
    for proto in proto_files():
        stem = proto.relative_to(REPO_ROOT).with_suffix("")
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"]
    return names


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    from grpc_tools import protoc  # a development dependency only

    out_dir = Path(out_dir)
    (out_dir / "proto" / "rpc").mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    files = [str(p.relative_to(REPO_ROOT)) for p in proto_files()]
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
    return [out_dir / name for name in generated_names()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proto.rpc.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="root to write under (default: the repo)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
