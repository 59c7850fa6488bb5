#pragma once
// Runs hidden test cases of this executable as the ranks of a local process group: the parent
// test starts them with graft::dist::launch_local (TCP store on 127.0.0.1, a free port) and a
// bounded timeout; each rank's Catch2 assertions decide its exit code.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <graft/distributed.hpp>

namespace graft::test {

/// Launches the hidden test case `name` as `nproc` ranks, with GRAFT_DIST_OUT=dir.
inline dist::launch_result run_ranks(const std::string& name, const std::filesystem::path& dir, int nproc = 2,
                                     std::chrono::seconds timeout = std::chrono::seconds(40)) {
  ::setenv("GRAFT_DIST_OUT", dir.c_str(), 1);
  auto self = std::filesystem::read_symlink("/proc/self/exe").string();
  return dist::launch_local({self, name}, {.nproc = nproc, .timeout = timeout});
}

/// The directory the parent test gave the ranks.
inline std::filesystem::path rank_dir() {
  const char* d = std::getenv("GRAFT_DIST_OUT");
  return d ? std::filesystem::path(d) : std::filesystem::temp_directory_path();
}

/// This rank's process group; collectives give up after `timeout` instead of hanging.
inline dist::process_group rank_group(std::chrono::milliseconds timeout = std::chrono::milliseconds(8000)) {
  return dist::gloo_group_from_env({.timeout = timeout});
}

} // namespace graft::test
