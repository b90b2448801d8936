"""The ``lowbit`` command line.  Thin: every handler parses arguments and calls a package.

Handlers import their package lazily so that ``lowbit run`` / ``lowbit bench bgemm`` do not
pay for importing torch, and so that a machine without torch can still use the runtime.
"""
from __future__ import annotations

import argparse
import os
import sys

from lowbit import __version__
from lowbit.cliargs import (TORCH_HINT, Parser, fail, input_size, key_value, model_ref,
                            nonneg_int, positive_int, torch_missing)

# Before torch (OpenMP) loads: idle OpenMP workers sleep instead of spinning ~10 ms after each
# parallel region, which would take the cores of whatever runs next (benchmarks, the runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (speed and size as ratios against a baseline)")
    bsub = bench.add_subparsers(dest="bench_cmd", required=True)

    p = bsub.add_parser("bgemm", help="packed XNOR-popcount GEMM vs torch.matmul fp32, 1 thread")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--kernel", default=None, help="force a CPU path (ref|portable|avx2|avx512)")
    p.set_defaults(func=_bench_bgemm)

    p = bsub.add_parser("kernels", help="bitwise conv2d / dense kernels vs torch fp32 conv2d / "
                                        "linear, 1 thread")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--kernel", default=None, help="force a CPU path (portable|avx2|avx512)")
    p.add_argument("--variant", default=None, help="force a micro-kernel variant of that path")
    p.add_argument("--no-portable", action="store_true", help="skip the portable-path rows")
    p.set_defaults(func=_bench_kernels)

    p = bsub.add_parser("model", help="whole-model latency / throughput / size / accuracy: "
                                      "lowbit runtime vs PyTorch fp32, ORT fp32, ORT int8 of "
                                      "the same architecture, interleaved")
    p.add_argument("file", metavar="FILE", help="a lowbit model file (lowbit export)")
    p.add_argument("--batch", default="1", help="batch sizes, e.g. 1,2,4,8,16,32,64,128,256")
    p.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    p.add_argument("--json", metavar="PATH", help="write {meta, records, ...} here")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--inner", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help="fashion-mnist or a folder of IDX files: "
                   "also measure test accuracy")
    p.add_argument("--rss", action="store_true", help="peak RSS of each system (subprocesses)")
    p.add_argument("--checkpoint", default=None, help="trained weights for the baselines' "
                   "float model (their accuracy is reported only for a float model)")
    p.add_argument("--calib", type=int, default=64, help="calibration images for ORT int8")
    p.add_argument("--systems", default="torch-fp32,ort-fp32,ort-int8",
                   help="baselines to run beside lowbit")
    _add_energy_args(p)
    p.set_defaults(func=_bench_model)

    _add_baselines(bsub)

    from lowbit.bench.accuracy import add_arguments  # stdlib only at import time
    p = bsub.add_parser("accuracy", help="train every low-bit recipe on Fashion-MNIST and write "
                                         "the table to docs/results.md")
    add_arguments(p)
    p.set_defaults(func=_bench_accuracy)


def _bench_accuracy(args: argparse.Namespace) -> int:
    from lowbit.bench.accuracy import run_all
    return run_all(args)


def _bench_bgemm(args: argparse.Namespace) -> int:
    from lowbit.bench.bgemm import main as run
    return run(json_path=args.json, repeats=args.repeats, kernel=args.kernel)


def _bench_model(args: argparse.Namespace) -> int:
    from lowbit.bench.model import main as run
    try:
        table = _energy_table(args)
    except ValueError as e:
        return fail("bench model", str(e))
    return run(args.file, args.batch, args.json, args.repeats, args.inner, args.threads,
               data=args.data, rss=args.rss, checkpoint=args.checkpoint, calib=args.calib,
               systems=tuple(s for s in args.systems.split(",") if s.strip()),
               energy_table=table)


