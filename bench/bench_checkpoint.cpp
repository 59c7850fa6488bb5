// Reading a checkpoint Python saved into a model: graft's read | strip_prefix | filter | merge
// against reading the file's bytes once (the floor any reader pays), against the same from a
// safetensors copy (memory-mapped), and against Python's torch.load + load_state_dict on the
// same file; plus the peak memory of a process that does the graft load.
//
// A custom main. Without arguments: ResNet-152 (~242 MB), median of 5 runs, page cache warm.
// --benchmark_min_time=T below 0.1 s (the ctest smoke run): ResNet-18, one run.
// --checkpoint PATH uses an existing torch.save file of a torchvision ResNet state dict whose
// keys carry DataParallel's "module." prefix (with --depth N for its depth).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/graft.hpp>

#include "resnet.hpp"

using namespace graft::literals;
namespace fs = std::filesystem;

namespace {

const char* python = "/usr/bin/python3";

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double time_median(int iters, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(std::move(t));
}

// Runs a shell command and returns its stdout; exits the benchmark if it fails.
std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + cmd);
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  if (int rc = pclose(p); rc != 0) {
    fmt::print(stderr, "command failed ({}): {}\n{}", rc, cmd, out);
    std::exit(1);
  }
  return out;
}

// The baseline: every byte of the file read() once into a buffer allocated beforehand (so the
// baseline pays no page faults of its own: the strictest floor).
std::size_t read_bytes(const std::string& path, std::vector<char>& buf) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  std::size_t total = 0;
  for (;;) {
    auto n = ::read(fd, buf.data() + total, buf.size() - total);
    if (n <= 0) break;
    total += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return total;
}

std::int64_t model_bytes(const torch::nn::Module& m) { return graft::state_dict(m).nbytes(); }

// What a user writes to load a DataParallel checkpoint into a model with a new head.
// threads = 0 is graft's default (one reading thread per core); 1 reads on the calling thread.
graft::load_report graft_load(const std::string& path, torch::nn::Module& model, unsigned threads = 0) {
  return graft::read(path) | graft::strip_prefix("module.") | graft::filter(!"fc.*"_glob) |
         graft::merge(model, {.missing = graft::allow("fc.*"_glob), .threads = threads});
}

// --rss-child PATH DEPTH MODE: a fresh process (exec'd, so no memory inherited from the
// benchmark) that builds the model and, for MODE "load", loads PATH into it; prints the
// model's bytes and the process's peak RSS (VmHWM) in bytes.
int rss_child(const std::string& path, int depth, const std::string& mode) {
  auto model = models::resnet(depth);
  if (mode == "load") graft_load(path, *model);
  std::ifstream status("/proc/self/status");
  std::string line;
  long hwm_kb = 0;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) hwm_kb = std::stol(line.substr(6));
  fmt::print("{} {}\n", model_bytes(*model), hwm_kb * 1024);
  return 0;
}

const char* make_script = R"(
import sys, torch, torchvision
torch.manual_seed(0)
m = getattr(torchvision.models, "resnet" + sys.argv[2])()
torch.save({"module." + k: v for k, v in m.state_dict().items()}, sys.argv[1])
)";

// torch.load + load_state_dict, timed inside Python (no interpreter start-up), median of N.
const char* python_script = R"(
import sys, time, torch, torchvision
path, depth, iters, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if threads: torch.set_num_threads(threads)
m = getattr(torchvision.models, "resnet" + depth)()
def load():
    sd = torch.load(path)
    sd = {k[len("module."):]: v for k, v in sd.items() if not k.startswith("module.fc.")}
    r = m.load_state_dict(sd, strict=False)
    assert sorted(r.missing_keys) == ["fc.bias", "fc.weight"] and not r.unexpected_keys, r
load()
ts = []
for _ in range(iters):
    t0 = time.perf_counter()
    load()
    ts.append(time.perf_counter() - t0)
print(sorted(ts)[len(ts) // 2], torch.get_num_threads())
)";

std::string shell_quote(const std::string& s) { return "'" + s + "'"; }

} // namespace

