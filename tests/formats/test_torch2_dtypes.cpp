// The dtypes PyTorch 2.x added (uint16/32/64, float8): torch.save writes them with
// _rebuild_tensor_v3 over untyped storages. Read and written where this libtorch has them;
// refused by name where it does not (libtorch 1.13).

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <graft/formats/safetensors.hpp>
#include <graft/formats/torch_save.hpp>

#include "oracle.hpp"
#include "test_torch_save_support.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;

namespace {
// Written by PyTorch 2.13's torch.save (see the values below).
const std::string fixture = std::string(GRAFT_TEST_SOURCE_DIR) + "/formats/data/torch2_dtypes.pt";
} // namespace

TEST_CASE("the safetensors package reads graft's files and graft reads the package's, every dtype and the metadata",
          "[safetensors][oracle]") {
  scratch_dir dir;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& d : graft::detail::dtype_names) {
    if (!d.dtype || d.safetensors.empty()) continue;
    auto t = (torch::arange(12, torch::kDouble) - 5.5).reshape({3, 4});
    tensors.emplace_back(std::string(d.python), *d.dtype == torch::kBool ? t > 0 : t.to(*d.dtype));
  }
  tensors.emplace_back("transposed", torch::arange(6, torch::kFloat).reshape({2, 3}).t());
  tensors.emplace_back("empty", torch::zeros({0, 2}));
  auto mine = dir.file("graft.safetensors");
  graft::write_safetensors(mine, tensors, {{"format", "pt"}, {"note", "ünïcode ✓"}});
  auto theirs = dir.file("package.safetensors");
  auto out = run_python(graft::test::py_summary + fmt::format(R"(
from safetensors.torch import load_file, save_file
from safetensors import safe_open
obj = load_file('{0}')
with safe_open('{0}', 'pt') as f: print(sorted(f.metadata().items()))
save_file(obj, '{1}', metadata={{'by': 'safetensors', 'note': 'ü'}})
sys.stdout.write(summary(dict(sorted(obj.items()))))
)", mine, theirs));
  auto sorted = tensors;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.first < b.first; });
  graft::dict expected;
  for (auto& [k, t] : sorted) expected.append(k, t);
  CHECK(out == "[('format', 'pt'), ('note', 'ünïcode ✓')]\n" + graft::test::summary(graft::value(std::move(expected))));
  auto back = graft::read_safetensors(theirs);
  REQUIRE(back.as_dict().size() == tensors.size());
  for (auto& [k, t] : tensors) {
    INFO(k);
    auto r = back.as_dict().at(k).as_tensor();
    CHECK(r.scalar_type() == t.scalar_type());
    CHECK(r.sizes() == t.sizes());
    CHECK(torch::equal(r.contiguous().view(torch::kUInt8), t.contiguous().view(torch::kUInt8)));
  }
  auto meta = graft::read_safetensors_metadata(theirs);
  CHECK(meta == std::map<std::string, std::string>{{"by", "safetensors"}, {"note", "ü"}});
}

#if GRAFT_TORCH_AT_LEAST(2, 3)

TEST_CASE("torch.save files of PyTorch 2.x dtypes read with their values and shared storages", "[torch_save][torch2]") {
  auto d = graft::read_torch_save(fixture).as_dict();
  auto as_double = [&](const char* k) { return d.at(k).as_tensor().to(torch::kDouble); };
  CHECK(d.at("u16").as_tensor().scalar_type() == torch::kUInt16);
  CHECK(torch::equal(as_double("u16"), torch::arange(6, torch::kDouble) * 1000));
  CHECK(torch::equal(as_double("u32"), torch::arange(6, torch::kDouble) * 100000));
  CHECK(d.at("u64").as_tensor().scalar_type() == torch::kUInt64);
  CHECK(torch::equal(as_double("u64"), torch::arange(6, torch::kDouble) * 1e12));
  CHECK(d.at("f8_e4m3fn").as_tensor().scalar_type() == torch::kFloat8_e4m3fn);
  CHECK(torch::equal(as_double("f8_e4m3fn"), torch::tensor({-2.0, -1.25, -0.40625, 0.40625, 1.25, 2.0}, torch::kDouble)));
  CHECK(torch::equal(as_double("f8_e5m2"), torch::tensor({-2.0, -1.25, -0.375, 0.375, 1.25, 2.0}, torch::kDouble).reshape({2, 3})));
  auto view = d.at("u16_view").as_tensor();
  CHECK(view.storage_offset() == 2);
  CHECK(view.storage().is_alias_of(d.at("u16").as_tensor().storage()));
  CHECK(torch::equal(view.to(torch::kDouble), torch::tensor({2000.0, 3000.0, 4000.0, 5000.0}, torch::kDouble)));
}

