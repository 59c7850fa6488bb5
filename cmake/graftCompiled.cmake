# graft::compiled: graft in its separately compiled mode. Linking it instead of graft::graft
# defines GRAFT_SEPARATE_COMPILATION for the user's units, so the headers only declare the
# checkpoint readers and writers, read()/save() and merge, and links their definitions
# (<graft/impl/src.hpp>), compiled once in this static library with the project's own compiler,
# flags and libtorch. Built only when something links it.
if(NOT TARGET graft_compiled)
  set(_graft_compiled_src "${CMAKE_CURRENT_BINARY_DIR}/graft_compiled.cpp")
  file(CONFIGURE OUTPUT "${_graft_compiled_src}" CONTENT "#include <graft/impl/src.hpp>\n")
  add_library(graft_compiled STATIC EXCLUDE_FROM_ALL "${_graft_compiled_src}")
  add_library(graft::compiled ALIAS graft_compiled)
  target_link_libraries(graft_compiled PUBLIC graft::graft)
  target_compile_definitions(graft_compiled PUBLIC GRAFT_SEPARATE_COMPILATION)
  set_target_properties(graft_compiled PROPERTIES POSITION_INDEPENDENT_CODE ON)
endif()
