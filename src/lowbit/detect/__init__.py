"""lowbit.detect: the application -- detect, localise and track moving objects and measure
their speed from video, with a (binary) detector running on the torch-free runtime.

Plain data between small pieces (supervision / ByteTrack style):

    frames (uint8) -> Runtime -> decode -> Detections -> Tracker -> tracks -> Calibration
    (image -> ground plane) -> speed per track

Never imports torch: the detector's model and training live in ``lowbit.train.detector``.
"""
from lowbit.detect.detections import Detections

__all__ = ["Detections"]
