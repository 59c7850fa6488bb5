# Finds graft's dependencies and gives each one target name, the same whether graft is
# used from its source tree or from an installed package (graftConfig.cmake includes this).
#
# Which libtorch: whatever find_package(Torch) finds, as for any libtorch project (a
# distribution's package, or -DCMAKE_PREFIX_PATH=/path/to/libtorch for the zip from
# pytorch.org), or the one inside a PyTorch wheel: -DGRAFT_TORCH_PYTHON=/path/to/venv/bin/python
# asks that Python's torch for its CMake package.
include(CMakeFindDependencyMacro)
include(GNUInstallDirs)

if(NOT TARGET graft::torch)
  set(GRAFT_TORCH_PYTHON "" CACHE FILEPATH "A Python whose torch package holds the libtorch to build against (empty: find_package(Torch) as usual)")
  if(GRAFT_TORCH_PYTHON)
    execute_process(
      COMMAND "${GRAFT_TORCH_PYTHON}" -c "import os, sys, torch; sys.stdout.write(os.path.dirname(torch.__file__))"
      OUTPUT_VARIABLE _graft_torch_prefix ERROR_VARIABLE _graft_torch_err RESULT_VARIABLE _graft_torch_rc)
    if(NOT _graft_torch_rc EQUAL 0)
      message(FATAL_ERROR "graft: GRAFT_TORCH_PYTHON='${GRAFT_TORCH_PYTHON}' cannot import torch:\n${_graft_torch_err}")
    endif()
    # The torch package folder itself, not torch.utils.cmake_prefix_path: as a prefix it puts
    # its lib/ ahead of the system's for TorchConfig's find_library calls too.
    list(PREPEND CMAKE_PREFIX_PATH "${_graft_torch_prefix}")
  endif()
  find_dependency(Torch)
  # TorchConfig finds libtorch.so with find_library, which may take another libtorch installed
  # in a system folder: refuse a mix of one release's headers and another's library.
  get_filename_component(_graft_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
  get_filename_component(_graft_torch_lib_dir "${_graft_torch_lib_dir}" REALPATH)
  get_filename_component(_graft_torch_prefix_real "${TORCH_INSTALL_PREFIX}" REALPATH)
  string(FIND "${_graft_torch_lib_dir}/" "${_graft_torch_prefix_real}/" _graft_torch_lib_at)
  if(NOT _graft_torch_lib_at EQUAL 0)
    message(FATAL_ERROR "graft: libtorch's CMake package at ${Torch_DIR} found the library ${TORCH_LIBRARY}, "
                        "which is not under its own prefix ${TORCH_INSTALL_PREFIX}; "
                        "put ${TORCH_INSTALL_PREFIX} first in CMAKE_PREFIX_PATH, or set TORCH_LIBRARY")
  endif()
  if(Torch_VERSION VERSION_LESS 1.13)
    message(FATAL_ERROR "graft: needs libtorch 1.13 or newer; found ${Torch_VERSION} at ${Torch_DIR}")
  endif()
  # graft links Debian-built libraries (RE2, fmt) that pass std::string across their API: a
  # libtorch built for the old C++ ABI cannot be mixed with them.
  if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
    message(FATAL_ERROR "graft: the libtorch at ${Torch_DIR} uses the pre-C++11 ABI (-D_GLIBCXX_USE_CXX11_ABI=0); "
                        "take the cxx11-ABI build of libtorch")
  endif()
  add_library(graft::torch INTERFACE IMPORTED)
  set_target_properties(graft::torch PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INCLUDE_DIRS}"
    INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}")
  set(GRAFT_TORCH_VERSION "${Torch_VERSION}" CACHE INTERNAL "")
  # libtorch 2.x carries fmt's headers in its include folder, ahead of the system's: graft then
  # uses that fmt, header-only, so headers and library never come from two fmt releases.
  set(GRAFT_TORCH_BUNDLED_FMT OFF)
  foreach(_graft_dir IN LISTS TORCH_INCLUDE_DIRS)
    # (A system include folder such as /usr/include is searched last and shadows nothing.)
    if(EXISTS "${_graft_dir}/fmt/format.h" AND NOT _graft_dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
      set(GRAFT_TORCH_BUNDLED_FMT ON)
    endif()
  endforeach()
endif()
if(NOT TARGET graft::fmt)
  add_library(graft::fmt INTERFACE IMPORTED)
  if(GRAFT_TORCH_BUNDLED_FMT)
    set_target_properties(graft::fmt PROPERTIES INTERFACE_COMPILE_DEFINITIONS FMT_HEADER_ONLY=1)
  else()
    if(NOT TARGET fmt::fmt)
      find_dependency(fmt)
    endif()
    set_target_properties(graft::fmt PROPERTIES INTERFACE_LINK_LIBRARIES fmt::fmt)
  endif()
endif()
if(NOT TARGET range-v3::range-v3)
  find_dependency(range-v3)
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
