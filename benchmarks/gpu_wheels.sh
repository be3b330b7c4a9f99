#!/usr/bin/env bash
# The wheels the GPU check (benchmarks/gpu_check.sh) needs beyond what the lent GPU machine's image
# holds, downloaded into .whl/ (ignored by git, carried to the machine): cvxpy, cvxpylayers, diffcp,
# SCS and Clarabel, and sparsediffpy and qdldl, which cvxpy imports (constraints.txt's versions). The image
# has torch, numpy, scipy, scikit-learn, matplotlib, tqdm, pytest and threadpoolctl, and no registry.
# Run on a machine whose pip reaches the registry, from anywhere in the repository:
#   bash benchmarks/gpu_wheels.sh [python version of the GPU machine, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014; do
    platforms+=(--platform "${tag}_x86_64")
done
mapfile -t pins < <(grep -E '^(cvxpy|cvxpylayers|diffcp|scs|clarabel|sparsediffpy|qdldl)==' constraints.txt)
rm -rf .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    "${platforms[@]}" --dest .whl "${pins[@]}"
du -sh .whl
