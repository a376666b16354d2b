"""Regenerate the Python stubs from proto/: ``python -m visact.protogen``.

The .proto files under proto/ are the source of truth. The generated modules
(``visact/<pkg>/v1/*_pb2*.py``) are checked in so that an environment container
needs only the protobuf runtime; ``tests/unit/test_proto_stubs.py`` fails when
they drift from the .proto files. Needs grpcio-tools (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"


def proto_files() -> list[Path]:
    """Every .proto file under proto/, sorted."""
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under proto/ into ``out_dir``; returns the written files."""
    import importlib.resources

    from grpc_tools import protoc  # dev dependency: imported only here

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for proto in proto_files():
        rel = proto.relative_to(PROTO_ROOT)
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(rel),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {rel}")
        stem = out_dir / rel.parent / rel.stem
        written += [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="where the visact/ tree is written")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
