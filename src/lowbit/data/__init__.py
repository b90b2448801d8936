"""Data: IDX / Fashion-MNIST, npz files, image folders, seeded splits, input normalisation.

numpy (and Pillow, for image folders) only: this package never imports torch, so the torch-free
runtime can read data too.

``load(split, root=None)`` is the one entry point every command uses; it picks the reader from
what ``root`` is (first match wins):

1. ``None``: Fashion-MNIST IDX files from ``$LOWBIT_DATA`` or ``/usr/share/datasets/fashion-mnist``;
2. a ``.npz`` file (arrays ``x``, ``y``, optional ``classes``): the split asked for;
3. a folder with ``train.npz`` and / or ``test.npz``;
4. a folder with IDX files (Fashion-MNIST / MNIST names; a split's two files are enough);
5. an image-folder tree ``<class>/<image>`` or ``train/<class>/...`` + ``test/<class>/...``.

IDX data keeps its ``(N, 28, 28)`` uint8 shape; npz and image folders give uint8
``(N, C, H, W)``; labels are int64.  ``describe(root)`` says what was found without decoding
images.  The details of each format are in :mod:`.fashion`, :mod:`.npz` and :mod:`.folder`.
"""
from .batches import batch_order, iter_batches
from .fashion import CLASSES, NUM_CLASSES, find_root, load_files
from .folder import load_image_folder, read_image_folder
from .idx import DataError, read_idx, write_idx
from .normalization import Normalization
from .npz import load_npz, read_npz
from .sources import DataInfo, data_kind, describe, load, load_with_classes
from .split import subset, train_val_split

__all__ = ["DataError", "read_idx", "write_idx", "find_root", "load", "load_files", "CLASSES",
           "NUM_CLASSES", "train_val_split", "subset", "batch_order", "iter_batches",
           "Normalization", "load_with_classes", "describe", "DataInfo", "data_kind",
           "read_npz", "load_npz", "read_image_folder", "load_image_folder"]

# detection data (the video application): YOLO / COCO readers, video I/O, synthetic video.
# OpenCV (the ``detect`` extra) is imported only when a video is read, written or rendered.
from .detset import DetectionSet  # noqa: E402
from .yolo import load_yolo  # noqa: E402
from .coco import load_coco  # noqa: E402
from .video import VideoWriter, open_video  # noqa: E402
from .synth import make_video  # noqa: E402

__all__ += ["DetectionSet", "load_yolo", "load_coco", "open_video", "VideoWriter", "make_video"]
