#!/usr/bin/env bash
# Syntax checks of eaglet's CUDA code on a machine without nvcc or a GPU, before a device run:
#   1. every src/*/*.cu compiled device-only by clang (sm_80) against the CUDA headers of NVIDIA's
#      pip wheels (nvidia-cuda-runtime/-nvcc/-cccl-cu12);
#   2. every .cpp with an EAGLET_WITH_CUDA branch, from build/compile_commands.json, with
#      -DEAGLET_WITH_CUDA=1 -fsyntax-only and those headers (the CPU torch wheel ships c10/cuda; an
#      empty c10/cuda/impl/cuda_cmake_macros.h stands in for the generated one).
# Catches undeclared names, wrong signatures and template errors, not register or launch problems.
# .cpp files that need headers these wheels lack (cuBLAS, cuSOLVER, NCCL) are listed as skipped.
# Needs clang (apt-get install clang), a configured build/ (scripts/build.sh) and the venv's pip;
# the headers are kept in build/cuda_check. Exit status: the number of files that failed (0: all pass).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)/build/cuda_check
[ -f build/compile_commands.json ] || { echo "check_cuda: no build/compile_commands.json (run scripts/build.sh)"; exit 1; }
command -v clang++ >/dev/null || { echo "check_cuda: clang++ not found (apt-get install clang)"; exit 1; }
if [ ! -f "$root/cuda/include/cuda_runtime.h" ]; then
  mkdir -p "$root/wheels" "$root/x" "$root/cuda/include" "$root/cuda/bin" "$root/cuda/lib64" \
    "$root/shim/c10/cuda/impl"
  .venv/bin/pip download -q --no-deps -d "$root/wheels" \
    nvidia-cuda-runtime-cu12 nvidia-cuda-nvcc-cu12 nvidia-cuda-cccl-cu12 || exit 1
  for w in "$root"/wheels/*.whl; do .venv/bin/python -m zipfile -e "$w" "$root/x"; done
  for p in cuda_runtime cuda_cccl cuda_nvcc; do cp -r "$root/x/nvidia/$p/include/." "$root/cuda/include/"; done
  cp -r "$root/x/nvidia/cuda_nvcc/nvvm" "$root/cuda/"
  printf '#!/bin/sh\n' >"$root/cuda/bin/ptxas" && chmod +x "$root/cuda/bin/ptxas"  # -S needs no ptxas
  echo "CUDA Version 12.9" >"$root/cuda/version.txt"  # how clang recognises an installation
  # Older clang's CUDA wrapper includes a curand header and texture templates CUDA 12 dropped.
  touch "$root/shim/curand_mtgp32_kernel.h" "$root/shim/c10/cuda/impl/cuda_cmake_macros.h"
fi
failed=0
for f in src/*/*.cu; do
  if out=$(clang++ -x cuda --cuda-path="$root/cuda" --cuda-gpu-arch=sm_80 --cuda-device-only -S -o /dev/null \
      -std=c++17 -Isrc -I"$root/shim" -D__CLANG_CUDA_TEXTURE_INTRINSICS_H__ -Wno-unknown-cuda-version "$f" 2>&1); then
    echo "ok    $f"
  else
    echo "FAIL  $f"; echo "$out" | grep -E "error" | head -5; failed=$((failed + 1))
  fi
done
.venv/bin/python - "$root" <<'PY' || failed=$((failed + $?))
import json, shlex, subprocess, sys
root = sys.argv[1]
bad = 0
for entry in json.load(open("build/compile_commands.json")):
    path = entry["file"]
    if not path.endswith(".cpp") or "EAGLET_WITH_CUDA" not in open(path).read():
        continue
    cmd = shlex.split(entry["command"])
    i = cmd.index("-o")
    del cmd[i:i + 2]
    cmd = [a for a in cmd if a != "-c"] + ["-DEAGLET_WITH_CUDA=1", "-fsyntax-only", "-isystem",
                                           f"{root}/shim", "-isystem", f"{root}/cuda/include"]
    r = subprocess.run(cmd, cwd=entry["directory"], capture_output=True, text=True)
    name = "src/" + path.split("/src/", 1)[-1]
    missing = [l for l in r.stderr.splitlines() if "fatal error:" in l and "No such file" in l]
    if r.returncode != 0 and missing:  # cuBLAS/cuSOLVER/NCCL headers are not in the wheels used
        print(f"skip  {name} ({missing[0].split('fatal error: ')[1].split(':')[0]} not here)")
        continue
    print(("ok    " if r.returncode == 0 else "FAIL  ") + name)
    if r.returncode != 0:
        print("\n".join([l for l in r.stderr.splitlines() if "error" in l][:5]))
        bad += 1
sys.exit(bad)
PY
exit $failed
