# Distributed training (issue 9): DP x EP (x PP) over the comm, dispatch and pipeline
# libraries. Included from trainer/CMakeLists.txt; the sources join the sy_trainer library.
target_sources(sy_trainer PRIVATE
  src/dist/parallel_layout.cc
  src/dist/dispatched_experts.cc
  src/dist/fb_overlap.cc
  src/dist/grad_sync.cc
  src/dist/step_trace.cc
  src/dist/sharded_adamw.cc
  src/dist/sharded_checkpoint.cc
  src/dist/dist_trainer.cc
  src/dist/pipeline_trainer.cc
  src/dist/pipeline_run.cc
  src/dist/dist_run.cc)
target_link_libraries(sy_trainer PUBLIC Switchyard::comm Switchyard::dispatch Switchyard::pipeline)
