#!/usr/bin/env bash
# The README's test command: set-up, build, then every test (unit, mpirun multi-rank, docs).
# GPU tests (label gpu) skip themselves without a GPU. Extra arguments go to ctest (e.g. -L mpi).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" "$@"
