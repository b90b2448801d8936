"""The SIMD paths of the bitwise conv/dense kernels (csrc/bconv) under SIMDe emulation.

simd_emulated_bconv.cpp builds every row of the conv kernel table (the avx2 nibble look-up
kernel - its intrinsics twin, the native build runs the same loop in inline assembly - the
avx2 popcnt kernel, the avx512 VPOPCNTQ kernel) and the avx2 / avx512 bit-plane packers on
SIMDe and compares them with the portable path: binary, ternary and bit-plane kinds, the
three output stages, channel edges, K blocks, strides, paddings, 1 and 2 threads.  This
checks the kernels' logic, not the machine code of a real AVX-512 build (test_bconv.py runs
the native paths this CPU has).  Skipped without a C++ compiler or the SIMDe headers.
"""
import subprocess
from pathlib import Path

import pytest

from test_simd_emulated import ROOT, _compiler

SOURCE = Path(__file__).with_name("simd_emulated_bconv.cpp")


def test_bconv_simd_kernels_under_simde_emulation(tmp_path):
    cxx = _compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    probe = subprocess.run([cxx, "-x", "c++", "-std=c++17", "-fsyntax-only", "-"],
                           input="#include <simde/x86/avx512.h>\n", text=True, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("SIMDe headers not installed (apt-get install libsimde-dev): avx2/avx512 "
                    "conv logic not checked under emulation")
    exe = tmp_path / "simd_emulated_bconv"
    subprocess.run([cxx, "-std=c++17", "-O1", "-w", "-DLOWBIT_SIMDE", f"-I{ROOT / 'csrc'}",
                    str(SOURCE), "-o", str(exe), "-pthread"], check=True, timeout=300)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok: 0 failure(s)" in run.stdout
