// libtorch archives: what torch::save(module) writes reads back as a flat dict of dotted keys
// equal to the module's state; what write_libtorch_archive writes, torch::load reads.

#include <filesystem>
#include <fstream>
#include <iterator>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/formats/libtorch_archive.hpp>

#include "oracle.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;

namespace {

struct BlockImpl : torch::nn::Module {
  BlockImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).bias(false)));
    bn = register_module("bn", torch::nn::BatchNorm2d(4));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(Block);

struct NetImpl : torch::nn::Module {
  NetImpl() {
    scale = register_parameter("scale", torch::ones(1));
    steps = register_buffer("steps", torch::tensor(7, torch::kLong));
    body = register_module("body", torch::nn::ModuleList(Block(), Block()));
    fc = register_module("fc", torch::nn::Linear(4, 2));
  }
  torch::Tensor scale, steps;
  torch::nn::ModuleList body{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(Net);

// The module's state as Python would list it: every parameter and buffer under its dotted path.
std::vector<std::pair<std::string, torch::Tensor>> state_of(torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  for (auto& b : m.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

void randomize(torch::nn::Module& m) {
  torch::NoGradGuard guard;
  for (auto& [k, t] : state_of(m))
    if (t.is_floating_point()) t.uniform_(-1, 1);
}

std::string message_of(const std::string& path) {
  try {
    graft::read_libtorch_archive(path);
  } catch (const graft::format_error& e) {
    return e.what();
  }
  return "no error";
}

} // namespace

TEST_CASE("read_libtorch_archive reads what torch::save(module) writes, by dotted key", "[libtorch_archive]") {
  scratch_dir dir;
  auto path = dir.file("net.pt");
  Net net;
  randomize(*net);
  torch::save(net, path);

  auto v = graft::read_libtorch_archive(path);
  REQUIRE(v.is_dict());
  const auto& d = v.as_dict();
  auto state = state_of(*net);
  CHECK(d.size() == state.size());
  for (auto& [k, t] : state) {
    INFO(k);
    auto* got = d.find(k);
    REQUIRE(got);
    CHECK(torch::equal(got->as_tensor(), t));
  }
  // Each archive level holds its parameters, then its buffers, then its submodules.
  std::vector<std::string> keys;
  for (auto& [k, t] : d) keys.push_back(k.as_string());
  CHECK(keys == std::vector<std::string>{
                    "scale", "steps",
                    "body.0.conv.weight", "body.0.bn.weight", "body.0.bn.bias", "body.0.bn.running_mean",
                    "body.0.bn.running_var", "body.0.bn.num_batches_tracked",
                    "body.1.conv.weight", "body.1.bn.weight", "body.1.bn.bias", "body.1.bn.running_mean",
                    "body.1.bn.running_var", "body.1.bn.num_batches_tracked",
                    "fc.weight", "fc.bias"});
  CHECK(d.at("steps").as_tensor().item<std::int64_t>() == 7);
}

TEST_CASE("read_libtorch_archive keeps the plain values an OutputArchive holds", "[libtorch_archive]") {
  scratch_dir dir;
  auto path = dir.file("archive.pt");
  torch::serialize::OutputArchive archive, nested;
  archive.write("w", torch::arange(3.0));
  archive.write("epoch", c10::IValue(int64_t{3}));
  archive.write("name", c10::IValue(std::string("run-1")));
  nested.write("lr", c10::IValue(0.5));
  archive.write("opt", nested);
  archive.save_to(path);
  auto v = graft::read_libtorch_archive(path);
  const auto& d = v.as_dict();
  CHECK(torch::equal(d.at("w").as_tensor(), torch::arange(3.0)));
  CHECK(d.at("epoch").as_int() == 3);
  CHECK(d.at("name").as_string() == "run-1");
  CHECK(d.at("opt.lr").as_number() == 0.5);
  CHECK(d.size() == 4);
}

TEST_CASE("read_libtorch_archive refuses what is not a libtorch archive, naming the file", "[libtorch_archive]") {
  scratch_dir dir;
  auto path = dir.file("bad.pt");
  const auto prefix = fmt::format("[graft.format] '{}': not a readable libtorch archive (torch::save / torch.jit.save): ", path);
  std::ofstream(path) << "garbage, not a zip";
  CHECK_THAT(message_of(path), Catch::Matchers::StartsWith(prefix));
  std::ofstream(path, std::ios::trunc).close();
  CHECK_THAT(message_of(path), Catch::Matchers::StartsWith(prefix));
  // A Python torch.save file is a zip too, but not a TorchScript archive.
  run_python(fmt::format("import torch\ntorch.save({{'w': torch.ones(2)}}, '{}')\n", path));
  CHECK_THAT(message_of(path), Catch::Matchers::StartsWith(prefix));
  // A truncated archive.
  Net net;
  torch::save(net, path);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  CHECK_THAT(message_of(path), Catch::Matchers::StartsWith(prefix));
  CHECK_THROWS_AS(graft::read_libtorch_archive(dir.file("missing.pt")), graft::io_error);
}

TEST_CASE("read_libtorch_archive turns any truncated or corrupted archive into one format_error naming the file",
          "[libtorch_archive]") {
  scratch_dir dir;
  auto good = dir.file("good.pt"), path = dir.file("bad.pt");
  Net net;
  torch::save(net, good);
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto write = [&](const std::string& b) { std::ofstream(path, std::ios::binary | std::ios::trunc) << b; };
  const auto named = fmt::format("[graft.format] '{}': ", path);
  // Every truncation loses the zip's end-of-central-directory record.
  for (std::size_t n = 0; n < bytes.size(); n += 61) {
    INFO("truncated to " << n << " bytes");
    write(bytes.substr(0, n));
    CHECK_THAT(message_of(path), Catch::Matchers::StartsWith(named));
  }
  // Corrupting any byte of data.pkl (a stored record, so no CRC check) either still reads or is
  // refused naming the file; it never crashes or lets another exception out.
  const auto at = bytes.find("good/data.pkl");
  REQUIRE(at != std::string::npos);
  const auto start = bytes.find("\x80\x02", at);
  const auto stop = bytes.find("PK", start);
  REQUIRE(stop != std::string::npos);
  int refused = 0;
  for (std::size_t i = start; i < stop; ++i)
    for (unsigned char x : {0x00, 0x2e, 0x7f, 0xff}) {
      std::string b = bytes;
      b[i] = static_cast<char>(x);
      write(b);
      INFO("byte " << i << " set to " << int(x));
      try {
        graft::read_libtorch_archive(path);
      } catch (const graft::format_error& e) {
        CHECK_THAT(e.what(), Catch::Matchers::StartsWith(named));
        ++refused;
      }
    }
  CHECK(refused > 0);
}

TEST_CASE("read_libtorch_archive never runs an archive's code and resolves no global outside its allow-list",
          "[libtorch_archive]") {
  scratch_dir dir;
  auto path = dir.file("evil.pt");
  // A TorchScript archive whose pickle names os.system: refused by name, never imported.
  run_python(fmt::format(R"(import zipfile
with zipfile.ZipFile('{}', 'w') as z:
    z.writestr('archive/data.pkl', b'\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.')
    z.writestr('archive/constants.pkl', b'\x80\x02).')
    z.writestr('archive/version', b'3\n')
)",
                         path));
  CHECK_THAT(message_of(path), Catch::Matchers::StartsWith(fmt::format(
                                   "[graft.format] '{}': not a readable libtorch archive (torch::save / torch.jit.save): "
                                   "global 'os.system' is not allowed",
                                   path)));
  // Code that does not even parse is never looked at: the state is all in data.pkl.
  Net net;
  torch::save(net, path);
  run_python(fmt::format(R"(import zipfile, shutil
src = '{0}'
shutil.copy(src, src + '.orig')
with zipfile.ZipFile(src + '.orig') as i, zipfile.ZipFile(src, 'w') as o:
    for r in i.infolist():
        o.writestr(r, b'class (((' if r.filename.startswith('archive/code/') else i.read(r))
)",
                         path));
  CHECK(graft::read_libtorch_archive(path).as_dict().size() == state_of(*net).size());
}

TEST_CASE("write_libtorch_archive writes what torch::load(module) reads", "[libtorch_archive]") {
  scratch_dir dir;
  auto path = dir.file("written.pt");
  Net source;
  randomize(*source);
  graft::dict state;
  for (auto& [k, t] : state_of(*source)) state.append(k, t);
  graft::write_libtorch_archive(path, state);

  Net target;
  torch::load(target, path);
  auto want = state_of(*source);
  auto got = state_of(*target);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(want[i].first);
    CHECK(torch::equal(got[i].second, want[i].second));
  }
  // And it reads back as the same dict (parameters and buffers are one kind in the file).
  auto v = graft::read_libtorch_archive(path);
  CHECK(v.as_dict().size() == want.size());
  for (auto& [k, t] : want) CHECK(torch::equal(v.as_dict().at(k).as_tensor(), t));
}

