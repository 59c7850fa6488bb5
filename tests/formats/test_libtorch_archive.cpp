// libtorch archives: what torch::save(module) writes reads back as a flat dict of dotted keys
// equal to the module's state; what write_libtorch_archive writes, torch::load reads.

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/formats.hpp>
#include <graft/formats/libtorch_archive.hpp>
#include <graft/state_dict.hpp>

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
  // Code that does not even parse declares no module class: every attribute is read, as from
  // an archive whose code predates `__buffers__`. Only the class lines and their
  // `__parameters__` / `__buffers__` lists are ever looked at.
  Net net;
  torch::save(net, path);
  auto rewrite_code = [&](const std::string& how) {
    run_python(fmt::format(R"(import zipfile, shutil
src = '{0}'
shutil.copy(src, src + '.orig')
with zipfile.ZipFile(src + '.orig') as i, zipfile.ZipFile(src, 'w') as o:
    for r in i.infolist():
        b = i.read(r)
        if '/code/' in r.filename and r.filename.endswith('.py'):
            {1}
        o.writestr(r, b)
)",
                           path, how));
  };
  rewrite_code("b = b'class ((('");
  CHECK(graft::read_libtorch_archive(path).as_dict().size() == state_of(*net).size());
  // A state list graft cannot read is refused, naming its record.
  torch::save(net, path);
  rewrite_code(R"(b = b.replace(b'__parameters__ = ["', b'__parameters__ = [') if r.filename.endswith('/code/__torch__.py') else b)");
  CHECK_THAT(message_of(path), Catch::Matchers::StartsWith(fmt::format(
                                   "[graft.format] '{}': not a readable libtorch archive (torch::save / torch.jit.save): record '",
                                   path)) &&
                                   Catch::Matchers::Contains("/code/__torch__.py' has a malformed __parameters__ list: [scale\", ]"));
}

TEST_CASE("read_libtorch_archive of a torch.jit.save file holds the loaded module's state_dict, in Python's order",
          "[libtorch_archive]") {
  scratch_dir dir;
  auto path = dir.file("scripted.pt");
  // Plain tensor attributes (`_state`, each Inner's `cache`, the second Inner's `extra`) are not
  // state; the two Inners differ in their attributes, so TorchScript mangles one's class name.
  auto printed = run_python(fmt::format(R"PY(
import torch
class Inner(torch.nn.Module):
    def __init__(self, extra: bool):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.cache = torch.ones(2)
        if extra:
            self.extra = torch.ones(1)
    def forward(self, x):
        return self.lin(x) + self.cache
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.register_buffer('steps', torch.full((1,), 7.0))
        self.scale = torch.nn.Parameter(torch.full((1,), 2.0))  # a parameter after a buffer
        self._state = torch.zeros(3)
        self.n = 5
        self.inner = Inner(False)
        self.blocks = torch.nn.ModuleList([Inner(False), Inner(True)])
        self.head = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    def forward(self, x):
        y = self.bn(self.conv(x)) * self.scale + self.steps + self._state.sum() + self.n
        for b in self.blocks:
            y = b(y)
        return self.head(self.inner(y))
torch.jit.save(torch.jit.script(Net()), '{0}')
for k in torch.jit.load('{0}').state_dict().keys():
    print('key:' + k)
)PY",
                                        path));
  std::vector<std::string> want;
  std::istringstream lines(printed);
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with("key:")) want.push_back(line.substr(4));
  REQUIRE(want.size() == 17);
  CHECK(want[0] == "scale");  // Python's order: parameters, then buffers, then submodules
  CHECK(want[1] == "steps");

  auto v = graft::read_libtorch_archive(path);
  const auto& d = v.as_dict();
  std::vector<std::string> keys;
  for (auto& [k, e] : d)
    if (e.is_tensor()) keys.push_back(k.as_string());
  CHECK(keys == want);
  CHECK_FALSE(d.find("_state"));
  CHECK_FALSE(d.find("inner.cache"));
  CHECK_FALSE(d.find("blocks.1.extra"));
  CHECK(d.at("n").as_int() == 5);  // plain values are read as before
  CHECK(d.at("steps").as_tensor().item<float>() == 7.0f);
  CHECK(d.at("scale").as_tensor().item<float>() == 2.0f);

  auto sd = graft::read(path) | graft::collect();
  CHECK(sd.keys() == want);
}

TEST_CASE("read_libtorch_archive reads back what write_libtorch_archive writes, plain values included",
          "[libtorch_archive]") {
  scratch_dir dir;
  auto path = dir.file("values.pt");
  graft::dict entries;
  entries.append("w", torch::arange(3.0));
  entries.append("epoch", 3);
  entries.append("name", "run-1");
  entries.append("opt.m", torch::ones(2));
  entries.append("opt.lr", 0.5);
  graft::write_libtorch_archive(path, entries);
  auto v = graft::read_libtorch_archive(path);
  const auto& d = v.as_dict();
  std::vector<std::string> keys;
  for (auto& [k, e] : d) keys.push_back(k.as_string());
  CHECK(keys == std::vector<std::string>{"w", "epoch", "name", "opt.m", "opt.lr"});
  CHECK(torch::equal(d.at("w").as_tensor(), torch::arange(3.0)));
  CHECK(torch::equal(d.at("opt.m").as_tensor(), torch::ones(2)));
  CHECK(d.at("epoch").as_int() == 3);
  CHECK(d.at("name").as_string() == "run-1");
  CHECK(d.at("opt.lr").as_number() == 0.5);
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
