#!/usr/bin/env bash
# Set-up, then configure and build eaglet (Release, all cores) into build/.
# Extra arguments go to CMake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
py=$(cat .eaglet_python)
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
if [ -f build/CMakeCache.txt ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${gen[1]:-Unix Makefiles}" build/CMakeCache.txt; then
  rm -rf build  # generator changed
fi
cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DEAGLET_PYTHON="$py" "$@" >build.log 2>&1 ||
  { cat build.log; exit 1; }
echo "[build] configured ($(grep -o 'PyTorch [^ ]* from [^ ]*' build.log | head -1))"
cmake --build build -j "$(nproc)"
echo "[build] built build/eaglet"
