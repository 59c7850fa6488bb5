// Combining checkpoints streamed: a uniform soup of 4 safetensors checkpoints of ~1 GiB each
// written to a fifth, against reading the 4 once (time), and the combining process's peak
// memory against one checkpoint's size. Prints a Markdown table (bench/README.md).
//
//   bench_combine [--mib N] [--inputs K] [--iters I] [--dir DIR]
//
// Peak memory is measured in fresh processes (this program exec'd again with --rss-child), as
// VmHWM minus that of a process that only starts (libtorch loaded): mapped pages that were read
// count, as they do for any reader. The page cache is warm for both timings (every file was read
// before), so the times compare the work, not the disk.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/combine.hpp>
#include <graft/graft.hpp>

namespace fs = std::filesystem;

namespace {

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run " + cmd);
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  if (::pclose(p) != 0) throw std::runtime_error(cmd + " failed:\n" + out);
  return out;
}

std::int64_t peak_rss() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

template <class F>
double time_median(int iters, F&& f) {
  std::vector<double> ts;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

// Reads every tensor of the checkpoints once, as a program that uses them would (a sum touches
// every byte).
double read_all(const std::vector<std::string>& paths) {
  double s = 0;
  for (const auto& p : paths)
    for (const auto& e : graft::read(p) | graft::collect()) s += e.tensor.sum().item<double>();
  return s;
}

graft::combine_report soup(const std::vector<std::string>& paths, const std::string& out) {
  return graft::average(std::vector<graft::combine_input>(paths.begin(), paths.end())).save(out);
}

// --rss-child MODE OUT PATH...: "start" only starts; "combine" writes the soup.
int rss_child(const std::string& mode, const std::string& out, std::vector<std::string> paths) {
  if (mode == "combine") soup(paths, out);
  fmt::print("{}\n", peak_rss());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  std::int64_t mib = 1024;
  int inputs = 4, iters = 3;
  fs::path where = fs::temp_directory_path();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rss-child" && i + 2 < argc)
      return rss_child(argv[i + 1], argv[i + 2], std::vector<std::string>(argv + i + 3, argv + argc));
    if (a.starts_with("--benchmark_min_time=") && std::stod(a.substr(21)) < 0.1) mib = 16, iters = 1;  // ctest's smoke run
    else if (a == "--mib" && i + 1 < argc) mib = std::stoll(argv[++i]);
    else if (a == "--inputs" && i + 1 < argc) inputs = std::stoi(argv[++i]);
    else if (a == "--iters" && i + 1 < argc) iters = std::stoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) where = argv[++i];
  }
  std::string tmpl = (where / "graft-bench-combine-XXXXXX").string();
  const std::string dir = ::mkdtemp(tmpl.data());

  // Checkpoints of 16 MiB float32 tensors (a 2048 x 2048 weight each), ~mib MiB in all.
  const std::int64_t per = 16, tensors = std::max<std::int64_t>(1, mib / per);
  std::vector<std::string> paths;
  for (int k = 0; k < inputs; ++k) {
    torch::manual_seed(k);
    graft::state_dict sd;
    for (std::int64_t t = 0; t < tensors; ++t) sd.insert(fmt::format("layers.{}.weight", t), torch::randn({2048, 2048}));
    paths.push_back(fmt::format("{}/ft{}.safetensors", dir, k));
    graft::save(sd, paths.back());
  }
  const auto size = static_cast<std::int64_t>(fs::file_size(paths[0]));
  const std::string out = dir + "/soup.safetensors";

  auto exe = fs::read_symlink("/proc/self/exe").string();
  auto child = [&](const char* mode) {
    std::string cmd = fmt::format("'{}' --rss-child {} '{}'", exe, mode, out);
    for (const auto& p : paths) cmd += " '" + p + "'";
    return std::stoll(run(cmd));
  };
  read_all(paths);  // page cache warm
  const auto rss_start = child("start"), rss_combine = child("combine");

  // The least any tool must do: read the inputs once, and write one checkpoint's bytes
  // atomically (the soup computed beforehand, in memory).
  auto in_memory = graft::average(std::vector<graft::combine_input>(paths.begin(), paths.end())).load();
  const std::string copy = dir + "/copy.safetensors";
  double t_read = time_median(iters, [&] { read_all(paths); });
  double t_write = time_median(iters, [&] { graft::save(in_memory, copy); });
  in_memory = graft::state_dict();
  double t_memory = time_median(iters, [&] {
    graft::average(std::vector<graft::combine_input>(paths.begin(), paths.end())).load();
  });
  double t_combine = time_median(iters, [&] { soup(paths, out); });
  auto mib_of = [](std::int64_t b) { return static_cast<double>(b) / (1 << 20); };

  fmt::print("| uniform soup of {} x {:.0f} MiB safetensors, streamed to safetensors | graft | ratio | goal |\n", inputs, mib_of(size));
  fmt::print("|---|---|---|---|\n");
  fmt::print("| read the {} inputs once (warm page cache) | {:.3f} s | 1.00x | |\n", inputs, t_read);
  fmt::print("| write one checkpoint of that size, atomically (save of a state dict in memory) | {:.3f} s | | |\n", t_write);
  fmt::print("| combine in memory (load(): the soup computed, no file written) | {:.3f} s | {:.2f}x | |\n", t_memory, t_memory / t_read);
  fmt::print("| combine and write the soup (atomic: fsync, rename) | {:.3f} s | {:.2f}x of reading; {:.2f}x of reading + writing | <= 1.3x |\n",
             t_combine, t_combine / t_read, t_combine / (t_read + t_write));
  fmt::print("| peak RSS of a process that only starts | {:.1f} MiB | | |\n", mib_of(rss_start));
  fmt::print("| peak RSS above that, combining the {} | {:.1f} MiB | {:.2f}x of one checkpoint | <= 0.3x |\n", inputs,
             mib_of(rss_combine - rss_start), static_cast<double>(rss_combine - rss_start) / static_cast<double>(size));
  fs::remove_all(dir);
  return 0;
}
