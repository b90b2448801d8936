"""Guest instructions per inference of the aarch64 lowbit-run under qemu, portable vs neon
(docs/results.md, "Deployment: lowbit-run, NEON path"; `make cross-count` builds the
unstripped runner and the plugin and runs it).

    .venv/bin/python tests/deploy/count_instructions.py [--exe build/cross/lowbit-run.sym]
        [--profile N] [--groups] [--models bnn-lenet5,bnn-vgg-small] [--paths portable,neon]

How: tests/deploy/insn_plugin.c, a qemu TCG plugin, counts executed guest instructions (an
inline counter per translated block).  One inference = the count of `lowbit-run M x.npy
--repeat 1` (the image run twice) minus the count of `lowbit-run M x.npy` (once), so loading,
planning and process start-up cancel out.  The models are exported here from fixed seeds
(torch.manual_seed(0), tests/runtime/test_export.randomize_bn(m, 0)); the counts hardly
depend on the weights (the kernels have no data-dependent branches, except NaN checks).
--profile N: the N functions with the most instructions per inference, per path (from the
plugin's per-block counts and the symbols of the unstripped executable, via nm; inlined
code counts for the function it was inlined into).  --groups: the same per-function counts
summed into the stages of a binary network (GROUPS), one table per model.
"""
from __future__ import annotations

import argparse
import bisect
import re
import shlex
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
from test_export import NORM, randomize_bn  # noqa: E402

from lowbit.train.checkpoint import build_model  # noqa: E402
from lowbit.train.export import export_model  # noqa: E402

MODELS = {"bnn-lenet5": ("bnn-lenet5", {}),
          "bnn-vgg-small": ("bnn-vgg-small", dict(width=0.5))}
LABELS = {"bnn-lenet5": "bnn-lenet5 (1 image)",
          "bnn-vgg-small": "bnn-vgg-small width 0.5 (1 image, 28x28)"}


# stage of the network <- function names (first match; demangled, see --profile)
GROUPS = [
    ("XOR-popcount micro-kernel", r"bgemm_detail::micro_|micro_masked"),
    ("first layer (float direct conv / GEMM)", r"direct_detail|lowbit_eigen|FConvOp|fgemm"),
    ("binary output stage (counts -> bits)", r"stage_row|binary_bits_row|neon_bits::|int const\*, long\)#2\}::operator"),
    ("A gather + panel packing", r"pack_a_words|unsigned long\*\)#1\}::operator"),
    ("pooling", r"maxpool|MaxPool|::pool\("),
]


def group_of(fn: str) -> str:
    for g, pat in GROUPS:
        if re.search(pat, fn):
            return g
    return "other (driver loops, bitpack, unpack, memcpy, ...)"


def symbols(exe: Path, nm: str) -> tuple[list[int], list[str]]:
    out = subprocess.run([nm, "-C", "-n", "--defined-only", str(exe)], capture_output=True, text=True,
                         check=True).stdout
    addrs, names = [], []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "TtWw":
            addrs.append(int(parts[0], 16))
            names.append(parts[2])
    return addrs, names


def run(qemu: list[str], plugin: Path, exe: Path, model: Path, x: Path, path: str, repeat: int,
        blocks: Path) -> tuple[int, Counter]:
    cmd = qemu + ["-plugin", f"{plugin},out={blocks}", str(exe), str(model), str(x), "--quiet",
                  "--kernel", path]
    if repeat:
        cmd += ["--repeat", str(repeat)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{shlex.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    total = int(next(l for l in r.stderr.splitlines() if l.startswith("insns: ")).split()[1])
    per_block: Counter = Counter()
    for line in blocks.read_text().splitlines():
        a, n, e = line.split()
        per_block[int(a, 16)] += int(n) * int(e)
    return total, per_block


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exe", default=str(ROOT / "build/cross/lowbit-run.sym"),
                    help="aarch64 lowbit-run, unstripped for --profile")
    ap.add_argument("--qemu", default="qemu-aarch64 -L /usr/aarch64-linux-gnu")
    ap.add_argument("--nm", default="aarch64-linux-gnu-nm")
    ap.add_argument("--plugin", default=str(ROOT / "build/cross/insn_plugin.so"))
    ap.add_argument("--models", default="bnn-lenet5,bnn-vgg-small")
    ap.add_argument("--paths", default="portable,neon")
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--groups", action="store_true", help="instructions per stage (GROUPS), per model")
    a = ap.parse_args()
    exe, plugin, qemu = Path(a.exe), Path(a.plugin), shlex.split(a.qemu)
    if not plugin.exists():
        plugin.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(plugin),
                        str(ROOT / "tests/deploy/insn_plugin.c")], check=True)
    syms = symbols(exe, a.nm) if a.profile or a.groups else None
    paths = a.paths.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        np.save(d / "x.npy", np.random.default_rng(0).integers(0, 256, (1, 1, 28, 28), dtype=np.uint8))
        for key in a.models.split(","):
            name, kwargs = MODELS[key]
            torch.manual_seed(0)
            m = build_model(name, **kwargs)
            randomize_bn(m, 0)
            m.eval()
            export_model(m, d / "m.lbm", NORM)
            counts, groups = {}, {}
            for path in paths:
                t0, b0 = run(qemu, plugin, exe, d / "m.lbm", d / "x.npy", path, 0, d / "b0.txt")
                t1, b1 = run(qemu, plugin, exe, d / "m.lbm", d / "x.npy", path, 1, d / "b1.txt")
                counts[path] = t1 - t0
                if syms:
                    per_fn: Counter = Counter()
                    for addr in set(b0) | set(b1):
                        i = bisect.bisect_right(syms[0], addr) - 1
                        per_fn[syms[1][i] if i >= 0 else "?"] += b1[addr] - b0[addr]
                    groups[path] = Counter()
                    for fn, n in per_fn.items():
                        groups[path][group_of(fn)] += n
                    if a.profile:
                        print(f"\n{key} / {path}: {counts[path]:,} instructions per inference; top functions:")
                        for fn, n in per_fn.most_common(a.profile):
                            print(f"  {n:>11,} {100 * n / counts[path]:5.1f}%  {fn[:400]}")
            if a.groups:
                print(f"\n{LABELS[key]}: instructions per inference by stage\n")
                print("| stage | " + " | ".join(paths) + (" | ratio |" if len(paths) == 2 else " |"))
                print("|---|" + "---:|" * (len(paths) + (len(paths) == 2)))
                for g in [g for g, _ in GROUPS] + [group_of("")]:
                    cells = " | ".join(f"{groups[p][g] / 1e6:.3f} M" for p in paths)
                    ratio = (f" | {groups[paths[0]][g] / groups[paths[1]][g]:.1f}x |"
                             if len(paths) == 2 and groups[paths[1]][g] > 0 else " | |" if len(paths) == 2 else " |")
                    print(f"| {g} | {cells}{ratio}")
            rows.append((key, counts))
    print("\n| model | " + " | ".join(paths) + (" | ratio |" if len(paths) == 2 else " |"))
    print("|---|" + "---|" * (len(paths) + (len(paths) == 2)))
    for key, c in rows:
        cells = " | ".join(f"{c[p] / 1e6:.2f} M" for p in paths)
        ratio = f" | {c[paths[0]] / c[paths[1]]:.2f}x |" if len(paths) == 2 else " |"
        print(f"| {LABELS[key]} | {cells}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
