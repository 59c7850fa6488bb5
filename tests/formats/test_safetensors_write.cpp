// Writing safetensors files: Python reads them back equal (with a small reader built on
// struct/json/torch.frombuffer, as the safetensors package is not installed), the layout is
// the reference one (8-byte padded header, aligned data tiling the section), and the write is
// atomic.

#include <cstdint>
#include <filesystem>
#include <fstream>

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <graft/io/detail/atomic_file.hpp>
#include <graft/formats/safetensors.hpp>

#include "oracle.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;

namespace {

// Reads a safetensors file strictly (the checks the reference reader makes, plus padding and
// alignment) and prints "name dtype shape crc32" per tensor in header order, then the metadata.
const std::string py_reader = R"PY(
import json, struct, sys, zlib, torch
DT = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
      "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
def load(path):
    buf = open(path, "rb").read()
    n, = struct.unpack("<Q", buf[:8])
    assert n % 8 == 0, "header not padded to 8"
    text = buf[8:8 + n].decode()
    assert text == text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" "))), "padding is not spaces"
    h = json.loads(text)
    meta = h.pop("__metadata__", None)
    data = buf[8 + n:]
    pos = 0
    for b, e in sorted(v["data_offsets"] for v in h.values()):
        assert b == pos, "ranges do not tile"
        pos = e
    assert pos == len(data), "trailing data"
    out = {}
    for k, v in h.items():
        b, e = v["data_offsets"]
        dt = DT[v["dtype"]]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=dt) if e > b else torch.empty(0, dtype=dt)
        assert b % t.element_size() == 0, f"{k} misaligned"
        out[k] = t.reshape(v["shape"])
    return out, meta
def show(path):
    out, meta = load(path)
    for k, t in out.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        print(k, str(t.dtype)[6:], list(t.shape), zlib.crc32(raw))
    print("metadata", json.dumps(meta, sort_keys=True))
)PY";

std::string py_dtype(torch::Dtype d) {
  auto s = std::string(c10::toString(d));
  static const std::map<std::string, std::string> names = {
      {"Bool", "bool"},   {"Byte", "uint8"},   {"Char", "int8"},       {"Short", "int16"},   {"Int", "int32"},
      {"Long", "int64"},  {"Half", "float16"}, {"BFloat16", "bfloat16"}, {"Float", "float32"}, {"Double", "float64"}};
  return names.at(s);
}

// What py_reader's show() prints for these tensors.
std::string expected_show(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, std::string_view meta) {
  std::string out;
  for (const auto& [k, t] : tensors) {
    auto c = t.contiguous();
    auto crc = crc32(0L, reinterpret_cast<const Bytef*>(c.data_ptr()), static_cast<uInt>(c.numel() * c.element_size()));
    out += fmt::format("{} {} [{}] {}\n", k, py_dtype(t.scalar_type()), fmt::join(t.sizes(), ", "), crc);
  }
  return out + fmt::format("metadata {}\n", meta);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<std::pair<std::string, torch::Tensor>> mixed() {
  auto base = torch::arange(24, torch::kFloat).reshape({4, 6});
  return {{"u8", torch::arange(3, torch::kUInt8)},
          {"weight.t", base.t()},                              // transposed: not contiguous
          {"every.other", base.index({torch::indexing::Slice(), torch::indexing::Slice(0, 6, 2)})},
          {"bf16", torch::linspace(-1, 1, 5).to(torch::kBFloat16)},
          {"i64", torch::tensor({-1, 2, 3}, torch::kLong)},
          {"bool", torch::tensor({true, false, true})},
          {"f16", torch::ones({2, 1}, torch::kHalf)},
          {"f64", torch::tensor(3.25, torch::kDouble)},
          {"i8", torch::tensor({-5}, torch::kChar)},
          {"i16", torch::full({2}, 300, torch::kShort)},
          {"i32", torch::full({1, 1, 2}, -7, torch::kInt)},
          {"empty", torch::zeros({0, 4})}};
}

} // namespace

