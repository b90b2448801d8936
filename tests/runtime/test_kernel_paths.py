"""Path selection: LOWBIT_KERNEL, unavailable paths, and the torch-free import."""
import functools
import subprocess
import sys

import numpy as np
import pytest

from lowbit.runtime import kernels, ref


def test_available_paths_and_default(monkeypatch):
    monkeypatch.delenv("LOWBIT_KERNEL", raising=False)
    paths = kernels.available_paths()
    assert paths[0] == "ref" and "portable" in paths
    assert kernels.default_path() == paths[-1]
    # Say in the test log what this machine ran (pytest -rA / -s shows it).
    print(f"available kernel paths here: {paths}; cpu: {kernels.cpu_features()}")


@pytest.mark.parametrize("path", ["ref", "portable"])
def test_env_forces_a_path(monkeypatch, path):
    monkeypatch.setenv("LOWBIT_KERNEL", path)
    assert kernels.default_path() == path
    a = ref.bitpack(np.ones((2, 70), np.float32))
    assert kernels.kernel_name().startswith(path)
    np.testing.assert_array_equal(kernels.bgemm(a, a, 70), np.full((2, 2), 70, np.int32))


def test_env_unknown_path_is_an_error(monkeypatch):
    monkeypatch.setenv("LOWBIT_KERNEL", "sse9")
    with pytest.raises(ValueError, match=r"\$LOWBIT_KERNEL='sse9' is not a kernel path"):
        kernels.bitpack(np.ones(3, np.float32))


def test_unavailable_path_names_what_the_cpu_lacks(monkeypatch):
    """Force avx512 where the CPU lacks it; where it has it, pretend it lacks VPOPCNTDQ."""
    if "avx512" in kernels.available_paths():
        # a fresh (empty) cache of path availability for this test, the real one restored after
        monkeypatch.setattr(kernels, "_unavailable_reason",
                            functools.lru_cache(kernels._unavailable_reason.__wrapped__))
        feats = dict(kernels.cpu_features(), avx512vpopcntdq=False)
        monkeypatch.setattr(kernels, "cpu_features", lambda: feats)
        monkeypatch.setattr(kernels._kernels, "path_available", lambda p: p != "avx512")
    monkeypatch.setenv("LOWBIT_KERNEL", "avx512")
    with pytest.raises(kernels.KernelUnavailableError, match="lacks .*AVX512"):
        kernels.default_path()
    monkeypatch.delenv("LOWBIT_KERNEL")
    with pytest.raises(kernels.KernelUnavailableError, match="avx512"):
        kernels.bgemm(np.zeros((1, 1), np.uint64), np.zeros((1, 1), np.uint64), 64, path="avx512")


def test_binding_refuses_an_unavailable_path_too(monkeypatch):
    """Even past the Python checks the extension never runs a path the CPU lacks."""
    if "avx512" in kernels.available_paths():
        pytest.skip("this CPU runs avx512")
    a = np.zeros((1, 1), np.uint64)
    out = np.empty((1, 1), np.int32)
    with pytest.raises(RuntimeError, match="not supported by this CPU"):
        kernels._kernels.bgemm(a, a, 64, out, "avx512", 1)


def test_runtime_and_codec_do_not_import_torch():
    code = (
        "import sys, numpy as np\n"
        "import lowbit.runtime, lowbit.codec\n"
        "from lowbit.runtime import bitpack, bgemm\n"
        "a = bitpack(np.ones((2, 100), np.float32))\n"
        "assert (bgemm(a, a, 100) == 100).all()\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
