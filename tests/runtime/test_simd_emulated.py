"""The SIMD kernels' logic under emulation, for paths this CPU cannot run.

simd_emulated.cpp builds the avx2 and avx512 kernels on SIMDe (plain-C implementations of
the x86 intrinsics) and compares them with the portable path: bitpack / unpack for every
dtype and word edge, NaN detection, every bgemm variant with tails, K blocks and 2 threads.
This checks the kernels' logic, not the machine code a real AVX-512 build runs: that is only
exercised by test_bgemm.py / test_bitpack.py on a CPU that has the instructions.
Skipped when the SIMDe headers (Debian: libsimde-dev) or a C++ compiler are missing.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).with_name("simd_emulated.cpp")


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def test_simd_kernels_under_simde_emulation(tmp_path):
    cxx = _compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    probe = subprocess.run([cxx, "-x", "c++", "-std=c++17", "-fsyntax-only", "-"],
                           input="#include <simde/x86/avx512.h>\n", text=True,
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("SIMDe headers not installed (apt-get install libsimde-dev): avx512 logic "
                    "not checked under emulation")
    exe = tmp_path / "simd_emulated"
    subprocess.run([cxx, "-std=c++17", "-O0", "-w", "-DLOWBIT_SIMDE", f"-I{ROOT / 'csrc'}",
                    str(SOURCE), "-o", str(exe), "-pthread"], check=True, timeout=300)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok: 0 failure(s)" in run.stdout
