"""BlasThreads holds numpy's BLAS to the runtime's thread count inside a call, then restores."""
import numpy as np
import pytest

from lowbit.runtime.blas import BlasThreads


def test_limits_and_restores():
    before = BlasThreads.current()
    if not before:
        pytest.skip("threadpoolctl finds no BLAS library in this numpy")
    with BlasThreads(1):
        assert BlasThreads.current() == [1] * len(before)
        a = np.ones((300, 300), np.float32)
        assert float((a @ a)[0, 0]) == 300.0
    assert BlasThreads.current() == before


def test_restores_on_error():
    before = BlasThreads.current()
    with pytest.raises(RuntimeError):
        with BlasThreads(1):
            raise RuntimeError("boom")
    assert BlasThreads.current() == before


def test_runtime_call_leaves_blas_threads_alone(tmp_path):
    """Runtime.logits limits BLAS during the call only."""
    torch = pytest.importorskip("torch")
    from lowbit.runtime import Runtime
    from lowbit.train.checkpoint import build_model
    from lowbit.train.export import export_model
    torch.manual_seed(0)
    export_model(build_model("lenet5").eval(), tmp_path / "f.lbm",
                 {"mean": 0.5, "std": 0.5, "scale": 255.0})
    before = BlasThreads.current()
    Runtime(tmp_path / "f.lbm", threads=1).logits(np.zeros((2, 28, 28), np.uint8))
    assert BlasThreads.current() == before
