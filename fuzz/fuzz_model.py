"""Coverage-guided fuzzing of the model loader with atheris (libFuzzer), one process.

    .venv/bin/pip install atheris
    mkdir -p /tmp/lbfuzz-corpus
    OMP_NUM_THREADS=1 .venv/bin/python fuzz/fuzz_model.py /tmp/lbfuzz-corpus fuzz/corpus \\
        -max_total_time=90 -timeout=1 -max_len=65536 -artifact_prefix=fuzz/findings/

The first corpus folder receives the inputs libFuzzer finds interesting (keep it outside the
repository); ``fuzz/corpus`` holds the committed seeds.  The target and its oracle are
``fuzz/lbfuzz.py`` (``Target.check``): a clean ``ValueError`` naming the file (FormatError
and the runtime's refusals), or a run whose outputs have the graph's shapes and equal the
seed's outputs whenever the file still means the same model; anything else is an uncaught
exception, which atheris reports with its traceback and the input (``crash-*`` under the
artifact prefix); a case longer than ``-timeout`` seconds is a hang, a signal a crash.
Mutations: libFuzzer's byte mutator (not re-signed: the checksums' side) and the
structure-aware mutator of lbfuzz (re-signed), crossover splices tensors and ops of two files.

``LBFUZZ_STATS=path.json``: outcome and mutation counts, rewritten every 500 cases;
``LBFUZZ_DIFFS=folder``: keeps (up to 20) inputs on which the two executors' outputs differ
by more than float rounding (counted as ``executors-differ``, not a finding).
"""
from __future__ import annotations

import json
import os
import random
import sys
import time

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lowbit.codec                                            # noqa: E402,F401
import lowbit.runtime.graph                                    # noqa: E402,F401
import lowbit.runtime.native                                   # noqa: E402,F401
import lbfuzz                                                  # noqa: E402


def instrument_lowbit() -> int:
    """Coverage instrumentation of every function of the lowbit package already imported.
    (``atheris.instrument_imports`` reports instrumenting lowbit's modules but collects no
    coverage from an editable install, whose modules come through scikit-build's redirecting
    import finder; patching the functions' code objects afterwards works for any install.)"""
    import gc
    import types
    root = os.path.dirname(os.path.abspath(lowbit.codec.__file__ + "/.."))
    funcs = [f for f in gc.get_objects() if isinstance(f, types.FunctionType)
             and f.__code__.co_filename.startswith(root)]
    for f in funcs:
        atheris.instrument_func(f)
    return len(funcs)


print(f"INFO: instrumented {instrument_lowbit()} lowbit functions", file=sys.stderr)

TARGET = lbfuzz.Target()
MUTATIONS = {"raw": 0, "signed": 0, "crossover": 0}
FAMILIES: dict[str, int] = {}            # mutations by what the mutated parent was
CASES = [0]
START = time.time()
STATS = os.environ.get("LBFUZZ_STATS")


def _write_stats() -> None:
    if STATS:
        doc = {"cases": CASES[0], "seconds": round(time.time() - START, 1),
               "mutations": MUTATIONS, "parents": FAMILIES, "outcomes": TARGET.stats}
        tmp = STATS + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, STATS)


DIFFS = os.environ.get("LBFUZZ_DIFFS")      # a folder: keep inputs the executors disagree on


def test_one_input(data: bytes) -> None:
    CASES[0] += 1
    before = len(TARGET.exec_diffs)
    TARGET.check(data)
    if DIFFS and len(TARGET.exec_diffs) > before:
        import hashlib
        os.makedirs(DIFFS, exist_ok=True)
        with open(os.path.join(DIFFS, hashlib.sha1(data).hexdigest() + ".lbm"), "wb") as f:
            f.write(data)
    if CASES[0] % 500 == 0:
        _write_stats()


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    kind, out = lbfuzz.mutate(data, rng, max_size, raw_mut=atheris.Mutate)
    MUTATIONS[kind] += 1
    fam = lbfuzz.family(data)
    FAMILIES[fam] = FAMILIES.get(fam, 0) + 1
    return out


def custom_crossover(data1: bytes, data2: bytes, max_out_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:          # libFuzzer asks for many crossovers: mutate half of them
        return custom_mutator(data1, max_out_size, rng.randrange(1 << 32))
    MUTATIONS["crossover"] += 1
    fam = lbfuzz.family(data1)
    FAMILIES[fam] = FAMILIES.get(fam, 0) + 1
    return lbfuzz.crossover(data1, data2, rng, max_out_size)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator,
                  custom_crossover=custom_crossover)
    try:
        atheris.Fuzz()
    finally:
        _write_stats()


if __name__ == "__main__":
    main()
