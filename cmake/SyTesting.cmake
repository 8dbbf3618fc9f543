# Test helpers. Every test carries labels: its layer (common, topology, comm, dispatch,
# pipeline, trainer, tools) and its kind (unit, mp = multi-process, slow). Tests that
# start several ranks take the "ranks" resource lock so two multi-rank jobs never share
# the 2 cores of a CI machine.
include(GoogleTest)
find_package(GTest REQUIRED)

# sy_add_gtest(NAME <exe> SOURCES ... LIBS ... LABELS ... [TIMEOUT s] [MULTIRANK])
# Builds a GoogleTest binary and registers each TEST as its own ctest entry.
function(sy_add_gtest)
  cmake_parse_arguments(A "MULTIRANK" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ENV" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 120)
  endif()
  add_executable(${A_NAME} ${A_SOURCES})
  target_link_libraries(${A_NAME} PRIVATE ${A_LIBS} GTest::gtest GTest::gtest_main sy_warnings)
  set(props TIMEOUT ${A_TIMEOUT} LABELS "${A_LABELS}")
  if(A_MULTIRANK)
    list(APPEND props RESOURCE_LOCK ranks)
  endif()
  if(A_ENV)
    list(APPEND props ENVIRONMENT "${A_ENV}")
  endif()
  gtest_discover_tests(${A_NAME} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
                       PROPERTIES ${props})
endfunction()

# sy_add_rank_test(NAME <test> RANKS n [NODES m] [TIMEOUT s] LABELS ... COMMAND prog args...)
# Runs a program on n local ranks through sy-run (multi-process test).
function(sy_add_rank_test)
  cmake_parse_arguments(A "" "NAME;RANKS;NODES;TIMEOUT" "LABELS;COMMAND;ENV" ${ARGN})
  if(NOT A_NODES)
    set(A_NODES 1)
  endif()
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 120)
  endif()
  math(EXPR run_timeout "${A_TIMEOUT} - 10")
  add_test(NAME ${A_NAME}
           COMMAND $<TARGET_FILE:sy-run> -n ${A_RANKS} --nodes ${A_NODES} --timeout ${run_timeout} -- ${A_COMMAND})
  set_tests_properties(${A_NAME} PROPERTIES TIMEOUT ${A_TIMEOUT} LABELS "${A_LABELS};mp" RESOURCE_LOCK ranks)
  if(A_ENV)
    set_tests_properties(${A_NAME} PROPERTIES ENVIRONMENT "${A_ENV}")
  endif()
endfunction()
