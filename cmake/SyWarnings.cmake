# Warning flags every Switchyard target uses: -Wall -Wextra clean is a requirement.
add_library(sy_warnings INTERFACE)
target_compile_options(sy_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-missing-field-initializers>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
option(SY_WERROR "Treat warnings as errors" OFF)
if(SY_WERROR)
  target_compile_options(sy_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
install(TARGETS sy_warnings EXPORT SwitchyardTargets)

# sy_add_library(NAME <lib> SOURCES ... DEPS ... [PRIVATE_DEPS ...])
# One library per layer: public headers in <dir>/include, sources in <dir>/src,
# exported as Switchyard::<lib>.
function(sy_add_library)
  cmake_parse_arguments(A "" "NAME" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(sy_${A_NAME} ${A_SOURCES})
  add_library(Switchyard::${A_NAME} ALIAS sy_${A_NAME})
  set_target_properties(sy_${A_NAME} PROPERTIES EXPORT_NAME ${A_NAME} OUTPUT_NAME switchyard_${A_NAME})
  target_include_directories(sy_${A_NAME} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(sy_${A_NAME} PUBLIC ${A_DEPS} PRIVATE sy_warnings ${A_PRIVATE_DEPS})
  set_property(GLOBAL APPEND PROPERTY SY_EXPORTED_LIBS sy_${A_NAME})
  install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endfunction()
