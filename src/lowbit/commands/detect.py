"""``lowbit detect synth | train | eval | autolabel`` and ``lowbit track``: the video
application's command line.  Handlers import their package lazily (no torch for synth,
autolabel, eval and track; ``detect train`` needs it)."""
from __future__ import annotations

import argparse

from lowbit.cliargs import positive_int

__all__ = ["add_detect", "add_track"]


def _fraction(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}")
    return v


def _positive(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return v


def _shift(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 0.5), got {value!r}") from None
    if not 0.0 <= v < 0.5:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 0.5), got {value!r}")
    return v


def _size(value: str) -> tuple[int, int]:
    parts = value.lower().replace(",", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 160x120, got {value!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"expected WxH of at least 16x16, got {value!r}")
    return w, h


def _run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``track`` and ``detect eval`` (one meaning each)."""
    p.add_argument("--detector", default="model", choices=["model", "mog2"],
                   help="the lowbit model file (--model), or OpenCV MOG2 background subtraction "
                        "(the traditional method, for comparison)")
    p.add_argument("--threads", type=positive_int, default=1, help="runtime kernel threads")
    p.add_argument("--threshold", type=_fraction, default=0.1, help="detector score cut")
    p.add_argument("--track-thresh", type=_fraction, default=0.5,
                   help="score above which a detection can start or keep a track (ByteTrack's "
                        "first stage); lower it for an early model")
    p.add_argument("--max-speed", type=_positive, default=60.0, help="clamp speeds (m/s)")
    p.add_argument("--no-colour", action="store_true",
                   help="the tracker ignores the boxes' colours (by default a track prefers "
                        "boxes of its colour, and a lost one refuses other colours)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: also run each frame mirrored and average the "
                        "two passes' maps (twice the detector's time; model detector only)")
    p.add_argument("--limit", type=positive_int, default=None, help="first N frames only")


def add_detect(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("detect", help="the video application: synthetic data, detector "
                                      "training, evaluation, labels from a static camera")
    dsub = d.add_subparsers(dest="detect_cmd", required=True, metavar="COMMAND")

    p = dsub.add_parser("synth", help="a synthetic moving-object video with exact ground truth "
                                      "(YOLO labels, MOT gt.txt, calibration, true speeds)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--frames", type=positive_int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_size, default=(160, 120), metavar="WxH")
    p.add_argument("--fps", type=_positive, default=30.0)
    p.add_argument("--channels", type=int, choices=[1, 3], default=3)
    p.add_argument("--classes", default=None, help="comma-separated Fashion-MNIST class names")
    p.add_argument("--objects", type=positive_int, default=None,
                   help="default: 2 + the video's length in seconds, at least 3")
    p.add_argument("--static", action="store_true", help="no lighting change, noise or blur")
    p.add_argument("--val-fraction", type=_fraction, default=0.0,
                   help="the last frames go to images/val")
    p.add_argument("--sprites", default="auto", choices=["auto", "fashion", "shapes"])
    p.add_argument("--videos", type=positive_int, default=None, metavar="N",
                   help="write a training set of N videos instead (seeds SEED..SEED+N-1, each "
                        "its own scene, noise and lighting; images/val from --val-videos more "
                        "seeds); evaluate on a seed outside them")
    p.add_argument("--every", type=positive_int, default=5, metavar="K",
                   help="with --videos: keep every K-th frame of each video")
    p.add_argument("--val-videos", type=int, default=2, metavar="V",
                   help="with --videos: validation videos (seeds after the training ones)")
    p.add_argument("--motion", type=int, default=0, metavar="K",
                   help="with --videos: also write each image's frame K frames earlier (gray, "
                        "motion/) for a detector that sees motion; 0 = none")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_synth)

    p = dsub.add_parser("train", help="train a detector (binary backbone by default) on a "
                                      "YOLO-format folder; checkpoint every epoch; export")
    p.add_argument("--data", required=True, metavar="DIR", nargs="+",
                   help="YOLO folder(s) (data.yaml); several are joined")
    p.add_argument("--model", default=None, help="backbone: bnn (default), xnor, bwn, twn, "
                                                  "dorefa:W,A,G, float")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="checkpoint.pt, history.json, detector.lbm go here")
    p.add_argument("--epochs", type=positive_int, default=None, help="default 14")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=_positive, default=None)
    p.add_argument("--width", type=positive_int, default=None,
                   help="backbone channels at stride 4, doubled at stride 8 (default 48)")
    p.add_argument("--stride", type=int, choices=[4, 8, 16], default=None)
    p.add_argument("--blocks", default=None,
                   help="binary blocks per stage: N for every stage or one count per stage "
                        "(e.g. 1,3)")
    p.add_argument("--stem-pool", action=argparse.BooleanOptionalAction, default=None,
                   help="max-pool after the stem conv (stages start at stride 4)")
    p.add_argument("--fpn", action=argparse.BooleanOptionalAction, default=None,
                   help="one more stage at 2 x stride, upsampled and concatenated back for "
                        "the head (FPN-lite: head at --stride with the coarser context)")
    p.add_argument("--head", choices=["float", "quant"], default=None,
                   help="the head's 3x3 conv: float or the backbone's quantization")
    p.add_argument("--head-channels", type=int, default=None,
                   help="channels of the head's 3x3 conv (0: the backbone's last width)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default on)")
    p.add_argument("--shift", type=_shift, default=None, metavar="FRACTION",
                   help="random translations up to this fraction of the image size")
    p.add_argument("--scale", type=_fraction, default=None, metavar="S",
                   help="random zoom in [1/(1+S), 1+S] about the image centre")
    p.add_argument("--photometric", type=_shift, default=None, metavar="P",
                   help="random contrast 1+-P, brightness +-P (channel std units) and noise "
                        "up to P/3")
    p.add_argument("--jpeg", type=_fraction, default=None, metavar="P",
                   help="round-trip this share of the training images through JPEG at a "
                        "random quality 40-95 (compressed-video artefacts; default 0)")
    p.add_argument("--class-loss", type=float, default=None, metavar="W",
                   help="weight of a softmax cross-entropy across the classes at each "
                        "object's centre cell, added to the focal loss (default 0: off)")
    p.add_argument("--neighbours", type=float, default=None, metavar="W",
                   help="also train box size and offset at the 8 cells around each object's "
                        "centre cell, with this weight, so a heatmap peak one cell off still "
                        "gives a well-placed box (default 0: the centre cell only)")
    p.add_argument("--teacher", default=None, metavar="CHECKPOINT",
                   help="knowledge distillation: also learn this trained detector's heatmap "
                        "(a checkpoint of the same classes, stride and input size, e.g. the "
                        "float twin)")
    p.add_argument("--distill", type=float, default=None, metavar="A",
                   help="with --teacher: weight of the soft term, heatmap loss = (1-A) focal + "
                        "A T^2 KL (default 0.5; 1 = the teacher's heatmap only)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="with --teacher: temperature of both models' heatmap logits (default 1)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_train)

    p = dsub.add_parser("eval", help="detect + track a synthetic folder's video: COCO mAP, "
                                     "MOTA / IDF1, speed error, fps")
    p.add_argument("--model", default=None, metavar="FILE", help="detector model file")
    p.add_argument("--data", required=True, metavar="DIR", help="a `detect synth` folder")
    p.add_argument("--out", default=None, metavar="DIR", help="keep the run's files here")
    _run_options(p)
    p.set_defaults(func=_eval)

    p = dsub.add_parser("autolabel", help="YOLO pseudo-labels of moving objects from a static "
                                          "camera (background subtraction)")
    p.add_argument("video", metavar="VIDEO", help="a video file or a camera index")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--method", default="mog2", choices=["mog2", "knn"])
    p.add_argument("--min-area", type=positive_int, default=20, help="smallest blob (pixels)")
    p.add_argument("--warmup", type=int, default=30, help="frames that build the background")
    p.add_argument("--max-frames", type=positive_int, default=None)
    p.add_argument("--name", default="object", help="the class name")
    p.add_argument("--motion", type=int, default=0, metavar="K",
                   help="also write each frame's frame K frames earlier (gray, motion/) for a "
                        "detector that sees motion; 0 = none")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_autolabel)


def add_track(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track", help="detect and track objects in a video and measure their "
                                     "ground speed: annotated video, tracks.csv, summary.json")
    p.add_argument("video", metavar="VIDEO", help="a video file, or a camera index")
    p.add_argument("--model", default=None, metavar="FILE", help="detector model file")
    p.add_argument("--calib", default=None, metavar="FILE",
                   help="calibration JSON (homography, >= 4 point pairs, or metres_per_pixel)")
    p.add_argument("--out", default="runs/track", metavar="DIR")
    p.add_argument("--unit", default="km/h", choices=["km/h", "m/s", "mph"])
    p.add_argument("--timestamps", default="auto", help="auto (the container's, or a "
                   "timestamps.json beside the video) or a file")
    p.add_argument("--no-video", action="store_true", help="skip the annotated video")
    p.add_argument("--batch", type=positive_int, default=8, help="frames per detector call")
    _run_options(p)
    p.set_defaults(func=_track)


def _synth(a: argparse.Namespace) -> int:
    from lowbit.data.synth import synth_command
    return synth_command(a.out, a.frames, a.seed, a.size, a.fps, channels=a.channels,
                         classes=a.classes, objects=a.objects, static=a.static,
                         val_fraction=a.val_fraction, sprites=a.sprites, overwrite=a.overwrite,
                         videos=a.videos, every=a.every, val_videos=a.val_videos,
                         motion=a.motion)


def _train(a: argparse.Namespace) -> int:
    from lowbit.cliargs import TORCH_HINT, fail, torch_missing
    if torch_missing():
        return fail("detect train", TORCH_HINT)
    from lowbit.train.detect_command import train_command
    blocks = a.blocks
    if blocks is not None and blocks.strip().isdigit():
        blocks = int(blocks)
    return train_command(a.data, a.model, a.out, a.epochs, a.batch_size, a.lr, a.width,
                         a.stride, blocks, a.threads, a.resume, a.overwrite, a.seed,
                         flip=a.flip, shift=a.shift, scale=a.scale, photometric=a.photometric,
                         jpeg=a.jpeg, head=a.head, head_channels=a.head_channels, stem_pool=a.stem_pool,
                         fpn=a.fpn, class_loss=a.class_loss, neighbours=a.neighbours,
                         teacher=a.teacher,
                         distill=a.distill, temperature=a.temperature)


def _eval(a: argparse.Namespace) -> int:
    from lowbit.detect.metrics import eval_command
    return eval_command(a.model, a.data, a.threads, a.detector, a.threshold, a.max_speed,
                        a.track_thresh, a.out, a.limit, colour=not a.no_colour, tta=a.tta)


def _autolabel(a: argparse.Namespace) -> int:
    from lowbit.detect.autolabel import autolabel_command
    return autolabel_command(a.video, a.out, method=a.method, min_area=a.min_area,
                             warmup=a.warmup, max_frames=a.max_frames, name=a.name,
                             motion=a.motion, overwrite=a.overwrite)


def _track(a: argparse.Namespace) -> int:
    from lowbit.detect.pipeline import track_command
    return track_command(a.video, a.model, a.out, a.calib, a.threads, a.threshold, a.max_speed,
                         a.detector, a.unit, a.timestamps, a.limit, a.no_video, a.batch,
                         a.track_thresh, colour=not a.no_colour, tta=a.tta)
