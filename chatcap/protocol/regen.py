"""Regenerate ``chat_pb2.py`` and ``chat_pb2.pyi`` from ``chat.proto`` (``make proto``).

Usage::

    python -m chatcap.protocol.regen            # rewrite the committed files
    python -m chatcap.protocol.regen --check    # exit 1 if they are out of date
    python -m chatcap.protocol.regen --out DIR  # write the two files into DIR instead

protoc (from grpcio-tools) runs with the repository root as its include path, so the
descriptor is registered as ``chatcap/protocol/chat.proto`` (no clash with another
``chat.proto`` in the process) and the output holds no absolute path or timestamp: the
same protoc version gives the same bytes on any machine. The generated files record
that version; ``--check`` after an upgrade of grpcio-tools reports them out of date.
"""

import argparse
import sys
import tempfile
from pathlib import Path

__all__ = ["GENERATED", "PROTO", "generate", "main", "stale_files"]

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent.parent
PROTO = PACKAGE_DIR / "chat.proto"
GENERATED = ("chat_pb2.py", "chat_pb2.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on ``chat.proto`` and write the generated files into ``out_dir``."""
    from grpc_tools import protoc  # dev dependency: only needed here

    rel_proto = PROTO.relative_to(ROOT).as_posix()
    with tempfile.TemporaryDirectory(prefix="chatcap-regen-") as tmp:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            rel_proto,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {rel_proto}: {' '.join(args)}")
        produced = Path(tmp) / PROTO.parent.relative_to(ROOT)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            target = out_dir / name
            target.write_bytes((produced / name).read_bytes())
            written.append(target)
    return written


def stale_files(committed_dir: Path = PACKAGE_DIR) -> list[str]:
    """Names of the generated files in ``committed_dir`` that differ from a fresh run."""
    with tempfile.TemporaryDirectory(prefix="chatcap-regen-check-") as tmp:
        fresh_dir = Path(tmp)
        generate(fresh_dir)
        stale = []
        for name in GENERATED:
            committed = committed_dir / name
            if not committed.exists() or committed.read_bytes() != (fresh_dir / name).read_bytes():
                stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m chatcap.protocol.regen", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the generated files differ from a fresh run",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PACKAGE_DIR,
        help="directory for the generated files (default: next to chat.proto)",
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        if stale:
            print(
                f"out of date in {args.out}: {', '.join(stale)} — run `make proto`",
                file=sys.stderr,
            )
            return 1
        print(f"up to date: {', '.join(GENERATED)}")
        return 0
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
