"""The kernels' persistent thread pool (csrc/common/threads.h): results equal 1-thread results
when the pool is used, when two Python threads call at once (the second falls back to
spawned threads), and in a forked child (which gets its own pool)."""
import multiprocessing as mp
import threading

import numpy as np
import pytest

from lowbit.runtime import bitconv as B
from lowbit.runtime import kernels as K

pytestmark = pytest.mark.skipif(K.default_path() == "ref", reason="no compiled kernels")


def _case(seed=0, n=2, h=13, c=129, oc=70):
    rng = np.random.default_rng(seed)
    x = K.bitpack(rng.standard_normal((n, h, h, c)).astype(np.float32))
    w = K.bitpack(rng.standard_normal((oc, 3, 3, c)).astype(np.float32))
    pw = B.prepare_binary_conv2d(w, c)
    return x, pw


def _conv(x, pw, threads):
    return B.binary_conv2d(x, pw, stride=1, padding=1, pad_value=-1, threads=threads)


def test_pool_repeated_calls_match_one_thread():
    x, pw = _case()
    want = _conv(x, pw, 1)
    for threads in (2, 3, 2, 5, 2):       # grows the pool, then reuses it
        np.testing.assert_array_equal(_conv(x, pw, threads), want)


def test_concurrent_python_threads():
    cases = [_case(seed) for seed in range(4)]
    want = [_conv(x, pw, 1) for x, pw in cases]
    got: dict = {}
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got[i] = _conv(*cases[i], 2)
                np.testing.assert_array_equal(got[i], want[i])
        except Exception as e:            # surfaced below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in ts), "a kernel call hung"
    assert not errors, errors


def _child(q):
    x, pw = _case()
    q.put(bool(np.array_equal(_conv(x, pw, 2), _conv(x, pw, 1))))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork here")
def test_forked_child_gets_its_own_pool():
    x, pw = _case()
    _conv(x, pw, 2)                       # the parent's pool exists (workers started)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(timeout=120)
    if p.is_alive():
        p.kill()
        pytest.fail("kernel call with threads=2 hung in a forked child")
    assert p.exitcode == 0 and q.get(timeout=5) is True
