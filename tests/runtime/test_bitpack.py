"""bitpack / unpack: every path against the numpy reference, the convention, bad input."""
import numpy as np
import pytest

from lowbit.runtime import kernels, ref

# Every path is listed; the ones this machine cannot run are skipped with the reason
# (pytest -ra prints it), so a run says which paths it really exercised.
ALL_PATHS = list(kernels.PATHS)
K_EDGES = [1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000]
DTYPES = [np.float32, np.float64, np.int8, np.int32]


def _need(path):
    try:
        kernels.check_path(path)
    except kernels.KernelUnavailableError as exc:
        pytest.skip(f"{path} not run on this machine: {exc}")


def _random(rng, shape, dtype):
    if np.dtype(dtype).kind == "f":
        x = rng.standard_normal(shape).astype(dtype)
        x.flat[:: 7] = 0.0                       # exact zeros: sign(0) = +1
        x.flat[3:: 11] = -0.0                    # negative zero is >= 0 as well
        return x
    return rng.integers(-3, 3, size=shape).astype(dtype)   # includes 0


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitpack_matches_reference_and_round_trips(path, dtype):
    _need(path)
    rng = np.random.default_rng(0)
    for k in K_EDGES:
        x = _random(rng, (3, k), dtype)
        words = kernels.bitpack(x, path=path)
        assert words.dtype == np.uint64 and words.shape == (3, ref.words_for(k))
        np.testing.assert_array_equal(words, ref.bitpack(x))
        signs = np.where(x >= 0, 1, -1)
        for out_dtype in (np.int8, np.float32):
            back = kernels.unpack(words, k, dtype=out_dtype, path=path)
            assert back.dtype == out_dtype and back.shape == x.shape
            np.testing.assert_array_equal(back, signs)


@pytest.mark.parametrize("path", ALL_PATHS)
def test_convention_bits_zero_and_pad(path):
    _need(path)
    x = np.array([[1.0, -1.0, 0.0, -0.0, -2.5, 3.0] + [-1.0] * 60 + [0.5]], dtype=np.float32)  # k=67
    words = kernels.bitpack(x, path=path)
    # element j*64 + i is bit i of word j, bit 1 = (x >= 0)
    assert int(words[0, 0]) & 0b111111 == 0b101101
    assert int(words[0, 1]) == 0b100         # elements 64, 65 = -1, 66 = +1; pad bits 3..63 = 0
    assert (int(words[0, -1]) & int(ref.pad_mask(67))) == 0


@pytest.mark.parametrize("path", ALL_PATHS)
def test_pad_bits_are_zero_for_all_positive_input(path):
    _need(path)
    for k in K_EDGES:
        words = kernels.bitpack(np.ones((2, k), np.float32), path=path)
        full, rest = divmod(k, 64)
        assert (words[:, :full] == np.uint64(2**64 - 1)).all()
        if rest:
            assert (words[:, -1] == np.uint64((1 << rest) - 1)).all()


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", [0, 63, 64, 130])        # SIMD word, word edge, partial tail
def test_nan_is_refused(path, dtype, where):
    _need(path)
    x = np.ones((2, 131), dtype)
    x[1, where] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kernels.bitpack(x, path=path)


def test_leading_axes_threads_and_layout():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 200)).astype(np.float32)
    expect = ref.bitpack(x)
    assert expect.shape == (2, 3, 5, 4)
    for path in kernels.available_paths():
        np.testing.assert_array_equal(kernels.bitpack(x, threads=1, path=path), expect)
        np.testing.assert_array_equal(kernels.bitpack(x, threads=2, path=path), expect)
        # non-contiguous and big-endian input are accepted (copied to a native layout)
        np.testing.assert_array_equal(kernels.bitpack(x[..., ::2], path=path), ref.bitpack(x[..., ::2]))
        np.testing.assert_array_equal(kernels.bitpack(x.astype(">f4"), path=path), expect)
        np.testing.assert_array_equal(
            kernels.unpack(expect, 200, np.float32, threads=2, path=path), np.where(x >= 0, 1.0, -1.0))
    assert kernels.bitpack(np.zeros((4, 0), np.float32)).shape == (4, 0)


def test_bad_input_gives_clear_errors():
    with pytest.raises(TypeError, match="dtype int64"):
        kernels.bitpack(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="float32"):
        kernels.bitpack(np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="at least one axis"):
        kernels.bitpack(np.float32(1.0))
    with pytest.raises(ValueError, match="threads"):
        kernels.bitpack(np.zeros((2, 3), np.float32), threads=0)
    words = kernels.bitpack(np.zeros((2, 70), np.float32))
    with pytest.raises(ValueError, match="ceil"):
        kernels.unpack(words, 200)
    with pytest.raises(TypeError, match="uint64"):
        kernels.unpack(words.astype(np.int64), 70)
    with pytest.raises(TypeError, match="int8 or float32"):
        kernels.unpack(words, 70, dtype=np.float64)
    with pytest.raises(ValueError, match="non-negative"):
        kernels.unpack(words, -1)
