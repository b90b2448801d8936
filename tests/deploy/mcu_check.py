"""`make mcu-test`: bnn-lenet5 through `lowbit export-c` onto an emulated Cortex-M4.

    python tests/deploy/mcu_check.py [MODEL.lbm] [--images N] [--host-images N]

MODEL defaults to a randomly initialised bnn-lenet5 (random BatchNorm statistics, exact ties;
needs torch).  Steps: export; the C built for the host with every binary accumulator traced,
against the Python runtime (executor="python") on --host-images Fashion-MNIST test images
(random pixels without the data set): accumulators equal, predictions equal, logits to
rounding; the firmware (csrc/mcu/qemu) built with arm-none-eabi-gcc for a Cortex-M4F linked
into 128 KiB flash / 32 KiB RAM, run under qemu-system-arm -M mps2-an386 -icount shift=0 on
--images images: predictions equal to the Python runtime's, logits equal to the host build's
bit for bit.  Prints flash, RAM, stack and instructions per inference; exits 1 on any
difference.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mcu_tools as T  # noqa: E402

from lowbit.cexport.export import export_c  # noqa: E402
from lowbit.runtime.graph import Runtime  # noqa: E402


def _images(n: int) -> tuple[np.ndarray, str]:
    try:
        from lowbit.data import find_root, load_files
        root = find_root()
        x, _ = load_files(root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz")
        return x[:n, None], "Fashion-MNIST test images"
    except Exception:                                         # no data set: random pixels
        return np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), np.uint8), "random images"


def _random_bnn(path: Path) -> Path:
    import torch
    sys.path.insert(0, str(T.ROOT / "tests" / "runtime"))
    from test_export import NORM, randomize_bn
    from lowbit.train.checkpoint import build_model
    from lowbit.train.export import export_model
    torch.manual_seed(0)
    model = build_model("bnn-lenet5")
    randomize_bn(model, 2)
    model.eval()
    export_model(model, path, NORM)
    return path


def _host(model: Path, d: Path, images: np.ndarray, rep: dict) -> list[str]:
    bad = []
    rec: dict = {}
    ref = Runtime(model, executor="python").logits(images, record=rec)
    exe = T.host_build(d / "c", d / "host", trace=True)
    preds, logits, traces = T.host_run(exe, images, rep["output_size"], rep["traced"])
    for layer in rep["traced"]:
        for n in range(len(images)):
            got = T.trace_array(traces[n][layer], rec[layer].shape[1:])
            seen = got != -(1 << 31)
            if not np.array_equal(got[seen], rec[layer][n][seen]):
                bad.append(f"host: {layer} accumulators differ on image {n}")
    if not np.array_equal(preds, ref.argmax(1)):
        bad.append(f"host: {int((preds != ref.argmax(1)).sum())} predictions differ")
    print(f"host build vs Python runtime, {len(images)} images: predictions equal "
          f"{int((preds == ref.argmax(1)).sum())}/{len(images)}, binary accumulators "
          f"{'equal' if not bad else 'DIFFER'} ({', '.join(rep['traced'])}), logits max |diff| "
          f"{np.abs(logits - ref).max():.2g}")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", help="a model file (default: random-init bnn-lenet5)")
    ap.add_argument("--images", type=int, default=8, help="images run under qemu")
    ap.add_argument("--host-images", type=int, default=200, help="images run on the host")
    ap.add_argument("--flash-kb", type=int, default=128)
    ap.add_argument("--ram-kb", type=int, default=32)
    args = ap.parse_args(argv)
    if not T.have_toolchain():
        print("mcu-test: needs arm-none-eabi-gcc, arm-none-eabi-size and qemu-system-arm "
              "(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)", file=sys.stderr)
        return 1
    d = Path(tempfile.mkdtemp(prefix="lowbit-mcu-"))
    model = Path(args.model) if args.model else _random_bnn(d / "bnn-lenet5.lbm")
    rep = export_c(model, d / "c")
    images, what = _images(max(args.images, args.host_images))
    print(f"{model}: exported to {d / 'c'}; {what}")
    for line in rep["steps"]:
        print(f"  {line}")
    bad = _host(model, d, images[:args.host_images], rep)
    imgs = images[:args.images]
    elf = T.firmware_build(d / "c", imgs, d / "fw", args.flash_kb, args.ram_kb)
    r = T.qemu_run(elf, rep["output_size"])
    ref = Runtime(model, executor="python").logits(imgs)
    _, host_logits, _ = T.host_run(T.host_build(d / "c", d / "host0", trace=False), imgs,
                                   rep["output_size"], [])
    if not np.array_equal(r["preds"], ref.argmax(1)):
        bad.append("qemu: predictions differ from the Python runtime")
    if not np.array_equal(r["logits"].view(np.uint32), host_logits.view(np.uint32)):
        bad.append("qemu: logits differ from the host build")
    s = T.elf_sizes(elf)
    consts = sum(v for k, v in s["symbols"].items() if k.startswith(("k_", "p_")))
    harness = s["symbols"].get("images", 0)
    print(f"Cortex-M4F (qemu mps2-an386), {len(imgs)} images: predictions {[int(v) for v in r['preds']]} "
          f"== Python runtime: {np.array_equal(r['preds'], ref.argmax(1))}; logits == host build "
          f"bit for bit: {np.array_equal(r['logits'].view(np.uint32), host_logits.view(np.uint32))}")
    print(f"flash: {s['flash']:,} B in all (text + data, arm-none-eabi-size), of which model "
          f"constants {consts:,} B, code {s['flash'] - consts - harness:,} B (lowbit_predict with "
          f"its kernels inlined {s['symbols'].get('lowbit_predict', 0):,} B, start-up, test "
          f"main, libgcc soft double), test images {harness:,} B (limit {args.flash_kb} KiB)")
    print(f"RAM: arena {s['symbols'].get('lowbit_arena', 0):,} B + stack used {r['stack']:,} B "
          f"(painted; {4096:,} B reserved) + test harness statics; bss {s['bss']:,} B in all "
          f"with the reserve (limit {args.ram_kb} KiB)")
    mean = float(np.mean(r["insns"]))
    print(f"instructions per inference: {mean:,.0f} (qemu -icount shift=0, FPGAIO counter, "
          f"{min(r['insns']):,}..{max(r['insns']):,})")
    for n, line in zip(r["steps"], rep["steps"]):
        print(f"  {n:>10,}  {100 * n / mean:5.1f}%  {line}")
    for b in bad:
        print(f"MISMATCH: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
