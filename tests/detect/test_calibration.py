"""Calibration: round trips through a homography, point fits, scale files, and errors that
name the file and the field."""
import json

import numpy as np
import pytest

pytest.importorskip("cv2")

from lowbit.detect.calibration import Calibration, CalibrationError

# a road seen in perspective: image (u, v) -> ground (X, Y) metres
H = np.array([[0.05, 0.01, -10.0], [0.002, 0.12, -20.0], [0.0001, 0.002, 1.0]])


def _write(tmp_path, spec, name="calib.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


def test_homography_file_round_trip(tmp_path):
    cal = Calibration.from_file(_write(tmp_path, {"homography": H.tolist()}))
    pix = np.array([[10, 300], [320, 240], [600, 470], [0, 0]], float)
    ground = cal.to_ground(pix)
    assert ground.shape == (4, 2)
    q = np.c_[pix, np.ones(4)] @ H.T
    assert ground == pytest.approx(q[:, :2] / q[:, 2:], rel=1e-9)
    assert cal.to_image(ground) == pytest.approx(pix, abs=1e-6)


def test_points_are_fitted_with_find_homography(tmp_path):
    img = np.array([[0, 0], [640, 0], [640, 480], [0, 480], [320, 240], [100, 400]], float)
    gnd = Calibration(H).to_ground(img)
    spec = {"image_points": img.tolist(), "ground_points": gnd.tolist()}
    cal = Calibration.from_file(_write(tmp_path, spec))
    assert cal.point_rms < 1e-6
    probe = np.array([[200.0, 100.0], [500.0, 350.0]])
    assert cal.to_ground(probe) == pytest.approx(Calibration(H).to_ground(probe), abs=1e-6)
    assert cal.to_image(cal.to_ground(probe)) == pytest.approx(probe, abs=1e-6)


def test_scale_file(tmp_path):
    cal = Calibration.from_file(_write(tmp_path, {"metres_per_pixel": 0.05}))
    assert cal.to_ground([[100, 40]]) == pytest.approx(np.array([[5.0, 2.0]]))
    assert cal.to_image([[5.0, 2.0]]) == pytest.approx(np.array([[100.0, 40.0]]))


@pytest.mark.parametrize("spec, field, what", [
    ({"image_points": [[0, 0], [1, 0], [0, 1]], "ground_points": [[0, 0], [1, 0], [0, 1]]},
     "image_points", "at least 4"),
    ({"image_points": [[0, 0]] * 4}, "ground_points", "missing"),
    ({"image_points": [[0, 0], [1, 0], [0, 1], [1, 1]], "ground_points": [[0, 0]] * 3},
     "image_points", "3"),
    ({"image_points": [[0, 0], [1, 1], [2, 2], [3, 3]],
      "ground_points": [[0, 0], [1, 1], [2, 2], [3, 3]]}, "image_points", "no homography"),
    ({"homography": [[1, 0, 0], [0, 1, 0], [0, 0, float("nan")]]}, "homography", "non-finite"),
    ({"homography": [[1, 2, 3], [2, 4, 6], [0, 0, 1]]}, "homography", "singular"),
    ({"homography": [[1, 0], [0, 1]]}, "homography", "3x3"),
    ({"homography": "abc"}, "homography", "3x3"),
    ({"ground_points": [[0, 0]] * 4, "image_points": [[0, 0]] * 3 + [[1, None]]},
     "image_points", "non-finite"),
    ({"metres_per_pixel": -1}, "metres_per_pixel", "positive"),
    ({"metres_per_pixel": "0.1"}, "metres_per_pixel", "positive"),
])
def test_errors_name_file_and_field(tmp_path, spec, field, what):
    path = _write(tmp_path, spec)
    with pytest.raises(CalibrationError) as e:
        Calibration.from_file(path)
    msg = str(e.value)
    assert str(path) in msg and field in msg and what in msg, msg


def test_file_errors(tmp_path):
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        Calibration.from_file(bad)
    with pytest.raises(CalibrationError, match="needs 'homography'"):
        Calibration.from_file(_write(tmp_path, {"foo": 1}))


def test_points_on_the_horizon_are_nan():
    cal = Calibration(H)
    u = 1000.0                                   # H[2] . (u, v, 1) = 0 at v = -(1 + 1e-4 u) / 2e-3
    out = cal.to_ground([[u, -(1 + 1e-4 * u) / 2e-3]])
    assert np.isnan(out).all()
