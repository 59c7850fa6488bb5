include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(GRAFT_CMAKE_DIR "${CMAKE_INSTALL_DATADIR}/cmake/graft")
install(TARGETS graft EXPORT graftTargets)
install(DIRECTORY include/graft DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT graftTargets NAMESPACE graft:: DESTINATION "${GRAFT_CMAKE_DIR}")
configure_package_config_file(cmake/graftConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/graftConfig.cmake"
  INSTALL_DESTINATION "${GRAFT_CMAKE_DIR}")
# Header-only: the version file must not pin the consumer's architecture.
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/graftConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES
  "${CMAKE_CURRENT_BINARY_DIR}/graftConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/graftConfigVersion.cmake"
  cmake/graftDependencies.cmake
  cmake/graftCompiled.cmake
  DESTINATION "${GRAFT_CMAKE_DIR}")
