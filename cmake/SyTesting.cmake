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
  if(TARGET sy_test_support)
    target_link_libraries(${A_NAME} PRIVATE sy_test_support)
  endif()
  # gtest_discover_tests flattens list values given in PROPERTIES ("common;unit" would become
  # two arguments and shift every later pair, losing RESOURCE_LOCK), so the list-valued
  # properties are set by a second ctest include file, after discovery, on the list of
  # discovered tests.
  gtest_discover_tests(${A_NAME} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
                       TEST_LIST ${A_NAME}_TESTS PROPERTIES TIMEOUT ${A_TIMEOUT})
  set(late_props "LABELS [==[${A_LABELS}]==]")
  if(A_ENV)
    string(APPEND late_props " ENVIRONMENT [==[${A_ENV}]==]")
  endif()
  if(A_MULTIRANK)
    string(APPEND late_props " RESOURCE_LOCK ranks")
  endif()
  set(props_file ${CMAKE_CURRENT_BINARY_DIR}/${A_NAME}_properties.cmake)
  file(WRITE ${props_file}
       "if(${A_NAME}_TESTS)\n  set_tests_properties(\${${A_NAME}_TESTS} PROPERTIES ${late_props})\nendif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${props_file})
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
