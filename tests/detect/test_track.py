"""Tracker: identities through a crossing with an occlusion gap, real time steps, the
second (low-score) association stage, and removal of long-lost tracks."""
import numpy as np
import pytest

pytest.importorskip("scipy")

from lowbit.detect.detections import Detections
from lowbit.detect.track import KalmanBoxFilter, Tracker, box_iou


def _box(cx, cy, w=40, h=80):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _crossing(n=60, gap=range(28, 34), jitter=0.0, seed=0):
    """Object 0 moves right, object 1 left, crossing at frame 30; object 1 is hidden behind
    object 0 (no detection) during ``gap``.  Yields (t, Detections, truth ids)."""
    rng = np.random.default_rng(seed)
    t = 0.0
    for f in range(n):
        boxes, ids = [_box(50 + 5 * f, 200)], [0]
        if f not in gap:
            boxes.append(_box(350 - 5 * f, 205))
            ids.append(1)
        boxes = np.array(boxes) + rng.normal(0, jitter, (len(boxes), 4))
        yield t, Detections(boxes, np.full(len(ids), 0.9), np.zeros(len(ids))), ids
        t += 1 / 30


def _run(tracker, frames, use_time=True):
    seen = {}                              # truth id -> set of tracker ids
    for t, dets, ids in frames:
        out = tracker.update(dets, t if use_time else None)
        for box, tid in zip(out.xyxy, out.tracker_id):
            truth = ids[int(np.argmax(box_iou(box[None], dets.xyxy)[0]))]
            seen.setdefault(truth, set()).add(int(tid))
    return seen


@pytest.mark.parametrize("jitter", [0.0, 1.5])
def test_identities_kept_through_crossing_and_occlusion(jitter):
    seen = _run(Tracker(frame_rate=30), _crossing(jitter=jitter))
    assert len(seen[0]) == 1 and len(seen[1]) == 1
    assert seen[0] != seen[1]


def test_real_time_steps_bridge_dropped_frames():
    """Six frames missing from the video (the times jump by 7/30 s): with the real times the
    predicted boxes land on the objects again; a one-nominal-frame step would miss them."""
    def frames():
        for f in [*range(20), *range(26, 50)]:
            boxes = [_box(50 + 8 * f, 100), _box(500 - 8 * f, 300)]
            yield f / 30, Detections(boxes, [0.9, 0.9], [0, 0]), [0, 1]
    seen = _run(Tracker(frame_rate=30), frames())
    assert len(seen[0]) == 1 and len(seen[1]) == 1 and seen[0] != seen[1]
    seen = _run(Tracker(frame_rate=30, recover_gate=0), frames(), use_time=False)
    assert len(seen[0]) == 2            # the nominal step loses the object (IoU stages only)
    seen = _run(Tracker(frame_rate=30), frames(), use_time=False)
    assert len(seen[0]) == 1            # stage 3b finds it again by its centre


def _jump(cls_after=0, size=12, n_before=15, missing=6, step=1.0, jump=8.0):
    """A small object (size x size px) moves right, is missed for ``missing`` frames and comes
    back ``jump`` px further than its motion predicts (a detector's centre error on a small
    object): its predicted box no longer overlaps it."""
    x = 100.0
    for f in range(n_before + missing + 10):
        x += step
        if n_before <= f < n_before + missing:
            yield f / 30, Detections(np.zeros((0, 4)), [], []), []
            continue
        cx = x + (jump if f >= n_before + missing else 0.0)
        cls = cls_after if f >= n_before + missing else 0
        yield f / 30, Detections([_box(cx, 100, size, size)], [0.9], [cls]), [0]


def test_lost_small_object_is_recovered_by_its_centre():
    assert len(_run(Tracker(frame_rate=30, recover_gate=0), _jump())[0]) == 2
    assert len(_run(Tracker(frame_rate=30), _jump())[0]) == 1          # gate 1 box size
    assert len(_run(Tracker(frame_rate=30, recover_gate=0.5), _jump())[0]) == 2
    # another class at the same place is another object: a new track
    assert len(_run(Tracker(frame_rate=30), _jump(cls_after=1))[0]) == 2
    # too far (2 box sizes) is refused
    assert len(_run(Tracker(frame_rate=30), _jump(jump=24.0))[0]) == 2


