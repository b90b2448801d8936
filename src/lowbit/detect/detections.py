"""``Detections``: the boxes of one frame, the plain data every piece passes on."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Detections"]


@dataclass
class Detections:
    """Boxes of one frame, in pixels of that frame.

    ``xyxy`` float32 (k, 4) as x1, y1, x2, y2 (x2, y2 exclusive); ``confidence`` float32 (k,);
    ``class_id`` int64 (k,); ``tracker_id`` int64 (k,) or None before tracking."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        self.xyxy = np.asarray(self.xyxy, np.float32).reshape(-1, 4)
        k = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, np.float32).reshape(k)
        self.class_id = np.asarray(self.class_id, np.int64).reshape(k)
        if self.tracker_id is not None:
            self.tracker_id = np.asarray(self.tracker_id, np.int64).reshape(k)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        """A subset (boolean mask, indices or slice), ``data`` arrays sliced alike."""
        tid = None if self.tracker_id is None else self.tracker_id[index]
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index], tid,
                          {k: v[index] for k, v in self.data.items()})

    @property
    def bottom_center(self) -> np.ndarray:
        """float32 (k, 2): the middle of each box's bottom edge (where it touches the ground)."""
        return np.stack([(self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, self.xyxy[:, 3]], axis=1)
