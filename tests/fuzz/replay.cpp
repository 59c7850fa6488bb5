// Replays files through every fuzz target without libFuzzer, so the normal build keeps each
// input that once crashed a parser fixed:
//   test_fuzz_replay [--target NAME] FILE_OR_DIR...
// Directories are read recursively (skipping hidden files and README.md). Exits non-zero if any input escapes with an exception that
// is not a graft::error; a crash or a harness check aborts the process, naming the input.

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "targets.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::vector<fs::path> files;
  std::string_view only;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--target" && i + 1 < argc) {
      only = argv[++i];
      continue;
    }
    if (fs::is_directory(arg)) {
      for (const auto& e : fs::recursive_directory_iterator(arg))
        if (e.is_regular_file() && !e.path().filename().string().starts_with(".") &&
            e.path().filename() != "README.md")
          files.push_back(e.path());
    } else if (fs::is_regular_file(arg)) {
      files.emplace_back(arg);
    } else {
      std::fprintf(stderr, "test_fuzz_replay: no such file or folder: %s\n", argv[i]);
      return 2;
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "usage: test_fuzz_replay [--target NAME] FILE_OR_DIR... (no input files given)\n");
    return 2;
  }
  std::sort(files.begin(), files.end());

  int failures = 0, runs = 0;
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    const auto* data = reinterpret_cast<const std::uint8_t*>(bytes.data());
    for (const auto& t : graft::fuzz::targets) {
      if (!only.empty() && t.name != only) continue;
      std::string where = path.string() + " (target " + std::string(t.name) + ")";
      graft::fuzz::set_current_input(where);
      ++runs;
      try {
        t.run(data, bytes.size());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "FAIL %s: uncaught %s\n", where.c_str(), e.what());
        ++failures;
      } catch (...) {
        std::fprintf(stderr, "FAIL %s: uncaught exception of unknown type\n", where.c_str());
        ++failures;
      }
    }
  }
  std::printf("test_fuzz_replay: %zu inputs, %d runs, %d failures\n", files.size(), runs, failures);
  return failures ? 1 : 0;
}
