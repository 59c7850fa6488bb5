# One precompiled header (torch and the standard library) shared by every test, example and
# benchmark target: a translation unit that parses <torch/torch.h> costs ~20 s otherwise.
if(NOT TARGET graft_pch)
  add_library(graft_pch STATIC "${PROJECT_SOURCE_DIR}/cmake/pch.cpp")
  target_link_libraries(graft_pch PUBLIC graft::graft)
  target_compile_options(graft_pch PUBLIC -Wall -Wextra -Wno-unused-parameter)
  target_precompile_headers(graft_pch PRIVATE
    <torch/torch.h> <fmt/format.h> <fmt/ranges.h> <string> <vector> <memory> <unordered_map>
    <map> <optional> <variant> <functional> <algorithm> <ranges>)
endif()

# graft_use_pch(target): link graft and reuse the shared precompiled header.
function(graft_use_pch target)
  target_link_libraries(${target} PRIVATE graft_pch)
  target_precompile_headers(${target} REUSE_FROM graft_pch)
endfunction()
