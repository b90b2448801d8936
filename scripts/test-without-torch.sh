#!/usr/bin/env bash
# The torch-free half of lowbit in a venv where torch is absent (not just hidden): the codec,
# the runtime's kernels / input contract / fuzz replay, the import rules.  Tests that compare
# against torch skip there with that reason; everything else must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/notorch
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "scikit-build-core>=0.10" "nanobind>=2.0" cmake ninja pytest
"$venv/bin/pip" install -q --no-build-isolation .
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "test-without-torch: torch is importable in $venv" >&2; exit 1
fi
cd "$venv" && OMP_NUM_THREADS=1 bin/python -m pytest -q -p no:cacheprovider --rootdir=../.. \
  ../../tests/codec ../../tests/runtime/test_inputs.py ../../tests/runtime/test_bitpack.py \
  ../../tests/runtime/test_bgemm.py ../../tests/runtime/test_bconv.py \
  ../../tests/runtime/test_kernel_paths.py ../../tests/runtime/test_threads.py \
  ../../tests/test_layering.py