def _add_runtime(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to a lowbit model file (packed "
                                      "weights, BatchNorm folded into thresholds)")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a training checkpoint (checkpoint.pt)")
    p.add_argument("out", metavar="FILE", nargs="?", help=argparse.SUPPRESS)  # old positional form
    p.add_argument("-o", "--output", metavar="FILE", help="the model file to write (required)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument("--input-size", type=input_size, metavar="C,H,W",
                   help="input shape to export for (default: the one the checkpoint was "
                        "trained on)")
    p.set_defaults(func=_export)

    p = sub.add_parser("run", help="test accuracy of a model file through the torch-free runtime "
                                   "(the same as lowbit eval FILE)")
    p.add_argument("file", metavar="FILE", help="a lowbit model file (lowbit export / compress)")
    _add_file_eval_args(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("export-c", help="a model file as portable C99 for microcontrollers: "
                                        "const weights, a static arena, lowbit_predict() "
                                        "(docs/deploy.md)")
    p.add_argument("file", metavar="MODEL", help="a lowbit model file (lowbit export)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the C files")
    p.add_argument("--prefix", default="lowbit", help="C name prefix: PREFIX_predict, "
                                                      "PREFIX_model.{h,c} (default: lowbit)")
    p.set_defaults(func=_export_c)


def _add_file_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    p.add_argument("--threads", type=positive_int, default=1, help="kernel / torch CPU threads")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="only the first N test images")


def _export(args: argparse.Namespace) -> int:
    if args.out and args.output:
        return fail("export", f"give the output file once: -o {args.output} or {args.out}")
    out = args.output or args.out
    if not out:
        return fail("export", "-o/--output FILE is required (the model file to write)")
    if torch_missing():
        return fail("export", TORCH_HINT)
    from lowbit.train.export import export_checkpoint
    return export_checkpoint(args.checkpoint, out, input_shape=args.input_size,
                             overwrite=args.overwrite)


def _export_c(args: argparse.Namespace) -> int:
    from lowbit.cexport.export import command
    return command(args)


def _run(args: argparse.Namespace) -> int:
    from lowbit.runtime.evaluate import file_command
    return file_command(args.file, args.data, args.threads, args.limit, cmd="run")


def _bench_kernels(args: argparse.Namespace) -> int:
    from lowbit.bench.kernels import main as run
    return run(json_path=args.json, repeats=args.repeats, kernel=args.kernel, variant=args.variant,
               portable=not args.no_portable)


DATA_HELP = ("'fashion-mnist' (searched in $LOWBIT_DATA, /usr/share/datasets/fashion-mnist), "
             "a folder of IDX files (MNIST names), a .npz file (x, y) or a folder with "
             "train.npz / test.npz, or an image folder (CLASS/IMAGE, optionally under train/ "
             "and test/)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-arg", action="append", default=[], type=key_value,
                   metavar="KEY=VALUE", help="an argument of the model's builder (repeatable), "
                   "typed by its signature, e.g. width=0.5, order=CBAP, first_layer=bitplane")
    p.add_argument("--input-size", type=input_size, metavar="C,H,W",
                   help="input shape (default: the data's; image folders are resized to it)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a registered model or your own; checkpoint every epoch")
    p.add_argument("--model", required=True, type=model_ref, metavar="NAME|MODULE:FUNCTION",
                   help="a registered model (lenet300, lenet5, the recipes of lowbit.train: see "
                        "lowbit summary NAME) or package.module:function returning an nn.Module")
    _add_model_args(p)
    p.add_argument("--bits", default=None, metavar="W,A,G",
                   help="weight, activation, gradient bits of dorefa-lenet5, e.g. 1,2,6 or 2,2,32")
    p.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for checkpoint.pt, history.json, result.json")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: the recipe's")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the recipe's")
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    p.add_argument("--val-size", type=nonneg_int, default=None, metavar="N",
                   help="training images held out for validation (default: min(5000, 10%% of "
                        "them))")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start over even if --out has a checkpoint")
    p.add_argument("--seed", type=int, default=None, help="default 0 (a resumed run keeps its own)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when torch sees it, else CPU")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--dsd", default=None, metavar="SPARSITY",
                   help="Dense-Sparse-Dense training (Han et al. 2017): dense for the first third "
                        "of the epochs, pruned to SPARSITY (0.5, or per layer fc1=0.6,conv=0.3) "
                        "for the second, dense again for the last; float layers only")
    p.add_argument("--augment", default=None, metavar="SPEC",
                   help="random training augmentation: flip (horizontal, p=0.5), shift=S "
                        "(translate by up to S pixels), or both: flip,shift=2 (default: none)")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from the weights of this checkpoint of the same model, with a "
                        "fresh optimizer and schedule (fine-tuning)")
    p.add_argument("--teacher", default=None, metavar="CHECKPOINT",
                   help="knowledge distillation: also learn this trained model's soft labels "
                        "(a checkpoint taking the same images, e.g. a float twin)")
    p.add_argument("--distill", type=float, default=None, metavar="A",
                   help="with --teacher: weight of the soft-label term, loss = (1-A) CE + "
                        "A T^2 KL (default 0.5; 1 = soft labels only)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="with --teacher: softmax temperature of both models' logits (default 4)")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="test accuracy of a checkpoint (torch) or of a model file "
                                    "(the runtime, like lowbit run)")
    p.add_argument("target", metavar="CHECKPOINT|FILE")
    _add_file_eval_args(p)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="checkpoints only")
    p.set_defaults(func=_eval, threads=None)

    p = sub.add_parser("summary", help="per-layer shapes, bits, bytes, MACs and BOPs of a model "
                                       "file, a checkpoint or a model")
    p.add_argument("target", metavar="FILE|CHECKPOINT|NAME|MODULE:FUNCTION")
    _add_model_args(p)
    _add_energy_args(p)
    p.set_defaults(func=_summary)

    p = sub.add_parser("demo", help="the main job end to end: train float / binary / "
                                    "Deep-Compression LeNet-5 and a binary VGG-small, run them "
                                    "in the runtime, track objects in a synthetic video with a "
                                    "binary detector, benchmark everything against PyTorch and "
                                    "ONNX Runtime, write a report")
    p.add_argument("--epochs", type=positive_int, default=2, help="training epochs per model")
    p.add_argument("--train-size", type=positive_int, default=20000, help="training images (subset)")
    p.add_argument("--repeats", type=positive_int, default=15, help="benchmark repeats")
    p.add_argument("--no-compress", action="store_true", help="leave out Deep Compression")
    p.add_argument("--no-vgg", action="store_true", help="leave out the binary VGG-small")
    p.add_argument("--no-detect", action="store_true",
                   help="leave out the video stage (synthetic videos, binary detector, "
                        "tracking, speed)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (1000 images, 1 epoch)")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="report, models, runs")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="training device")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    p.set_defaults(func=_demo)


