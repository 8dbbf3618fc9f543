# Planner (issue 11): memory and step-time model of large training layouts, built on the
# model configuration, the pipeline simulator and the dispatch router/layout.
# Included from trainer/CMakeLists.txt; the sources join the sy_trainer library.
target_sources(sy_trainer PRIVATE
  src/plan/cluster.cc
  src/plan/op_costs.cc
  src/plan/expert_traffic.cc
  src/plan/planner.cc
  src/plan/report.cc
  src/plan/calibrate.cc)
target_link_libraries(sy_trainer PUBLIC Switchyard::pipeline PRIVATE Switchyard::dispatch)
