"""Generate Python code from proto/ into dsjobs_pb (``make proto``); ``--check`` fails on stale code.

The generated modules import each other as ``dsjobs_pb.yandex...`` so they never collide with the official
``yandex`` package (yandexcloud) in the same environment.
"""
import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "dsjobs_pb"
PREFIX = "dsjobs_pb."


def _include_dirs():
    dirs = [str(PROTO), str(Path(grpc_tools.__file__).parent / "_proto")]
    import google.rpc  # googleapis-common-protos ships its .proto sources next to the modules

    dirs.append(str(Path(google.rpc.__path__[0]).parent.parent))
    return dirs


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    args = ["protoc"] + [f"-I{d}" for d in _include_dirs()]
    args += [f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}"] + files
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        text = re.sub(r"^from yandex\.", f"from {PREFIX}yandex.", text, flags=re.M)
        text = re.sub(r"^import yandex\.", f"import {PREFIX}yandex.", text, flags=re.M)
        path.write_text(text)
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])

    def walk(c):
        if c.left_only or c.right_only or c.diff_files or c.funny_files:
            return False
        return all(walk(s) for s in c.subdirs.values())

    return walk(cmp)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if dsjobs_pb is stale")
    opts = parser.parse_args()
    if opts.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            if not OUT.exists() or not _same_tree(Path(tmp), OUT):
                sys.exit("dsjobs_pb is stale: run `make proto` and commit the result")
        print("generated proto code is up to date")
        return
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    generate(OUT)
    print(f"generated {sum(1 for _ in OUT.rglob('*_pb2.py'))} modules into {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