TEST_CASE("write_safetensors writes files Python reads back equal", "[safetensors][write]") {
  scratch_dir dir;
  auto path = dir.file("out.safetensors");
  auto tensors = mixed();
  graft::write_safetensors(path, tensors, {{"format", "pt"}, {"note", "ünïcode ✓"}});
  auto shown = run_python(py_reader + fmt::format("show('{}')\n", path));
  CHECK(shown == expected_show(tensors, R"({"format": "pt", "note": "\u00fcn\u00efcode \u2713"})"));
}

TEST_CASE("write_safetensors round-trips through read_safetensors, in the given order", "[safetensors][write]") {
  scratch_dir dir;
  auto path = dir.file("out.safetensors");
  auto tensors = mixed();
  graft::write_safetensors(path, tensors, {{"format", "pt"}});
  for (bool mmap : {true, false}) {
    auto v = graft::read_safetensors(path, {.mmap = mmap});
    REQUIRE(v.as_dict().size() == tensors.size());
    std::size_t i = 0;
    for (const auto& [k, t] : v.as_dict()) {
      INFO(k.as_string());
      CHECK(k.as_string() == tensors[i].first);
      CHECK(t.as_tensor().scalar_type() == tensors[i].second.scalar_type());
      CHECK(torch::equal(t.as_tensor(), tensors[i].second));
      // Largest dtype first in the data keeps every tensor aligned: all of them are views.
      if (mmap && t.as_tensor().numel() > 0)
        CHECK(reinterpret_cast<std::uintptr_t>(t.as_tensor().data_ptr()) % t.as_tensor().element_size() == 0);
      ++i;
    }
  }
  CHECK(graft::read_safetensors_metadata(path) == std::map<std::string, std::string>{{"format", "pt"}});
}

