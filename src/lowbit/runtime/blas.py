"""numpy's BLAS thread count, held to what the runtime allows during a call.

OpenBLAS (numpy's wheels) starts one thread per core for every large enough product.  A
``Runtime(path, threads=1)`` that let it would use every core for its float layers (first
layers, classifiers, BWN/TWN, Deep-Compression files) and, on a busy machine, spin those
threads against the other jobs: the float LeNet-5 conv2 took 2.5 ms instead of 0.44 ms that
way.  The runtime gives BLAS its ``threads`` for all-float graphs and 1 thread when bitwise
kernels run (lowbit.runtime.graph).  ``BlasThreads`` talks to the BLAS libraries threadpoolctl finds, directly (~10 us a call
instead of ~50 us for ``threadpool_limits``), and restores the previous count afterwards.
"""
from __future__ import annotations

__all__ = ["BlasThreads"]

_CONTROLLERS = None


def _controllers() -> list:
    global _CONTROLLERS
    if _CONTROLLERS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _CONTROLLERS = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:           # no threadpoolctl / unknown BLAS: leave threads alone
            _CONTROLLERS = []
    return _CONTROLLERS


class BlasThreads:
    """``with BlasThreads(n):`` -- every BLAS library of the process uses ``n`` threads inside."""

    def __init__(self, n: int):
        self.n = max(1, int(n))
        self._old: list[tuple] = []

    def __enter__(self) -> "BlasThreads":
        self._old = []
        for c in _controllers():
            old = c.get_num_threads()
            if old != self.n:
                c.set_num_threads(self.n)
                self._old.append((c, old))
        return self

    def __exit__(self, *exc) -> None:
        for c, old in self._old:
            c.set_num_threads(old)
        self._old = []

    @staticmethod
    def current() -> list[int]:
        """The thread count of each BLAS library found (for tests and reports)."""
        return [c.get_num_threads() for c in _controllers()]
