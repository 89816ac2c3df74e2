# Finds LibTorch inside the Python environment's PyTorch wheel (torch/share/cmake), and, when that
# PyTorch has CUDA, the NCCL library it loads (the nvidia-nccl wheel's lib/libnccl.so.2), so eaglet
# links the very same libnccl.
#
# In: EAGLET_PYTHON (default: .venv/bin/python if present, else python3).
# Out: TORCH_LIBRARIES, EAGLET_WITH_CUDA, EAGLET_NCCL_INCLUDE_DIR, EAGLET_NCCL_LIBRARY.

if(NOT EAGLET_PYTHON)
  if(EXISTS "${CMAKE_SOURCE_DIR}/.venv/bin/python")
    set(EAGLET_PYTHON "${CMAKE_SOURCE_DIR}/.venv/bin/python")
  else()
    find_program(EAGLET_PYTHON NAMES python3 python REQUIRED)
  endif()
endif()
set(EAGLET_PYTHON "${EAGLET_PYTHON}" CACHE FILEPATH "Python whose PyTorch provides LibTorch")

execute_process(
  COMMAND "${EAGLET_PYTHON}" -c
    "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__); print(1 if torch.version.cuda else 0)"
  OUTPUT_VARIABLE _torch_info RESULT_VARIABLE _torch_rc ERROR_VARIABLE _torch_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "eaglet: ${EAGLET_PYTHON} cannot import torch (${_torch_err}). "
                      "Run scripts/setup.sh, or pass -DEAGLET_PYTHON=/path/to/python with PyTorch.")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 _torch_prefix)
list(GET _torch_info 1 EAGLET_TORCH_VERSION)
list(GET _torch_info 2 _torch_cuda)
list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
message(STATUS "eaglet: PyTorch ${EAGLET_TORCH_VERSION} from ${EAGLET_PYTHON} (CUDA: ${_torch_cuda})")

set(EAGLET_WITH_CUDA OFF)
if(_torch_cuda)
  set(EAGLET_WITH_CUDA ON)
  # Torch's CMake config looks for the CUDA toolkit; nvcc is on the GPU image.
  find_package(CUDAToolkit REQUIRED)
endif()
find_package(Torch REQUIRED)
# TORCH_CXX_FLAGS carries the C++ ABI flag of the wheel.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

if(EAGLET_WITH_CUDA)
  execute_process(
    COMMAND "${EAGLET_PYTHON}" -c "import nvidia.nccl as m; print(list(m.__path__)[0])"
    OUTPUT_VARIABLE _nccl_root RESULT_VARIABLE _nccl_rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(_nccl_rc EQUAL 0 AND EXISTS "${_nccl_root}/lib/libnccl.so.2")
    set(EAGLET_NCCL_LIBRARY "${_nccl_root}/lib/libnccl.so.2")
    set(EAGLET_NCCL_INCLUDE_DIR "${_nccl_root}/include")
  else()
    find_library(EAGLET_NCCL_LIBRARY NAMES nccl libnccl.so.2 REQUIRED)
    find_path(EAGLET_NCCL_INCLUDE_DIR nccl.h REQUIRED)
  endif()
  message(STATUS "eaglet: NCCL ${EAGLET_NCCL_LIBRARY} (headers ${EAGLET_NCCL_INCLUDE_DIR})")
endif()

# The wheel ships its own fmt headers in torch/include/fmt, a different fmt from the one spdlog was
# built against. Search torch's folders only after the system ones (-idirafter), so <fmt/...>
# always means the system fmt; nothing else in torch/include shadows a system header.
set(_torch_dirs ${TORCH_INCLUDE_DIRS})
foreach(_t torch torch_cpu torch_cpu_library torch_library c10 torch_cuda c10_cuda)
  if(TARGET ${_t})
    get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_inc)
      list(REMOVE_ITEM _inc ${_torch_dirs})
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
    endif()
  endif()
endforeach()
foreach(_d ${_torch_dirs})
  string(APPEND CMAKE_CXX_FLAGS " -idirafter ${_d}")
endforeach()
