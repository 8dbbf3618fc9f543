# Installs the libraries, headers and tools and exports the CMake package
# find_package(Switchyard) with targets Switchyard::topology, ::comm, ::dispatch, ...
include(CMakePackageConfigHelpers)
get_property(sy_libs GLOBAL PROPERTY SY_EXPORTED_LIBS)
install(TARGETS ${sy_libs} EXPORT SwitchyardTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(sy_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/Switchyard)
install(EXPORT SwitchyardTargets NAMESPACE Switchyard:: DESTINATION ${sy_cmake_dir})
configure_package_config_file(cmake/SwitchyardConfig.cmake.in
  ${PROJECT_BINARY_DIR}/SwitchyardConfig.cmake INSTALL_DESTINATION ${sy_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/SwitchyardConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/SwitchyardConfig.cmake ${PROJECT_BINARY_DIR}/SwitchyardConfigVersion.cmake
        DESTINATION ${sy_cmake_dir})
