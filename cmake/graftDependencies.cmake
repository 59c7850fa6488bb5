# Finds graft's dependencies and gives each one target name, the same whether graft is
# used from its source tree or from an installed package (graftConfig.cmake includes this).
include(CMakeFindDependencyMacro)
include(GNUInstallDirs)

if(NOT TARGET graft::torch)
  find_dependency(Torch)
  add_library(graft::torch INTERFACE IMPORTED)
  set_target_properties(graft::torch PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INCLUDE_DIRS}"
    INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}")
endif()
if(NOT TARGET fmt::fmt)
  find_dependency(fmt)
endif()
if(NOT TARGET range-v3::range-v3)
  find_dependency(range-v3)
endif()
if(NOT TARGET nlohmann_json::nlohmann_json)
  find_dependency(nlohmann_json)
endif()
if(NOT TARGET ZLIB::ZLIB)
  find_dependency(ZLIB)
endif()
if(NOT TARGET graft::re2)
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(GRAFT_RE2 QUIET IMPORTED_TARGET re2)
  endif()
  add_library(graft::re2 INTERFACE IMPORTED)
  if(TARGET PkgConfig::GRAFT_RE2)
    set_target_properties(graft::re2 PROPERTIES INTERFACE_LINK_LIBRARIES PkgConfig::GRAFT_RE2)
  else()
    find_library(GRAFT_RE2_LIBRARY re2 REQUIRED)
    find_path(GRAFT_RE2_INCLUDE_DIR re2/re2.h REQUIRED)
    set_target_properties(graft::re2 PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${GRAFT_RE2_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${GRAFT_RE2_LIBRARY}")
  endif()
endif()

# Under add_subdirectory, imported targets are visible only in the directory that found them;
# graft::graft names them in its interface (torch's even through generator expressions), so
# make every target imported here global.
if(NOT CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  get_directory_property(_graft_imported IMPORTED_TARGETS)
  foreach(t IN LISTS _graft_imported)
    get_target_property(_graft_global "${t}" IMPORTED_GLOBAL)
    if(NOT _graft_global)
      set_target_properties("${t}" PROPERTIES IMPORTED_GLOBAL TRUE)
    endif()
  endforeach()
endif()