int main(int argc, char** argv) {
  int iters = 5, depth = 152;
  bool smoke = false;
  std::string ckpt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rss-child" && i + 3 < argc) return rss_child(argv[i + 1], std::stoi(argv[i + 2]), argv[i + 3]);
    if (a.starts_with("--benchmark_min_time=") && std::stod(a.substr(21)) < 0.1) smoke = true;
    else if (a == "--checkpoint" && i + 1 < argc) ckpt = argv[++i];
    else if (a == "--depth" && i + 1 < argc) depth = std::stoi(argv[++i]);
    else if (a == "--iters" && i + 1 < argc) iters = std::stoi(argv[++i]);
  }
  if (smoke) iters = 1, depth = ckpt.empty() ? 18 : depth;

  std::string tmp_template = (fs::temp_directory_path() / "graft-bench-ckpt-XXXXXX").string();
  std::string dir = mkdtemp(tmp_template.data());
  if (ckpt.empty()) {
    ckpt = dir + "/resnet" + std::to_string(depth) + ".pth";
    run(fmt::format("{} -c {} {} {}", python, shell_quote(make_script), shell_quote(ckpt), depth));
  }
  std::string st = dir + "/resnet.safetensors";
  graft::save(graft::read(ckpt) | graft::collect(), st);
  std::string legacy = dir + "/resnet_legacy.pth";  // torch.save's pre-1.6 format, same tensors
  graft::save(graft::read(ckpt) | graft::collect(), legacy, graft::checkpoint_format::torch_save_legacy);
  auto ckpt_size = static_cast<std::int64_t>(fs::file_size(ckpt));
  auto st_size = static_cast<std::int64_t>(fs::file_size(st));
  auto legacy_size = static_cast<std::int64_t>(fs::file_size(legacy));
  std::int64_t largest = 0;
  for (auto& e : graft::read(ckpt) | graft::collect()) largest = std::max<std::int64_t>(largest, e.tensor.storage().nbytes());

  // Peak memory first, in fresh processes, before this one grows.
  auto exe = fs::read_symlink("/proc/self/exe").string();
  auto child = [&](const char* mode, const std::string& file) {
    std::int64_t model = 0, hwm = 0;
    std::sscanf(run(fmt::format("{} --rss-child {} {} {}", shell_quote(exe), shell_quote(file), depth, mode)).c_str(),
                "%ld %ld", &model, &hwm);
    return std::pair{model, hwm};
  };
  auto [mbytes, rss_model_only] = child("model", ckpt);
  auto [mbytes2, rss_load] = child("load", ckpt);
  auto [mbytes3, rss_legacy] = child("load", legacy);

  auto model = models::resnet(depth);
  std::vector<char> buf(static_cast<std::size_t>(std::max({ckpt_size, st_size, legacy_size})));
  read_bytes(ckpt, buf), read_bytes(st, buf), read_bytes(legacy, buf);  // page cache warm
  graft_load(ckpt, *model), graft_load(st, *model), graft_load(legacy, *model);

  double raw = time_median(iters, [&] { read_bytes(ckpt, buf); });
  double raw_st = time_median(iters, [&] { read_bytes(st, buf); });
  double g = time_median(iters, [&] { graft_load(ckpt, *model); });
  double g_st = time_median(iters, [&] { graft_load(st, *model); });
  double g1 = time_median(iters, [&] { graft_load(ckpt, *model, 1); });
  double g1_st = time_median(iters, [&] { graft_load(st, *model, 1); });
  double raw_legacy = time_median(iters, [&] { read_bytes(legacy, buf); });
  double g_legacy = time_median(iters, [&] { graft_load(legacy, *model); });
  // Python's median time and the torch threads it ran with; threads 0 leaves torch's default.
  auto python_time = [&](unsigned threads) {
    double t = 0;
    int n = 0;
    std::sscanf(run(fmt::format("{} -c {} {} {} {} {}", python, shell_quote(python_script), shell_quote(ckpt), depth, iters, threads)).c_str(),
                "%lf %d", &t, &n);
    return std::pair{t, n};
  };
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  auto [py, torch_threads] = python_time(0);
  auto [py_n, cores_used] = python_time(cores);

  auto mib = [](double b) { return b / (1024.0 * 1024.0); };
  fmt::print("ResNet-{}: checkpoint {:.1f} MiB (torch.save), {:.1f} MiB (safetensors); model {:.1f} MiB; median of {} runs, page cache warm\n",
             depth, mib(ckpt_size), mib(st_size), mib(mbytes), iters);
  fmt::print("| task | time | ratio | goal |\n|---|---|---|---|\n");
  fmt::print("| read() the torch.save file's bytes (baseline) | {:.1f} ms | 1.00x | — |\n", raw * 1e3);
  fmt::print("| graft: read \\| strip_prefix \\| filter \\| merge, torch.save | {:.1f} ms | {:.2f}x baseline | ≤ 1.5x |\n", g * 1e3, g / raw);
  fmt::print("| read() the safetensors file's bytes | {:.1f} ms | 1.00x | — |\n", raw_st * 1e3);
  fmt::print("| graft: the same from safetensors (mapped) | {:.1f} ms | {:.2f}x its read() | ≤ 1.2x |\n", g_st * 1e3, g_st / raw_st);
  fmt::print("| graft, one reading thread, torch.save | {:.1f} ms | {:.2f}x baseline | — |\n", g1 * 1e3, g1 / raw);
  fmt::print("| graft, one reading thread, safetensors | {:.1f} ms | {:.2f}x its read() | — |\n", g1_st * 1e3, g1_st / raw_st);
  fmt::print("| read() the legacy torch.save file's bytes | {:.1f} ms | 1.00x | — |\n", raw_legacy * 1e3);
  fmt::print("| graft: the same from the legacy format (storages copied) | {:.1f} ms | {:.2f}x its read() | ≤ 1.5x |\n",
             g_legacy * 1e3, g_legacy / raw_legacy);
  fmt::print("| Python: torch.load + load_state_dict ({} torch thread{}) | {:.1f} ms | {:.2f}x graft's time | ≥ 3x |\n",
             torch_threads, torch_threads == 1 ? "" : "s", py * 1e3, py / g);
  fmt::print("| Python, torch.set_num_threads({}) | {:.1f} ms | {:.2f}x graft's time | — |\n", cores_used, py_n * 1e3, py_n / g);
  fmt::print("| Python vs graft with one reading thread | — | {:.2f}x | — |\n", py / g1);
  fmt::print("| peak RSS, process that builds the model only | {:.1f} MiB | — | — |\n", mib(rss_model_only));
  fmt::print("| peak RSS, process that builds the model and loads | {:.1f} MiB | {:.2f}x (model + checkpoint) | ≤ 1.1x* |\n",
             mib(rss_load), double(rss_load) / double(mbytes2 + ckpt_size));
  fmt::print("| load's increase over model-only | {:.1f} MiB | {:.2f}x checkpoint | ≤ 1.1x |\n",
             mib(rss_load - rss_model_only), double(rss_load - rss_model_only) / double(ckpt_size));
  fmt::print("| load's increase over model-only, legacy format | {:.1f} MiB | {:.2f}x checkpoint | — |\n",
             mib(rss_legacy - rss_model_only), double(rss_legacy - rss_model_only) / double(legacy_size));
  fmt::print("| legacy load's peak over the zip format's (the storages it copies) | {:.1f} MiB | {:.2f}x checkpoint; largest "
             "storage {:.2f}x | ≤ 1x + largest |\n",
             mib(rss_legacy - rss_load), double(rss_legacy - rss_load) / double(legacy_size), double(largest) / double(legacy_size));
  fmt::print("* the whole process, libtorch's own code and allocations included\n");

  // The page cache cold: the file's cached pages evicted before each run (posix_fadvise, so
  // the process's own code stays cached, as it would in a real program's first load).
  auto evict = [](const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    bool ok = fd >= 0 && ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
    if (fd >= 0) ::close(fd);
    return ok;
  };
  if (evict(legacy) && evict(ckpt)) {
    auto cold = [&](const std::string& path, auto&& f) {
      return time_median(iters, [&] {
        evict(path);
        f();
      });
    };
    double cold_raw_legacy = cold(legacy, [&] { read_bytes(legacy, buf); });
    double cold_legacy = cold(legacy, [&] { graft_load(legacy, *model); });
    double cold_raw = cold(ckpt, [&] { read_bytes(ckpt, buf); });
    double cold_g = cold(ckpt, [&] { graft_load(ckpt, *model); });
    fmt::print("\nThe page cache cold (the file's pages evicted before each run):\n| task | time | ratio | goal |\n|---|---|---|---|\n");
    fmt::print("| read() the legacy torch.save file's bytes | {:.1f} ms | 1.00x | — |\n", cold_raw_legacy * 1e3);
    fmt::print("| graft: the same from the legacy format | {:.1f} ms | {:.2f}x its read() | ≤ 1.5x |\n", cold_legacy * 1e3,
               cold_legacy / cold_raw_legacy);
    fmt::print("| read() the torch.save file's bytes | {:.1f} ms | 1.00x | — |\n", cold_raw * 1e3);
    fmt::print("| graft: read \\| strip_prefix \\| filter \\| merge, torch.save | {:.1f} ms | {:.2f}x its read() | — |\n",
               cold_g * 1e3, cold_g / cold_raw);
  }

  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
