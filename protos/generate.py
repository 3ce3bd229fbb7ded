"""Regenerate the committed Python modules from the .proto files in this folder.

Run from anywhere: `python protos/generate.py`. Uses grpc_tools.protoc at the version pinned in
pyproject.toml's test extra; tests/unit/test_protos_generated.py checks that running it changes
nothing. The .proto files import each other as "protos/<pkg>/<file>.proto", so the generated
modules import each other as `protos.<pkg>.<file>_pb2`.
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_FILES = [
    "protos/mvccpb/kv.proto",
    "protos/authpb/auth.proto",
    "protos/etcdserverpb/rpc.proto",
    "protos/kvpb/internal.proto",
    "protos/kvpb/peer.proto",
    "protos/healthpb/health.proto",
]
WITH_SERVICES = {"protos/etcdserverpb/rpc.proto", "protos/kvpb/peer.proto", "protos/healthpb/health.proto"}


def generate(out_dir: pathlib.Path = ROOT) -> None:
    """Write *_pb2.py, *_pb2.pyi (and *_pb2_grpc.py for service files) under out_dir."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    for proto in PROTO_FILES:
        args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
        if proto in WITH_SERVICES:
            args.append(f"--grpc_python_out={out_dir}")
        if protoc.main(args + [proto]) != 0:
            raise SystemExit(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