def test_recover_gate_must_not_be_negative():
    with pytest.raises(ValueError, match="recover_gate"):
        Tracker(recover_gate=-1)


def test_low_score_boxes_keep_tracks_alive_but_do_not_start_them():
    tr = Tracker(frame_rate=30, track_thresh=0.5, low_thresh=0.1)
    first = tr.update(Detections([_box(100, 100)], [0.9], [0]), 0.0)
    assert first.tracker_id.tolist() == [1]
    for f in range(1, 10):          # confidence drops (occluded): the second stage matches it
        out = tr.update(Detections([_box(100 + 3 * f, 100)], [0.3], [0]), f / 30)
        assert out.tracker_id.tolist() == [1]
    lone = tr.update(Detections([_box(100 + 30, 100), _box(400, 400)], [0.3, 0.3], [0, 0]),
                     10 / 30)
    assert lone.tracker_id.tolist() == [1]      # the low-score stranger starts no track


def test_new_tracks_need_a_second_frame_and_lost_tracks_expire():
    tr = Tracker(frame_rate=10, lost_buffer=5)
    tr.update(Detections.empty(), 0.0)
    assert len(tr.update(Detections([_box(50, 50)], [0.9], [2]), 0.1)) == 0   # tentative
    out = tr.update(Detections([_box(52, 50)], [0.9], [2]), 0.2)
    assert out.tracker_id.tolist() == [1] and out.class_id.tolist() == [2]
    for k in range(3, 9):                   # 0.6 s without it > 5 frames / 10 fps
        tr.update(Detections.empty(), k / 10)
    assert tr.tracks == []
    again = [len(tr.update(Detections([_box(60, 50)], [0.9], [2]), 0.9 + k / 10))
             for k in range(2)]
    assert again == [0, 1] and tr.active_tracks[0][0] == 2     # a new id, never reused


def test_kalman_filter_learns_constant_velocity():
    kf = KalmanBoxFilter(_box(0, 0))
    for f in range(1, 30):
        kf.predict(1.0)
        kf.update(_box(4 * f, 2 * f))
    assert kf.mean[4:6] == pytest.approx([4, 2], abs=0.05)
    kf.predict(2.5)
    assert kf.box == pytest.approx(_box(4 * 31.5, 2 * 31.5), abs=0.5)


def test_time_must_not_go_backwards_and_arguments_checked():
    tr = Tracker()
    tr.update(Detections.empty(), 1.0)
    with pytest.raises(ValueError, match="backwards"):
        tr.update(Detections.empty(), 0.5)
    with pytest.raises(ValueError):
        Tracker(frame_rate=0)
    with pytest.raises(ValueError):
        Tracker(track_thresh=0.2, low_thresh=0.3)


def _bounce(n=40, meet=20):
    """Objects of class 0 and 1 approach along one line (1.5 px per frame), meet at frame
    ``meet`` (the same box) and turn back: motion alone says they passed through each other;
    the IoU of the wrong pairing beats the right one's by less than the class penalty."""
    for f in range(n):
        d = 1.5 * abs(f - meet)
        boxes = np.array([_box(200 - d, 200), _box(200 + d, 200)])
        yield f / 30, Detections(boxes, np.full(2, 0.9), np.array([0, 1])), [0, 1]


def _ids_per_class(tracker):
    seen = {}
    for t, dets, _ in _bounce():
        out = tracker.update(dets, t)
        for c, tid in zip(out.class_id, out.tracker_id):
            seen.setdefault(int(c), set()).add(int(tid))
    return seen


def test_class_penalty_gives_crossing_boxes_back_to_their_own_class():
    plain = _ids_per_class(Tracker(frame_rate=30, class_penalty=0.0))
    assert plain == {0: {1, 2}, 1: {1, 2}}                          # motion swaps them
    kept = _ids_per_class(Tracker(frame_rate=30))                   # default penalty 0.15
    assert kept == {0: {1}, 1: {2}}
    with pytest.raises(ValueError, match="class_penalty"):
        Tracker(class_penalty=-0.1)


