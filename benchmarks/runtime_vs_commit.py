"""Median batch-1 latency of Runtime.logits, this checkout vs an older commit's Python runtime
(same compiled kernels), to check that a runtime change does not slow v1 models down.

    git worktree add /tmp/old COMMIT
    cp .venv/lib/python3.11/site-packages/lowbit/_kernels*.so /tmp/old/src/lowbit/
    for i in 1 2 3 4 5; do
      for v in old new; do OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python \
        benchmarks/runtime_vs_commit.py $v MODEL.lbm; done; done      # interleaved; take medians

``old`` imports lowbit from /tmp/old/src instead of the editable install.
"""
import sys, time
if sys.argv[1] == "old":
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower() and "scikit" not in repr(f).lower()]
    sys.path.insert(0, "/tmp/old/src")
import numpy as np
import lowbit
from lowbit.runtime.graph import Runtime
assert (sys.argv[1] == "old") == ("/tmp/old" in lowbit.__file__)
rt = Runtime(sys.argv[2], 1)
x = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)
for _ in range(50): rt.logits(x)
ts = []
for _ in range(400):
    t0 = time.perf_counter(); rt.logits(x); ts.append(time.perf_counter() - t0)
print(sys.argv[1], f"{np.median(ts)*1e3:.4f}")
