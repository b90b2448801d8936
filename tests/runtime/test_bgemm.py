"""bgemm: every path and micro-kernel variant == numpy reference == float dot of ±1 rows."""
import numpy as np
import pytest

from lowbit.runtime import kernels, ref

ALL_PATHS = list(kernels.PATHS)
K_EDGES = [1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000]
MN = [(1, 1), (3, 7), (7, 3), (17, 1), (1, 17), (17, 7)]


def _need(path):
    try:
        kernels.check_path(path)
    except kernels.KernelUnavailableError as exc:
        pytest.skip(f"{path} not run on this machine: {exc}")


def _pm1(rng, m, k):
    return np.where(rng.standard_normal((m, k)) >= 0, 1.0, -1.0).astype(np.float32)


def _variants(path):
    return [None] if path == "ref" else kernels.bgemm_variants(path)


@pytest.mark.parametrize("path", ALL_PATHS)
def test_bgemm_equals_reference_and_float_dot(path):
    _need(path)
    rng = np.random.default_rng(2)
    for k in K_EDGES:
        for m, n in MN:
            xa, xb = _pm1(rng, m, k), _pm1(rng, n, k)
            a, b = ref.bitpack(xa), ref.bitpack(xb)
            expect = ref.bgemm(a, b, k)
            np.testing.assert_array_equal(expect, (xa @ xb.T).astype(np.int32))
            for variant in _variants(path):
                got = kernels.bgemm(a, b, k, path=path, variant=variant)
                assert got.dtype == np.int32 and got.shape == (m, n)
                np.testing.assert_array_equal(got, expect, err_msg=f"{path}/{variant} k={k} {m}x{n}")


@pytest.mark.parametrize("path", ALL_PATHS)
def test_bgemm_blocking_and_threads(path):
    """Shapes that need several K blocks and several B cache blocks; 1 and 2 threads agree."""
    _need(path)
    rng = np.random.default_rng(3)
    for m, n, k in [(13, 130, 40000), (70, 45, 4097), (2, 300, 2000)]:
        a, b = ref.bitpack(_pm1(rng, m, k)), ref.bitpack(_pm1(rng, n, k))
        expect = ref.bgemm(a, b, k)
        for variant in _variants(path):
            for threads in (1, 2):
                got = kernels.bgemm(a, b, k, threads=threads, path=path, variant=variant)
                np.testing.assert_array_equal(got, expect, err_msg=f"{path}/{variant} t={threads}")


def test_bgemm_empty_and_k_zero():
    for path in kernels.available_paths():
        z = np.zeros((3, 0), np.uint64)
        np.testing.assert_array_equal(kernels.bgemm(z, np.zeros((2, 0), np.uint64), 0, path=path),
                                      np.zeros((3, 2), np.int32))
        assert kernels.bgemm(np.zeros((0, 2), np.uint64), np.zeros((4, 2), np.uint64), 100,
                             path=path).shape == (0, 4)


def test_bgemm_bad_input_gives_clear_errors():
    a = ref.bitpack(np.ones((3, 100), np.float32))
    b = ref.bitpack(np.ones((4, 100), np.float32))
    with pytest.raises(ValueError, match="k=200 needs"):
        kernels.bgemm(a, b, 200)
    with pytest.raises(ValueError, match=r"a\[0\] has bits set past k=70"):
        kernels.bgemm(a, b, 70)                      # same word count, but pad bits in use
    with pytest.raises(TypeError, match="uint64"):
        kernels.bgemm(a.astype(np.int64), b, 100)
    with pytest.raises(TypeError, match="numpy array"):
        kernels.bgemm(a.tolist(), b, 100)
    with pytest.raises(ValueError, match="2-D"):
        kernels.bgemm(a[None], b, 100)
    with pytest.raises(ValueError, match="threads"):
        kernels.bgemm(a, b, 100, threads=-1)
    with pytest.raises(ValueError, match="non-negative"):
        kernels.bgemm(a, b, 1.5)
    with pytest.raises(ValueError, match="not a kernel path"):
        kernels.bgemm(a, b, 100, path="fast")
    with pytest.raises(ValueError, match="variant"):
        kernels.bgemm(a, b, 100, path="portable", variant="nope")
    # non-contiguous operands are fine (copied)
    wide = np.zeros((3, 4), np.uint64)
    wide[:, ::2] = a
    np.testing.assert_array_equal(kernels.bgemm(wide[:, ::2], b, 100), ref.bgemm(a, b, 100))
