"""The runtime's input contract (lowbit.runtime.inputs): every input either gives the answer
of the same pixels as uint8, or is refused with a message saying what was expected."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lowbit.runtime.graph import Runtime
from lowbit.runtime.inputs import InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def rt():
    return Runtime(FIXTURES / "v1-bnn-lenet5.lbm")


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)


SAME = {
    "uint8 (N, H, W)": lambda p: p,
    "uint8 (N, 1, H, W)": lambda p: p[:, None],
    "int64": lambda p: p.astype(np.int64),
    "int16": lambda p: p.astype(np.int16),
    "uint16": lambda p: p.astype(np.uint16),
    "nested list": lambda p: p.tolist(),
    "transposed view (N, 1, H, W)": lambda p: np.ascontiguousarray(
        p[:, None].transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
    "strided view (N, H, W)": lambda p: np.repeat(p, 2, axis=2)[:, :, ::2],
    "concatenated views": lambda p: np.concatenate([p[:3, None].transpose(0, 1, 3, 2),
                                                    p[3:, None].transpose(0, 1, 3, 2)]
                                                   ).transpose(0, 1, 3, 2),
}


@pytest.mark.parametrize("case", list(SAME))
def test_same_pixels_same_answer(rt, pixels, case):
    want = rt.logits(pixels)
    np.testing.assert_array_equal(rt.logits(SAME[case](pixels)), want)
    np.testing.assert_array_equal(rt.predict(SAME[case](pixels)), want.argmax(1))


def test_normalized_float_input_when_asked(rt, pixels):
    x = rt._input(pixels)                                   # what the tables give
    np.testing.assert_array_equal(rt.logits(x, normalized=True), rt.logits(pixels))
    np.testing.assert_array_equal(rt.predict(x.astype(np.float64), normalized=True),
                                  rt.predict(pixels))


REFUSED = {
    "float32 pixels": (lambda p: p.astype(np.float32), {}, r"got float32 input; pass uint8 pixels"),
    "float32 / 255": (lambda p: p.astype(np.float32) / 255, {}, r"normalized=True"),
    "int 300": (lambda p: p.astype(np.int64) + 45, {}, r"must lie in 0\.\.255, got 45\.\.300"),
    "negative": (lambda p: p.astype(np.int64) - 1, {}, r"must lie in 0\.\.255, got -1"),
    "bool": (lambda p: p > 128, {}, r"bool array"),
    "strings": (lambda p: p.astype(str), {}, r"not numeric"),
    "NaN normalized": (lambda p: np.full(p.shape, np.nan, np.float32), {"normalized": True}, r"NaN or inf"),
    "inf normalized": (lambda p: np.full(p.shape, np.inf, np.float32), {"normalized": True}, r"NaN or inf"),
    "uint8 normalized": (lambda p: p, {"normalized": True}, r"expects float input"),
    "wrong size": (lambda p: p[:, :27], {}, r"input shape \(6, 27, 28\): expected \(N, H, W\) or \(N, 1, 28, 28\) in NCHW"),
    "NHWC": (lambda p: np.repeat(p[..., None], 3, -1), {}, r"expected .*\(N, 1, 28, 28\)"),
    "one image": (lambda p: p[0, 0], {}, r"expected a batch"),
    "ragged list": (lambda p: [[1, 2], [3]], {}, r"not an array of numbers|expected a batch"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_inputs(rt, pixels, case):
    make, kw, match = REFUSED[case]
    for call in (rt.predict, rt.logits, rt.run):
        with pytest.raises(InputError, match=match):
            call(make(pixels), **kw)


@pytest.mark.parametrize("batch", [0, -1, 1.5, True])
def test_batch_must_be_positive(rt, pixels, batch):
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        rt.predict(pixels, batch=batch)


def test_batches_give_the_same_predictions(rt, pixels):
    np.testing.assert_array_equal(rt.predict(pixels, batch=1), rt.predict(pixels, batch=4))
