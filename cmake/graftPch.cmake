# Build settings shared by graft's own tests, tutorials and benchmarks (never by users of
# graft::graft): warnings, and one precompiled header of libtorch that every target reuses,
# since a translation unit that parses <torch/torch.h> costs ~20 s otherwise.
#
# The precompiled header holds libtorch and nothing else: everything a graft header needs
# beyond libtorch (fmt, range-v3, the standard library headers libtorch does not bring) must
# be included by that header, or the header check (tests/headers) fails.
if(NOT TARGET graft_pch)
  # graft's own warning and sanitizer flags, for graft_pch's users and for graft::compiled when
  # the tests link it (GRAFT_TEST_COMPILED).
  set(_graft_options -Wall -Wextra -Wpedantic -Wno-unused-parameter)
  set(_graft_link_options)
  if(GRAFT_WERROR)
    list(APPEND _graft_options -Werror)
  endif()
  if(GRAFT_SANITIZE)
    # e.g. "address,undefined" or "thread": every test, tutorial and tool is instrumented, and
    # a sanitizer's first report ends the program with an error.
    list(APPEND _graft_options -fsanitize=${GRAFT_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer)
    list(APPEND _graft_link_options -fsanitize=${GRAFT_SANITIZE})
    if(GRAFT_SANITIZE MATCHES "undefined" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # GCC 12's null-pointer checks make the comparison of a constant's address with null in
      # std::string's constructor "not a constant expression", which breaks graft's
      # compile-time glob checks; AddressSanitizer still stops at a null dereference.
      list(APPEND _graft_options -fno-sanitize=null,nonnull-attribute,returns-nonnull-attribute)
    endif()
  endif()

  add_library(graft_pch STATIC "${PROJECT_SOURCE_DIR}/cmake/pch.cpp")
  if(GRAFT_TEST_COMPILED)
    target_link_libraries(graft_pch PUBLIC graft::compiled)
    target_compile_options(graft_compiled PRIVATE ${_graft_options})
  else()
    target_link_libraries(graft_pch PUBLIC graft::graft)
  endif()
  target_compile_options(graft_pch PUBLIC ${_graft_options})
  target_link_options(graft_pch PUBLIC ${_graft_link_options})
  if(GRAFT_PCH)
    target_precompile_headers(graft_pch PRIVATE <torch/torch.h>)
  endif()
endif()

# graft_use_pch(target): link graft with graft's own warning flags, and reuse the shared
# precompiled header.
function(graft_use_pch target)
  target_link_libraries(${target} PRIVATE graft_pch)
  if(GRAFT_PCH)
    target_precompile_headers(${target} REUSE_FROM graft_pch)
  endif()
endfunction()
