#!/usr/bin/env python3
"""Accuracy of every low-bit recipe on Fashion-MNIST -> docs/results.md.

Same as ``lowbit bench accuracy``; see lowbit.bench.accuracy for the options, e.g.
``python benchmarks/accuracy.py --only bnn-lenet5,xnor-lenet5 --threads 2``.
"""
import sys

from lowbit.bench.accuracy import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
