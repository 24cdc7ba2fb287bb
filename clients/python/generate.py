#!/usr/bin/env python3
"""Generates the Python stubs of ipa.v1 from the repository's proto/ with
grpcio-tools into ipa_client/_generated/ (ignored by git: always made from
the .proto files in use, so they cannot go stale).

    python clients/python/generate.py      # with grpcio-tools installed
                                           # (scripts/tools puts it in
                                           # target/tools-venv)
"""

import pathlib
import shutil
import sys

from grpc_tools import protoc
import grpc_tools

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "ipa_client" / "_generated"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "ipa" / "v1").glob("*.proto"))
    if not protos:
        print(f"generate.py: no .proto files under {PROTO_ROOT}", file=sys.stderr)
        return 1
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    # google/protobuf/*.proto ship inside grpcio-tools.
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *protos,
    ]
    rc = protoc.main(args)
    if rc != 0:
        print(f"generate.py: protoc failed ({rc})", file=sys.stderr)
        return rc
    # Generated modules import each other as `ipa.v1.x_pb2`: make the
    # directories packages.
    for d in (OUT / "ipa", OUT / "ipa" / "v1"):
        (d / "__init__.py").touch()
    print(f"generated {len(protos)} files into {OUT.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
