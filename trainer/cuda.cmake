# CUDA backend of the trainer (issue #10): cuBLASLt BF16 and block-scaled FP8 GEMMs and
# their benchmark, the model's device kernels (src/cuda/kernels/*.cu) and the model on one
# GPU (src/cuda/model/). Included from trainer/CMakeLists.txt; without CUDA the same API
# throws Unsupported (the scale-layout conversions and the report formatting work everywhere).
target_sources(sy_trainer PRIVATE src/cuda/gemm_scales.cc src/cuda/gemm_perf_report.cc)
if(SY_WITH_CUDA)
  file(GLOB sy_trainer_cuda_kernels CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/kernels/*.cu
       ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/kernels/*.cc)
  file(GLOB sy_trainer_cuda_model CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/model/*.cu
       ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/model/*.cc)
  target_sources(sy_trainer PRIVATE src/cuda/gemm.cc src/cuda/gemm_perf.cc ${sy_trainer_cuda_kernels}
                 ${sy_trainer_cuda_model})
  target_link_libraries(sy_trainer PRIVATE CUDA::cublasLt CUDA::cudart Switchyard::dispatch)
else()
  file(GLOB sy_trainer_cuda_none CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/*_none.cc
       ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/model/none/*.cc)
  target_sources(sy_trainer PRIVATE ${sy_trainer_cuda_none})
endif()