def _train(args: argparse.Namespace) -> int:
    if torch_missing():
        return fail("train", TORCH_HINT)
    from lowbit.train.commands import train
    return train(args.model, args.data, args.epochs, args.out, resume=args.resume, seed=args.seed,
                 device=args.device, lr=args.lr, batch_size=args.batch_size, threads=args.threads,
                 val_size=args.val_size, overwrite=args.overwrite, model_args=args.model_arg,
                 model_kwargs={"bits": args.bits} if args.bits is not None else None,
                 input_size=args.input_size, dsd=args.dsd, augment=args.augment,
                 init=args.init, teacher=args.teacher, distill=args.distill,
                 temperature=args.temperature)


def _eval(args: argparse.Namespace) -> int:
    from lowbit.codec import is_container
    if is_container(args.target):  # a lowbit model file: runs without torch
        from lowbit.runtime.evaluate import file_command
        return file_command(args.target, args.data, args.threads or 1, args.limit, cmd="eval")
    if not os.path.exists(args.target):
        return fail("eval", f"{args.target}: no such file (expected a checkpoint or a lowbit "
                            f"model file)")
    if torch_missing():
        return fail("eval", TORCH_HINT)
    from lowbit.train.commands import eval_checkpoint
    return eval_checkpoint(args.target, args.data, device=args.device, threads=args.threads,
                           limit=args.limit)


def _add_energy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy-table", metavar="JSON", default=None,
                   help="per-operation energy costs in pJ (keys of lowbit.bench.energy.TABLE; "
                        "default Horowitz ISSCC 2014, 45 nm)")
    p.add_argument("--cache-kb", type=float, default=None, metavar="KB",
                   help="tensors up to this size are read from SRAM, larger ones from DRAM "
                        "(default 8, the SRAM of the cited 5 pJ read)")


def _energy_table(args: argparse.Namespace):
    from lowbit.bench.energy import load_table
    return load_table(args.energy_table, args.cache_kb)