TEST_CASE("write_libtorch_archive refuses names that cannot nest, before touching the file", "[libtorch_archive]") {
  scratch_dir dir;
  auto path = dir.file("bad.pt");
  auto message = [&](graft::dict d) {
    try {
      graft::write_libtorch_archive(path, d);
    } catch (const graft::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  graft::dict d;
  d.append("fc", torch::ones(1));
  d.append("fc.weight", torch::ones(1));
  CHECK(message(d) == fmt::format("[graft.key] cannot write '{}': 'fc.weight' needs 'fc' to be a nested archive, but it is "
                                  "an entry",
                                  path));
  graft::dict e;
  e.append("fc.weight", torch::ones(1));
  e.append("fc", torch::ones(1));
  CHECK(message(e) == fmt::format("[graft.key] cannot write '{}': 'fc' is given twice, or also a prefix of other names", path));
  graft::dict f;
  f.append("a..b", torch::ones(1));
  CHECK(message(f) == fmt::format("[graft.key] cannot write '{}': 'a..b' needs 'a.' to be a nested archive, but it is an "
                                  "empty name",
                                  path));
  graft::dict g;
  g.append("list", graft::sequence{{1, 2}, false});
  CHECK(message(g) == fmt::format("[graft.format] cannot write '{}': 'list' is a list, which a libtorch archive entry cannot "
                                  "hold here",
                                  path));
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 0);
}
