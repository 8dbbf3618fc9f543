# Training program pieces on top of the model (issue 8): FP8 recipe emulation, AdamW and
# schedules, tokenizers and data loading, checkpoints, the training loop and generation.
# Included from trainer/CMakeLists.txt; the sources join the sy_trainer library.
target_sources(sy_trainer PRIVATE
  src/train/fp8_gemm.cc
  src/train/fp8_linear_hook.cc
  src/train/optimizer.cc
  src/train/schedule.cc
  src/train/tokenizer.cc
  src/train/data.cc
  src/train/checkpoint.cc
  src/train/hf_import.cc
  src/train/trainer.cc
  src/train/generate.cc)
# FP8 E4M3 codec and 1x128 tile quantization come from the dispatch layer (trainer -> dispatch).
target_link_libraries(sy_trainer PRIVATE Switchyard::dispatch)
