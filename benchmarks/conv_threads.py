"""2-thread scaling of the binary 3x3 conv kernels (default kernel, batch 1, wall time).

    python benchmarks/conv_threads.py          # prints ms at 1 and 2 threads per shape
"""
import time

import numpy as np

from lowbit.runtime import bitconv as B
from lowbit.runtime import kernels as K


def main(repeats: int = 15) -> None:
    rng = np.random.default_rng(0)
    for h, c in [(56, 128), (28, 256), (14, 512), (7, 1024)]:
        x = K.bitpack(rng.standard_normal((1, h, h, c)).astype(np.float32))
        w = K.bitpack(rng.standard_normal((c, 3, 3, c)).astype(np.float32))
        pw = B.prepare_binary_conv2d(w, c, correction=False)
        ms = {}
        for t in (1, 2):
            run = lambda: B.binary_conv2d(x, pw, stride=1, padding=1, pad_value=-1, threads=t)
            run()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            ms[t] = 1e3 * float(np.median(times))
        print(f"{h}x{h}x{c}->{c} {pw.path}/{pw.variant}: 1 thread {ms[1]:.2f} ms, "
              f"2 threads {ms[2]:.2f} ms, scaling {ms[1] / ms[2]:.2f}x")


if __name__ == "__main__":
    main()