def test_recovered_flag_marks_the_frame_a_track_is_found_again():
    tracker, flags = Tracker(frame_rate=30), []
    for t, dets, _ in _jump():
        out = tracker.update(dets, t)
        assert out.data["recovered"].shape == (len(out),)
        flags.append(bool(out.data["recovered"].any()))
    assert flags.index(True) == 15 + 6 and sum(flags) == 1      # the first frame back only


def _coloured(frames, colours):
    """The frames with ``data["colour"]`` = colours[truth id] on every box."""
    for t, dets, ids in frames:
        dets.data["colour"] = np.array([colours[i] for i in ids], np.float32).reshape(-1, 3)
        yield t, dets, ids


RED, BLUE = (200.0, 30.0, 30.0), (30.0, 30.0, 200.0)


def test_box_colour_is_the_mean_of_the_box_middle():
    from lowbit.detect.track import box_colour
    rng = np.random.default_rng(0)
    for frame in (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                  rng.integers(0, 256, (48, 64), dtype=np.uint8)):
        boxes = np.array([[10, 10, 30, 40], [-8, -6, 4, 5], [60, 40, 80, 60], [5.2, 6.1, 5.3, 6.2],
                          [0, 0, 64, 48], [20.5, 7.25, 33.75, 19.5]], np.float32)
        got = box_colour(frame, boxes)
        img = frame.reshape(48, 64, -1).astype(np.float64)
        for (x1, y1, x2, y2), g in zip(boxes, got):           # the plain reference twin
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
            c0 = min(max(int(np.floor(cx - rx)), 0), 63)
            r0 = min(max(int(np.floor(cy - ry)), 0), 47)
            c1 = min(max(int(np.ceil(cx + rx)), c0 + 1), 64)
            r1 = min(max(int(np.ceil(cy + ry)), r0 + 1), 48)
            np.testing.assert_allclose(g, img[r0:r1, c0:c1].reshape(-1, img.shape[2]).mean(0),
                                       rtol=1e-6)
        assert got.shape == (6, img.shape[2]) and box_colour(frame, np.zeros((0, 4))).shape == \
            (0, img.shape[2])


def test_colour_keeps_same_class_objects_apart_where_motion_swaps_them():
    def ids(tracker):
        seen = {}
        frames = _coloured(((t, Detections(d.xyxy, d.confidence, [0, 0]), i)
                            for t, d, i in _bounce()), {0: RED, 1: BLUE})
        for t, dets, _ in frames:
            out = tracker.update(dets, t)
            for colour, tid in zip(out.data["colour"], out.tracker_id):
                seen.setdefault(int(colour[0] < 100), set()).add(int(tid))   # 0 red, 1 blue
        return seen
    swapped, kept = {0: {1, 2}, 1: {1, 2}}, {0: {1}, 1: {2}}
    assert ids(Tracker(frame_rate=30, appearance=0, colour_gate=None)) == swapped
    assert ids(Tracker(frame_rate=30, colour_gate=None)) == kept                  # the cost term
    assert ids(Tracker(frame_rate=30)) == kept
    # the gate alone does not act on tracks being tracked (their IoU decides)
    assert ids(Tracker(frame_rate=30, appearance=0)) == swapped


def test_colour_gate_refuses_another_objects_box():
    def jump_colours(before, after):
        for t, dets, ids in _jump():
            c = before if t < 15.5 / 30 else after
            dets.data["colour"] = np.array([c] * len(dets), np.float32).reshape(-1, 3)
            yield t, dets, ids
    same = _run(Tracker(frame_rate=30), jump_colours(RED, RED))[0]
    assert len(same) == 1                                   # recovered: the same object
    other = _run(Tracker(frame_rate=30), jump_colours(RED, BLUE))[0]
    assert len(other) == 2                                  # another colour: another object
    assert len(_run(Tracker(frame_rate=30, colour_gate=None), jump_colours(RED, BLUE))[0]) == 1
    # boxes without colours: the tracker works as before
    assert len(_run(Tracker(frame_rate=30), _jump())[0]) == 1
    for bad in ({"appearance": -1}, {"colour_gate": 0}, {"colour_gate": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Tracker(**bad)
