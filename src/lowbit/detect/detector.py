"""``Detector``: a detector model file run by the torch-free runtime, frames in, boxes out.

    det = Detector("runs/det/detector.lbm", threads=2, threshold=0.3)
    dets = det(frames)          # uint8 (N, C, H, W), or one frame (H, W, C) / (H, W)
    dets[0].xyxy, dets[0].confidence, dets[0].class_id, dets[0].data["class_name"]

The file is one ``lowbit.train.detect_fit`` writes: its meta says ``"task": "detect"``, the
``stride``, the class names (``classes``) and which graph outputs are the heatmap logits, the
sizes and the offsets (``outputs``; default: the graph's outputs in that order).  Frames must
have the size and channel count (and channel order) the model was trained on
(``input_shape``); :func:`lowbit.detect.decode.decode` turns the maps into boxes.  A model
trained on motion data (meta ``motion`` = k) takes one more, last, channel: the gray frame k
frames earlier (:class:`lowbit.detect.pipeline.ModelFrames` stacks it from the video).

``tta=True`` (test-time augmentation, ``--tta`` of ``lowbit track`` / ``detect eval``) also
runs each frame mirrored left-right and averages the two passes' maps, cell by cell, before
decoding (twice the detector's time).  Mirrored, grid column ``x`` is column ``w - 1 - x``
(the input width must be a multiple of the stride), sizes are unchanged, and a centre
``(x + dx) * stride`` from the left is ``W - (x' + dx') * stride``, so ``dx = 1 - dx'``.
Heatmap logits, log sizes and offsets are averaged as they are.  On six validation videos
(default binary detector): mAP@0.5 0.848 -> 0.862, MOTA 0.784 -> 0.794, speed error 10.3 ->
9.1 % (docs/results.md).
"""
from __future__ import annotations

import os

import numpy as np

from lowbit.detect.decode import decode
from lowbit.detect.detections import Detections
from lowbit.runtime.graph import Runtime

__all__ = ["Detector"]

_MAPS = ("heatmap", "size", "offset")


class Detector:
    """A loaded detector model file.  ``threads``: runtime kernel threads; ``threshold``:
    minimum score of a detection; ``topk``: most detections per frame; ``batch``: frames per
    runtime call.  Attributes: ``runtime``, ``stride``, ``classes`` (names), ``input_shape``
    (C, H, W), ``motion`` (frames between a frame and the earlier one it also takes; 0:
    none), ``meta``; ``tta``: average each frame's maps with its mirror image's (module
    docstring)."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, threshold: float = 0.3,
                 topk: int = 100, batch: int = 32, tta: bool = False):
        self.runtime = Runtime(path, threads=threads)
        self.meta = dict(self.runtime.meta)
        where = os.fspath(path)
        if self.meta.get("task") != "detect":
            raise ValueError(f"{where}: not a detector model file (meta 'task' is "
                             f"{self.meta.get('task')!r}, expected 'detect')")
        self.stride = int(self.meta.get("stride", 0))
        if self.stride < 1:
            raise ValueError(f"{where}: meta 'stride': expected a positive integer, got "
                             f"{self.meta.get('stride')!r}")
        names = self.meta.get("outputs") or dict(zip(_MAPS, self.runtime.outputs))
        missing = [m for m in _MAPS if names.get(m) not in self.runtime.outputs]
        if missing:
            raise ValueError(f"{where}: meta 'outputs': no graph output for {missing} "
                             f"(graph outputs: {self.runtime.outputs})")
        self._outputs = [names[m] for m in _MAPS]
        self.input_shape = tuple(int(v) for v in self.runtime.inputs[0]["shape"])
        self.motion = self.meta.get("motion", 0)
        if isinstance(self.motion, bool) or not isinstance(self.motion, int) or \
                self.motion < 0 or (self.motion and self.input_shape[0] not in (2, 4)):
            raise ValueError(f"{where}: meta 'motion': expected a number of frames >= 0 (> 0 "
                             f"only with 2 or 4 input channels), got {self.motion!r} with "
                             f"{self.input_shape[0]} channel(s)")
        k = int(self.runtime.shapes[self._outputs[0]][0])        # heatmap channels
        self.classes = [str(c) for c in self.meta.get("classes") or range(k)]
        if len(self.classes) != k:
            raise ValueError(f"{where}: meta 'classes': {len(self.classes)} names for {k} "
                             f"heatmap channels")
        self.threshold, self.topk, self.batch = float(threshold), int(topk), int(batch)
        if self.batch < 1:
            raise ValueError(f"batch: expected >= 1, got {batch!r}")
        self.tta = bool(tta)
        if self.tta and self.input_shape[2] % self.stride:
            raise ValueError(f"{where}: tta: the input width {self.input_shape[2]} is not a "
                             f"multiple of the stride {self.stride}, so a mirrored frame's "
                             f"grid does not fall on the frame's")

    def frames(self, frames) -> np.ndarray:
        """``frames`` as uint8 (N, C, H, W): a 4-D batch as is, one (H, W, C) frame or one gray
        (H, W) frame gets a batch axis (and its channels moved first)."""
        x = np.asarray(frames)
        if x.ndim == 2:
            x = x[None, None]
        elif x.ndim == 3:
            x = np.ascontiguousarray(x.transpose(2, 0, 1))[None]
        elif x.ndim != 4:
            raise ValueError(f"frames: expected (N, C, H, W), (H, W, C) or (H, W), got shape "
                             f"{x.shape}")
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"frames: expected {self.input_shape[0]} channel(s) of "
                             f"{self.input_shape[2]}x{self.input_shape[1]} pixels (C, H, W) = "
                             f"{self.input_shape}, got {x.shape[1:]}")
        return x

    def maps(self, frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw outputs (heatmap_logits (N, K, h, w), size (N, 2, h, w), offset (N, 2, h, w))
        of uint8 frames."""
        x = self.frames(frames)
        maps = self._run(x)
        if not self.tta:
            return maps
        hm, size, off = (m[..., ::-1] for m in self._run(np.ascontiguousarray(x[..., ::-1])))
        off = np.concatenate([1 - off[:, :1], off[:, 1:]], axis=1)      # dx = 1 - dx'
        return tuple(((a + b) / 2).astype(a.dtype) for a, b in zip(maps, (hm, size, off)))

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [self.runtime.run(x[i:i + self.batch]) for i in range(0, len(x), self.batch)]
        return tuple(np.concatenate([p[name] for p in parts]) for name in self._outputs)

    def __call__(self, frames) -> list[Detections]:
        """One :class:`Detections` per frame, in input pixels; ``data["class_name"]`` holds
        the class names."""
        hm, size, offset = self.maps(frames)
        dets = decode(hm, size, offset, self.stride, self.threshold, self.topk,
                      image_size=self.input_shape[1:])
        names = np.asarray(self.classes, dtype=object)
        for d in dets:
            d.data["class_name"] = names[d.class_id]
        return dets