TEST_CASE("write_safetensors lays the file out as the reference writer does", "[safetensors][write]") {
  scratch_dir dir;
  auto path = dir.file("one.safetensors");
  // The reference's own test vector: {"attn.0": F32 [1, 2, 3] = 0..5}.
  graft::write_safetensors(path, {{"attn.0", torch::arange(6, torch::kFloat).reshape({1, 2, 3})}});
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  auto bytes = slurp(path);
  REQUIRE(bytes.size() == 8 + 64 + 24);
  CHECK(bytes.substr(0, 8) == std::string("\x40\0\0\0\0\0\0\0", 8));
  CHECK(bytes.substr(8, 64) == header + std::string(64 - header.size(), ' '));
  // Empty, with metadata: the reference's {"__metadata__":{"framework":"pt"}} padded to 40.
  graft::write_safetensors(path, std::vector<std::pair<std::string, torch::Tensor>>{}, {{"framework", "pt"}});
  CHECK(slurp(path) == std::string("\x28\0\0\0\0\0\0\0", 8) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  graft::write_safetensors(path, std::vector<std::pair<std::string, torch::Tensor>>{});
  CHECK(slurp(path) == std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
}

TEST_CASE("write_safetensors takes a graft::dict, flattening nested dicts", "[safetensors][write]") {
  scratch_dir dir;
  auto path = dir.file("nested.safetensors");
  graft::dict model, ckpt;
  model.append("fc.weight", torch::ones({2, 2}));
  model.append("fc.bias", torch::zeros({2}));
  ckpt.append("model", model);
  ckpt.append("ema", torch::full({1}, 2.0));
  graft::write_safetensors(path, ckpt);
  auto v = graft::read_safetensors(path);
  std::vector<std::string> keys;
  for (auto& [k, t] : v.as_dict()) keys.push_back(k.as_string());
  CHECK(keys == std::vector<std::string>{"model.fc.weight", "model.fc.bias", "ema"});

  ckpt.append("epoch", 3);
  CHECK_THROWS_AS(graft::write_safetensors(path, ckpt), graft::format_error);
  CHECK_THROWS_WITH(graft::write_safetensors(path, ckpt),
                    fmt::format("[graft.format] cannot write '{}': 'epoch' is a int, and a safetensors file holds only tensors", path));
}

TEST_CASE("write_safetensors refuses what the format cannot hold, before touching the file", "[safetensors][write]") {
  scratch_dir dir;
  auto path = dir.file("keep.safetensors");
  graft::write_safetensors(path, {{"old", torch::ones(3)}});
  const auto before = slurp(path);
  using list = std::vector<std::pair<std::string, torch::Tensor>>;
  auto message = [&](const list& tensors, const std::map<std::string, std::string>& meta = {}) {
    try {
      graft::write_safetensors(path, tensors, meta);
    } catch (const graft::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const auto prefix = fmt::format("cannot write '{}': ", path);
  CHECK(message({{"a", torch::ones(1)}, {"a", torch::ones(2)}}) == "[graft.key] " + prefix + "tensor 'a' is given twice");
  CHECK(message({{"c", torch::ones(2, torch::kComplexDouble)}}) ==
        "[graft.format] " + prefix + "tensor 'c' has dtype ComplexDouble, which safetensors cannot hold");
  CHECK(message({{"u", torch::Tensor()}}) == "[graft.format] " + prefix + "tensor 'u' is undefined");
  CHECK(message({{"s", torch::eye(2).to_sparse()}}) == "[graft.format] " + prefix + "tensor 's' is not a dense (strided) tensor");
  CHECK(message({{"__metadata__", torch::ones(1)}}) ==
        "[graft.format] " + prefix + "'__metadata__' is reserved for the metadata and cannot name a tensor");
  CHECK(message({{"bad\xff", torch::ones(1)}}) == "[graft.format] " + prefix + "tensor name \"bad\\xff\" is not valid UTF-8 (byte 3)");
  CHECK(message({{"w", torch::ones(1)}}, {{"k", "\xc3"}}) ==
        "[graft.format] " + prefix + "metadata value \"\\xc3\" is not valid UTF-8 (byte 0)");
  CHECK(message({{"w", torch::ones(1)}}, {{"\xe2\x82", "v"}}) ==
        "[graft.format] " + prefix + "metadata key \"\\xe2\\x82\" is not valid UTF-8 (byte 0)");
  CHECK(slurp(path) == before);
}

TEST_CASE("write_safetensors replaces files atomically and leaves no temp file behind", "[safetensors][write]") {
  scratch_dir dir;
  auto path = dir.file("model.safetensors");
  graft::write_safetensors(path, {{"w", torch::ones(2)}});
  graft::write_safetensors(path, {{"w", torch::full({3}, 2.0)}});
  CHECK(torch::equal(graft::read_safetensors(path).as_dict().at("w").as_tensor(), torch::full({3}, 2.0)));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);

  SECTION("into a folder that does not exist") {
    auto nowhere = dir.file("no/such/dir/x.safetensors");
    CHECK_THROWS_AS(graft::write_safetensors(nowhere, {{"w", torch::ones(2)}}), graft::io_error);
    CHECK_THROWS_WITH(graft::write_safetensors(nowhere, {{"w", torch::ones(2)}}),
                      fmt::format("[graft.io] cannot write '{}': cannot create a temp file next to it: No such file or directory",
                                  nowhere));
  }
  SECTION("over a directory") {
    std::filesystem::create_directory(dir.file("adir"));
    CHECK_THROWS_WITH(graft::write_safetensors(dir.file("adir"), {{"w", torch::ones(2)}}),
                      Catch::Matchers::StartsWith(
                          fmt::format("[graft.io] cannot write '{}': cannot rename the temp file over it: ", dir.file("adir"))));
    CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 2);
  }
  SECTION("a callback that throws removes the temp file and keeps the old one") {
    CHECK_THROWS_AS(graft::detail::write_atomically(path,
                                                    [](graft::detail::atomic_file& f) {
                                                      f.write("partial", 7);
                                                      throw graft::io_error("stop");
                                                    }),
                    graft::io_error);
    CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);
    CHECK(torch::equal(graft::read_safetensors(path).as_dict().at("w").as_tensor(), torch::full({3}, 2.0)));
  }
  SECTION("a failed write is reported") {
    // The temp file's descriptor is swapped for /dev/full, which refuses every byte (ENOSPC).
    int full = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
    REQUIRE(full >= 0);
    CHECK_THROWS_WITH(graft::detail::write_atomically(path,
                                                      [&](graft::detail::atomic_file& f) {
                                                        ::dup2(full, f.fd());
                                                        f.write("x", 1);
                                                        CHECK(f.failed());
                                                      }),
                      fmt::format("[graft.io] cannot write '{}': No space left on device", path));
    ::close(full);
    CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);
  }
}