def _summary(args: argparse.Namespace) -> int:
    from lowbit.codec import is_container
    try:
        table = _energy_table(args)
    except ValueError as e:
        return fail("summary", str(e))
    if is_container(args.target):  # a lowbit model file: no torch
        if args.input_size or args.model_arg:
            return fail("summary", f"{args.target}: a model file has a fixed input shape and "
                                   f"built model; --input-size / --model-arg are for "
                                   f"checkpoints and model names")
        from lowbit.bench.energy import summary_extras
        from lowbit.runtime.summary import summary_command
        return summary_command(args.target, summary_extras(table))
    if torch_missing():
        return fail("summary", TORCH_HINT)
    from lowbit.train.commands import summary
    rc = summary(args.target, args.input_size, args.model_arg)
    if rc == 0:
        from lowbit.bench.energy import checkpoint_lines
        for line in checkpoint_lines(args.target, args.input_size, args.model_arg, table):
            print(line)
    return rc


def _demo(args: argparse.Namespace) -> int:
    if torch_missing():
        return fail("demo", TORCH_HINT)
    from lowbit.demo import main as run
    return run(out=args.out, epochs=args.epochs, device=args.device, threads=args.threads,
               data=args.data, train_size=args.train_size, repeats=args.repeats,
               compress=not args.no_compress, quick=args.quick, detect=not args.no_detect,
               vgg=not args.no_vgg)


def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="Deep Compression: prune, share weights, Huffman-code "
                                         "a float checkpoint into a model file")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a float training checkpoint")
    p.add_argument("-o", "--output", metavar="FILE", help="the model file to write (required)")
    p.add_argument("--out", dest="output_old", metavar="FILE", help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--json", metavar="REPORT", help="write the report (ratios, accuracies) here")
    p.add_argument("--prune", metavar="SPEC", help="sparsity per layer: 0.9 | fc1=0.92,conv=0.5 "
                   "| 1.5std (threshold q*std); default: the model's preset (lowbit.train.compress)")
    p.add_argument("--share-bits", metavar="SPEC", help="weight-sharing bits per layer: 5 | "
                   "conv=8,fc=5 | fc1=6 (0 = no sharing); default: the model's preset")
    p.add_argument("--index-bits", metavar="SPEC", help="relative-index bits per layer "
                   "(default: the preset's; 5 for LeNets, else conv=8,fc=5)")
    p.add_argument("--huffman", action="store_true", help="write the Huffman-coded file (P+Q+H)")
    p.add_argument("--schedule", default="gradual", choices=["gradual", "iterative"],
                   help="gradual: one retraining run, sparsity rising every 50 steps to the "
                        "target at 60%% of it; iterative: --prune-steps prune->retrain rounds")
    p.add_argument("--prune-steps", type=positive_int, default=3, help="iterative: prune->retrain rounds")
    p.add_argument("--prune-epochs", type=positive_int, default=None,
                   help="retraining epochs (gradual: in all; iterative: per round); default: preset")
    p.add_argument("--share-epochs", type=nonneg_int, default=None,
                   help="centroid fine-tuning epochs; default: preset")
    p.add_argument("--lr-prune", type=float, default=1e-3, help="learning rate while pruning")
    p.add_argument("--lr-share", type=float, default=1e-4,
                   help="learning rate of the centroid fine-tuning")
    p.add_argument("--init", default="linear", choices=["linear", "random", "density"],
                   help="k-means initialisation")
    p.add_argument("--codebook-dtype", default=None, choices=["f4", "f2"],
                   help="codebook storage; default: preset")
    p.add_argument("--bias-dtype", default=None, choices=["f4", "f2"],
                   help="bias storage; default: preset")
    p.add_argument("--sensitivity", metavar="DIR", help="also write a per-layer pruning "
                   "sensitivity table + PNG here")
    p.add_argument("--seed", type=int, default=0, help="k-means and retraining seed")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--data", default=None, help="default: the data the checkpoint was trained "
                   "on (recorded by lowbit train), else fashion-mnist. " + DATA_HELP)
    p.add_argument("--low-rank", metavar="SPEC", default=None,
                   help="low-rank approximation first (energy=0.9 | ratio=4 | rank=16, "
                        "optionally ,conv=tucker|spatial ,layers=fc1+conv2; see lowbit lowrank), "
                        "fine-tuned, then pruning / sharing of the factors; layer specs naming a "
                        "decomposed layer apply to its factors")
    p.add_argument("--low-rank-epochs", type=nonneg_int, default=2,
                   help="fine-tuning epochs after the decomposition (lr: --lr-prune)")
    p.set_defaults(func=_compress)

    p = sub.add_parser("lowrank", help="low-rank approximation (truncated SVD of dense layers, "
                                        "Tucker-2 or spatial k x 1 + 1 x k convs) of a float "
                                        "checkpoint, fine-tuned, into a model file")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a float training checkpoint")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the model file to write")
    p.add_argument("--rank", default="energy=0.9", metavar="SPEC",
                   help="energy=E (keep E of the squared singular values) | ratio=K (factors "
                        "1/K of each layer's weights) | rank=N; optionally ,conv=tucker|spatial "
                        "and ,layers=fc1+conv2 (default: every conv / dense layer with >= 1000 "
                        "weights except the last)")
    p.add_argument("--epochs", type=nonneg_int, default=2, help="fine-tuning epochs")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate (Adam, cosine)")
    p.add_argument("--json", metavar="REPORT", help="write the report here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--data", default=None, help="default: the data the checkpoint was trained "
                   "on. " + DATA_HELP)
    p.set_defaults(func=_lowrank)


