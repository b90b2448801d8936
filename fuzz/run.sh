#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of the model loader (CI: .ci/run).  Fails on any finding:
# libFuzzer exits non-zero on an uncaught exception (the oracle's Finding included), a
# crash signal, a case over 1 s (-timeout=1) or over 2 GB of RSS.
#   fuzz/run.sh [SECONDS] [RUNS] [SEED]   defaults 90, unlimited, 1; crash inputs land in
#                                         build/fuzz/findings/
# CI gives RUNS and a fixed SEED, so its cases are the same on every machine (starting from an
# empty build/fuzz/corpus) and a green run can be reproduced exactly; SECONDS still bounds it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-90}"
runs="${2:--1}"
seed="${3:-1}"
py=.venv/bin/python
"$py" -c "import atheris" 2>/dev/null || "$py" -m pip install -q atheris
mkdir -p build/fuzz/corpus build/fuzz/findings
OMP_NUM_THREADS=1 LBFUZZ_STATS=build/fuzz/stats.json "$py" -W ignore fuzz/fuzz_model.py \
  build/fuzz/corpus fuzz/corpus -max_total_time="$secs" -runs="$runs" -seed="$seed" -timeout=1 -rss_limit_mb=2048 \
  -max_len=65536 -artifact_prefix=build/fuzz/findings/ -print_final_stats=1 \
  2>&1 | grep -v -E '^#[0-9]+ +(NEW|REDUCE) ' || { cat build/fuzz/stats.json; exit 1; }
cat build/fuzz/stats.json
