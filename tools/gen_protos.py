"""Regenerates the committed Python protobuf/gRPC code from protos/.

Run: python tools/gen_protos.py [--check]. With --check it generates into a temp dir and exits 1 if the committed
code differs (tests/test_generated.py runs that).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT_PKG = Path("npcserver/api/v1")


def generate(out_root: Path) -> list[Path]:
    """Runs protoc for every proto under protos/, writing into out_root (the repo root or a temp dir)."""
    include = str(Path(protoc.__file__).parent / "_proto")
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    (out_root / OUT_PKG).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_root) for p in (out_root / OUT_PKG).glob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if not args.check:
        for rel in generate(ROOT):
            print(f"wrote {rel}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(p.relative_to(ROOT) for p in (ROOT / OUT_PKG).glob("*_pb2*.py*"))
        stale = [str(r) for r in fresh if not (ROOT / r).exists() or not filecmp.cmp(Path(tmp) / r, ROOT / r, False)]
        extra = [str(r) for r in committed if r not in fresh]
        if stale or extra:
            print(f"generated code is stale: {stale + extra}; run python tools/gen_protos.py", file=sys.stderr)
            return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
