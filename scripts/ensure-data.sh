#!/usr/bin/env bash
# Make sure the Fashion-MNIST IDX files are present (lowbit looks in $LOWBIT_DATA, then
# /usr/share/datasets/fashion-mnist).  As root, installs Debian's dataset-fashion-mnist.
set -euo pipefail
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
have() { local d=$1; for f in $files; do [ -f "$d/$f" ] || [ -f "$d/${f%.gz}" ] || return 1; done; }
for d in "${LOWBIT_DATA:-}" /usr/share/datasets/fashion-mnist; do
  [ -n "$d" ] && have "$d" && { echo "Fashion-MNIST: $d"; exit 0; }
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Fashion-MNIST missing: installing Debian's dataset-fashion-mnist"
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }
  have /usr/share/datasets/fashion-mnist && exit 0
fi
cat >&2 <<MSG
Fashion-MNIST not found.  Put these four files (gzipped or raw IDX) in one folder:
  $files
and either place the folder at /usr/share/datasets/fashion-mnist or point LOWBIT_DATA at it
(as root on Debian: apt-get install dataset-fashion-mnist).
MSG
exit 1
