# Decide whether the CUDA backend is built, before project() so CMAKE_CUDA_COMPILER is set.
# nvcc is looked for on PATH and in the standard CUDA location, so CUDA never vanishes
# silently because /usr/local/cuda/bin is missing from PATH.
function(sy_find_nvcc)
  find_program(SY_NVCC nvcc HINTS ENV CUDA_HOME ENV CUDA_PATH PATHS /usr/local/cuda/bin /usr/local/cuda-13.0/bin
               DOC "CUDA compiler used when SY_CUDA is AUTO or ON")
  if(SY_CUDA STREQUAL "OFF")
    set(SY_WITH_CUDA OFF CACHE INTERNAL "")
  elseif(SY_NVCC)
    set(SY_WITH_CUDA ON CACHE INTERNAL "")
    if(NOT CMAKE_CUDA_COMPILER)
      set(CMAKE_CUDA_COMPILER ${SY_NVCC} CACHE FILEPATH "CUDA compiler")
    endif()
  elseif(SY_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SY_CUDA=ON but nvcc was found neither on PATH nor in /usr/local/cuda/bin; "
                        "hint: install the CUDA toolkit or configure with -DSY_CUDA=OFF")
  else()
    set(SY_WITH_CUDA OFF CACHE INTERNAL "")
  endif()
  if(SY_WITH_CUDA AND NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90a CACHE STRING "CUDA architectures (default sm_90a)")
  endif()
endfunction()
