#!/usr/bin/env bash
# SIMDe's headers let the tests run the AVX2 / AVX-512 kernels in plain C on CPUs that lack
# them (tests/runtime/test_simd_emulated*.py).  As root on Debian, installs libsimde-dev;
# otherwise says how, and the emulated tests skip with that reason.
set -euo pipefail
[ -f /usr/include/simde/x86/avx512.h ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "SIMDe missing: installing Debian's libsimde-dev"
  apt-get install -y -q libsimde-dev >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q libsimde-dev; }
  exit 0
fi
echo "note: SIMDe headers not found (apt-get install libsimde-dev); the emulated AVX2 / AVX-512 kernel tests will skip" >&2
