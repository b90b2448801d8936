"""The ``lowbit`` command line.  Thin: every handler parses arguments and calls a package.

Handlers import their package lazily so that ``lowbit run`` / ``lowbit bench bgemm`` do not
pay for importing torch, and so that a machine without torch can still use the runtime.
"""
from __future__ import annotations

import argparse
import sys


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (speed and size as ratios against a baseline)")
    bsub = bench.add_subparsers(dest="bench_cmd", required=True)

    p = bsub.add_parser("bgemm", help="packed XNOR-popcount GEMM vs torch.matmul fp32, 1 thread")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--kernel", default=None, help="force a CPU path (ref|portable|avx2|avx512)")
    p.set_defaults(func=_bench_bgemm)


def _bench_bgemm(args: argparse.Namespace) -> int:
    from lowbit.bench.bgemm import main as run
    return run(json_path=args.json, repeats=args.repeats, kernel=args.kernel)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
