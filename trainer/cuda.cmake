# CUDA backend of the trainer (issue #10): cuBLASLt BF16 and block-scaled FP8 GEMMs and
# their benchmark. Included from trainer/CMakeLists.txt; without CUDA the same API throws
# Unsupported (the scale-layout conversions and the report formatting work everywhere).
target_sources(sy_trainer PRIVATE src/cuda/gemm_scales.cc src/cuda/gemm_perf_report.cc)
if(SY_WITH_CUDA)
  target_sources(sy_trainer PRIVATE src/cuda/gemm.cc src/cuda/gemm_perf.cc)
  target_link_libraries(sy_trainer PRIVATE CUDA::cublasLt CUDA::cudart Switchyard::dispatch)
else()
  target_sources(sy_trainer PRIVATE src/cuda/gemm_none.cc)
endif()