TEST_CASE("torch.save files graft writes with PyTorch 2.x dtypes read equal in Python, also with weights_only", "[torch_save][torch2][write]") {
  scratch_dir dir;
  graft::dict sd;
  auto u16 = (torch::arange(6, torch::kLong) * 1000).to(torch::kUInt16);
  sd.append("u16", u16);
  sd.append("u16_view", u16.slice(0, 2));
  sd.append("u32", (torch::arange(6, torch::kLong) * 100000).to(torch::kUInt32));
  sd.append("u64", (torch::arange(6, torch::kLong) * 1000000000000LL).to(torch::kUInt64));
  sd.append("f8_e4m3fn", torch::linspace(-2, 2, 6).to(torch::kFloat8_e4m3fn));
  sd.append("f8_e5m2", torch::linspace(-2, 2, 6).to(torch::kFloat8_e5m2).reshape({2, 3}));
  sd.append("f32", torch::linspace(-2, 2, 6));
  graft::value v(std::move(sd));
  auto file = dir.file("new.pt");
  graft::write_torch_save(file, v);
  auto out = run_python(graft::test::py_summary + "obj = torch.load('" + file + "', weights_only=True)\n" +
                        "print(obj['u16_view'].untyped_storage().data_ptr() == obj['u16'].untyped_storage().data_ptr())\n"
                        "sys.stdout.write(summary(obj))\n");
  CHECK(out == "True\n" + graft::test::summary(v));
  CHECK(graft::test::summary(graft::read_torch_save(file)) == graft::test::summary(v));
}

TEST_CASE("safetensors files of PyTorch 2.x dtypes round-trip with the safetensors package", "[safetensors][torch2]") {
  scratch_dir dir;
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"u16", (torch::arange(4, torch::kLong) * 1000).to(torch::kUInt16)},
      {"u32", (torch::arange(4, torch::kLong) * 100000).to(torch::kUInt32)},
      {"u64", (torch::arange(4, torch::kLong) * 1000000000000LL).to(torch::kUInt64)},
      {"f8_e4m3fn", torch::linspace(-2, 2, 4).to(torch::kFloat8_e4m3fn)},
      {"f8_e5m2", torch::linspace(-2, 2, 4).to(torch::kFloat8_e5m2)},
      {"c64", torch::randn({3}, torch::kComplexFloat)}};
  auto mine = dir.file("graft.safetensors");
  graft::write_safetensors(mine, tensors, {{"format", "pt"}});
  // The package reads graft's file and writes its own copy of it.
  auto theirs = dir.file("package.safetensors");
  auto out = run_python(graft::test::py_summary + fmt::format(R"(
from safetensors.torch import load_file, save_file
from safetensors import safe_open
obj = load_file('{0}')
with safe_open('{0}', 'pt') as f: print(f.metadata())
save_file(obj, '{1}', metadata={{'by': 'safetensors'}})
sys.stdout.write(summary(dict(sorted(obj.items()))))
)", mine, theirs));
  graft::dict expected;
  auto sorted = tensors;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.first < b.first; });
  for (auto& [k, t] : sorted) expected.append(k, t);
  CHECK(out == "{'format': 'pt'}\n" + graft::test::summary(graft::value(std::move(expected))));
  auto back = graft::read_safetensors(theirs);
  for (auto& [k, t] : tensors) {
    INFO(k);
    auto r = back.as_dict().at(k).as_tensor();
    CHECK(r.scalar_type() == t.scalar_type());
    CHECK(torch::equal(r.view(torch::kUInt8), t.view(torch::kUInt8)));
  }
  CHECK(graft::read_safetensors_metadata(theirs).at("by") == "safetensors");
}

#else

TEST_CASE("torch.save files of PyTorch 2.x dtypes are refused naming the dtype this libtorch lacks", "[torch_save][torch2]") {
  try {
    graft::read_torch_save(fixture);
    FAIL("read a uint16 tensor into libtorch " TORCH_VERSION);
  } catch (const graft::format_error& e) {
    CHECK_THAT(e.what(), Catch::Matchers::Contains("tensor of dtype torch.uint16, which libtorch " TORCH_VERSION " cannot represent"));
    CHECK_THAT(e.what(), Catch::Matchers::Contains("torch2_dtypes.pt"));
  }
}

#endif