def _compress(args: argparse.Namespace) -> int:
    out = args.output or args.output_old
    if args.output and args.output_old:
        return fail("compress", "give the output file once: -o/--output FILE")
    if not out:
        return fail("compress", "-o/--output FILE is required (the model file to write)")
    if args.output_old:
        print("lowbit compress: warning: --out FILE is deprecated; use -o/--output FILE",
              file=sys.stderr)
    if torch_missing():
        return fail("compress", TORCH_HINT)
    from lowbit.runtime.evaluate import file_accuracy
    from lowbit.train.compress import main as run
    return run(args.checkpoint, out, args.json, prune=args.prune, bits=args.share_bits,
               index_bits=args.index_bits, huffman=args.huffman, schedule=args.schedule,
               prune_steps=args.prune_steps,
               prune_epochs=args.prune_epochs, share_epochs=args.share_epochs,
               lr_prune=args.lr_prune, lr_share=args.lr_share, init=args.init,
               codebook_dtype=args.codebook_dtype, bias_dtype=args.bias_dtype,
               sensitivity=args.sensitivity, seed=args.seed, threads=args.threads,
               data=args.data, file_accuracy=file_accuracy, low_rank=args.low_rank,
               low_rank_epochs=args.low_rank_epochs)


def _lowrank(args: argparse.Namespace) -> int:
    if torch_missing():
        return fail("lowrank", TORCH_HINT)
    from lowbit.runtime.evaluate import file_accuracy
    from lowbit.train.lowrank import main as run
    return run(args.checkpoint, args.output, args.rank, json_path=args.json,
               file_accuracy=file_accuracy, epochs=args.epochs, lr=args.lr, seed=args.seed,
               threads=args.threads, data=args.data)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Markdown report + PNG plots (accuracy vs throughput, "
                                      "latency vs batch, size, per-layer time) from bench JSON")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="JSON files or folders of them")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--results-md", metavar="MD", default=None,
                   help="also regenerate the marked section of this Markdown file "
                        "(e.g. docs/results.md) from the same JSON")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from lowbit.bench.report import main as run
    return run(args.runs, args.out, args.results_md)


def _bench_baselines(args: argparse.Namespace) -> int:
    from lowbit.bench.baseline_bench import run
    return run(args)


def _add_baselines(bsub) -> None:
    from lowbit.bench.baseline_bench import add_arguments  # numpy only at import time
    p = bsub.add_parser("baselines", help="PyTorch fp32 vs ONNX Runtime fp32 vs ORT int8 "
                                          "(static QDQ) on a model's float twin")
    add_arguments(p)
    p.set_defaults(func=_bench_baselines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lowbit", description="Train, compress, export and run binary / "
                    "low-bit vision models.  lowbit COMMAND --help shows a command's options.")
    parser.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_bench(sub)
    _add_compress(sub)
    _add_runtime(sub)
    _add_report(sub)
    from lowbit.commands.detect import add_detect, add_track
    add_detect(sub)
    add_track(sub)
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
