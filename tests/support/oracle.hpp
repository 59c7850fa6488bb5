#pragma once
// Test helpers: run the installed Python torch as an oracle, and scratch directories.

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

namespace graft::test {

/// A fresh directory under the system temp dir, removed with everything in it on destruction.
class scratch_dir {
public:
  scratch_dir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("graft-test-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
  std::filesystem::path path_;
};

/// The Python that runs `code`: GRAFT_PYTHON has the torch graft is built against;
/// code that imports torchvision or timm runs with GRAFT_PYTHON_VISION instead, since PyPI's
/// torchvision does not run beside every torch wheel (see tests/CMakeLists.txt).
inline std::string python_for(const std::string& code) {
  bool vision = code.find("torchvision") != std::string::npos || code.find("timm") != std::string::npos;
  return vision ? GRAFT_PYTHON_VISION : GRAFT_PYTHON;
}

/// Runs `code` with `python`; returns its stdout. Throws if it exits non-zero.
inline std::string run_python_with(const std::string& python, const std::string& code) {
  scratch_dir dir;
  auto script = dir.file("oracle.py");
  std::ofstream(script) << code;
  std::string cmd = python + " " + script + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot start " + cmd);
  std::array<char, 4096> buf{};
  while (auto n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  int rc = ::pclose(p);
  if (rc != 0) throw std::runtime_error("python oracle failed (" + std::to_string(rc) + "):\n" + out);
  return out;
}

/// Runs `code` with the Python that has torch (or torchvision, see python_for); returns its
/// stdout. Throws if it exits non-zero.
inline std::string run_python(const std::string& code) { return run_python_with(python_for(code), code); }

} // namespace graft::test
