#!/usr/bin/env bash
# Idempotent set-up of everything eaglet builds and tests with:
#   1. system packages (apt): compiler, CMake, Ninja, OpenMPI, yaml-cpp, spdlog/fmt, Catch2, nlohmann-json;
#   2. a Python with PyTorch, whose wheel provides LibTorch: an already importable CUDA PyTorch is
#      kept (the GPU image), otherwise .venv is made with the CPU wheel torch==2.13.0; numpy,
#      safetensors and, for scripts/produce_hf.py, transformers, gguf, accelerate, sentencepiece;
#   3. Mooncake's client for data.store=mooncake (the mooncake-transfer-engine-non-cuda wheel in that
#      Python; its system libraries libibverbs1, libnuma1, libcurl4 come with step 1). Optional: a
#      failure is a warning, and the mooncake test then skips itself (docs/MOONCAKE.md);
#   4. for a CPU build's cuda_compile test (scripts/check_cuda.sh): the cuBLAS/cuSPARSE/cuSOLVER/NCCL
#      headers of NVIDIA's wheels in build/cuda_check, and clang where there is no nvcc. Optional: a
#      failure is a warning, and that test then fails saying what it lacks.
# Prints what it did; writes the chosen Python's path to .eaglet_python for the build scripts.
# EAGLET_PYTHON=/path/to/python skips step 2's choice; EAGLET_NO_APT=1 skips apt.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[setup] $*"; }

# --- 1. system packages -------------------------------------------------------------------------
# Each needed file and the Debian/Ubuntu package that provides it.
declare -A need=(
  [g++]=build-essential [cmake]=cmake [ninja]=ninja-build [mpicxx]=libopenmpi-dev [mpirun]=openmpi-bin
  [yaml-cpp/yaml.h]=libyaml-cpp-dev [spdlog/spdlog.h]=libspdlog-dev [fmt/format.h]=libfmt-dev
  [nlohmann/json.hpp]=nlohmann-json3-dev [catch2]=catch2
  # loaded by the Mooncake wheel's store.so and mooncake_master (readelf -d: DT_NEEDED)
  [lib:libibverbs.so.1]=libibverbs1 [lib:libnuma.so.1]=libnuma1 [lib:libcurl.so.4]=libcurl4
)
# The CUDA compile check's other route where CUDA's nvcc is missing (scripts/check_cuda.sh).
command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] || need[clang++]=clang
missing=()
for what in "${!need[@]}"; do
  case $what in
    */*) [ -e "/usr/include/$what" ] || [ -e "/usr/local/include/$what" ] || missing+=("${need[$what]}") ;;
    catch2) [ -e /usr/include/catch2 ] || [ -e /usr/local/include/catch2 ] || missing+=(catch2) ;;
    lib:*) /sbin/ldconfig -p 2>/dev/null | grep -qF "${what#lib:} (" || missing+=("${need[$what]}") ;;
    *) command -v "$what" >/dev/null 2>&1 || missing+=("${need[$what]}") ;;
  esac
done
if [ ${#missing[@]} = 0 ]; then
  say "system packages: all present"
elif [ "${EAGLET_NO_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null 2>&1; then
  say "WARNING: missing ${missing[*]} and apt is not used here; the build will say what it lacks"
else
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  say "installing with apt: ${missing[*]}"
  if $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    say "installed: ${missing[*]}"
  else
    say "WARNING: apt could not install ${missing[*]}; the build will say what it lacks"
  fi
fi

# --- 2. Python with PyTorch (LibTorch) ----------------------------------------------------------
has_cuda_torch() { "$1" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' >/dev/null 2>&1; }
if [ -n "${EAGLET_PYTHON:-}" ]; then
  py=$EAGLET_PYTHON
  say "python: $py (from EAGLET_PYTHON)"
elif command -v python3 >/dev/null 2>&1 && has_cuda_torch python3; then
  py=$(python3 -c 'import sys; print(sys.executable)')
  say "python: keeping the CUDA PyTorch already importable at $py"
else
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
  fi
  py=$PWD/.venv/bin/python
fi
# Python packages the tools and tests use (module=pip requirement); torch only goes into .venv.
# transformers, gguf, accelerate and sentencepiece serve scripts/produce_hf.py and
# scripts/spec_eval.py (HF and GGUF targets; transformers loads GGUF files through gguf and
# accelerate, some Llama/Mistral tokenizers need sentencepiece) and the tests that run them;
# none of them changes the installed torch. Pinned where the tools were checked.
declare -A pkgs=([torch]="torch==2.13.0" [numpy]=numpy [safetensors]=safetensors
  [transformers]=transformers==5.25.0 [gguf]=gguf==0.19.0 [accelerate]=accelerate==1.16.0
  [sentencepiece]=sentencepiece==0.2.3)
want=()
for mod in torch numpy safetensors transformers gguf accelerate sentencepiece; do
  "$py" -c "import $mod" >/dev/null 2>&1 && continue
  if [ "$mod" = torch ] && [ "$py" != "$PWD/.venv/bin/python" ]; then continue; fi
  want+=("${pkgs[$mod]}")
done
if [ ${#want[@]} = 0 ]; then
  say "python packages: all present in $py"
else
  say "installing into $py: ${want[*]}"
  "$py" -m pip install -q --disable-pip-version-check "${want[@]}" ||
    say "WARNING: pip could not install ${want[*]} (tests that need them will fail)"
fi
"$py" -c 'import torch' || { say "ERROR: $py cannot import torch"; exit 1; }
echo "$py" >.eaglet_python

# --- 3. Mooncake's client (optional) ------------------------------------------------------------
# The non-CUDA wheel serves tcp (tests, one machine); 0.3.13.post1's store.so needs no libcudart
# (older non-CUDA wheels did: docs/MOONCAKE.md). An already importable Mooncake is kept.
mooncake_pin=mooncake-transfer-engine-non-cuda==0.3.13.post1
if "$py" -c 'import mooncake.store' >/dev/null 2>&1; then
  say "mooncake: already importable in $py"
elif ! "$py" -m pip install -q --disable-pip-version-check --retries 2 --timeout 30 "$mooncake_pin" \
  >/dev/null 2>&1; then
  say "WARNING: pip could not install $mooncake_pin into $py; data.store=mooncake will say so and its test skips"
elif ! why=$("$py" -c 'import mooncake.store' 2>&1); then
  say "WARNING: $mooncake_pin is installed but does not import (${why##*$'\n'}); see docs/MOONCAKE.md"
else
  say "mooncake: installed $mooncake_pin into $py"
fi
say "LibTorch: torch $("$py" -c 'import torch; print(torch.__version__)') at $("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')"

# --- 4. headers for the CUDA compile check (optional) --------------------------------------------
# Fetched once (about 1 GB of wheels downloaded, 2 MB of headers kept). A CUDA PyTorch means a CUDA
# build, which compiles the CUDA code itself: nothing to fetch.
if has_cuda_torch "$py"; then
  say "cuda check: not needed (a CUDA build compiles the CUDA code itself)"
elif out=$(EAGLET_PYTHON=$py scripts/check_cuda.sh --fetch 2>&1); then
  say "cuda check: ${out##*check_cuda: }"
else
  say "WARNING: no headers for the CUDA compile check (${out##*$'\n'}); the cuda_compile test fails"
fi
