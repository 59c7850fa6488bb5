// Reading safetensors files written the way the reference library writes them (by a small
// Python writer, since the safetensors package is not installed): every dtype libtorch has,
// the header's order, metadata, zero-copy views, misaligned data, sharded checkpoints.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <graft/formats/safetensors.hpp>

#include "oracle.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;

namespace {

// Writes safetensors files as huggingface/safetensors does: "__metadata__" first, tensors by
// descending dtype rank then name (the data in the same order), header padded to 8 with spaces.
const std::string py_writer = R"PY(
import json, struct, torch
CODES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
         torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}
RANK = list(CODES.values())
def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
def save(tensors, path, metadata=None, order=None):
    items = sorted(tensors.items(), key=lambda kv: (-RANK.index(CODES[kv[1].dtype]), kv[0]))
    header, off, blobs = {}, 0, []
    if metadata is not None: header["__metadata__"] = metadata
    for k, t in items:
        b = raw(t)
        header[k] = {"dtype": CODES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    if order is not None: header = {k: header[k] for k in order}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text))); f.write(text); f.write(b"".join(blobs))
)PY";

torch::Tensor expected(torch::Dtype d, std::vector<std::int64_t> shape) {
  auto n = c10::multiply_integers(shape);
  return (torch::arange(n, torch::kLong) % 7 - 3).to(d).reshape(shape);
}

std::vector<std::string> keys(const graft::value& v) {
  std::vector<std::string> out;
  for (auto& [k, x] : v.as_dict()) out.push_back(k.as_string());
  return out;
}

} // namespace

TEST_CASE("read_safetensors reads every dtype libtorch has, with its shape and values", "[safetensors]") {
  scratch_dir dir;
  auto path = dir.file("all.safetensors");
  run_python(py_writer + fmt::format(R"PY(
def ex(dtype, shape):
    n = 1
    for s in shape: n *= s
    return (torch.arange(n) % 7 - 3).to(dtype).reshape(shape)
t = {{"bool": ex(torch.bool, [3]), "u8": ex(torch.uint8, [2, 2]), "i8": ex(torch.int8, [5]),
     "i16": ex(torch.int16, [1, 3]), "i32": ex(torch.int32, [3, 1]), "i64": ex(torch.int64, [2, 3]),
     "f16": ex(torch.float16, [7]), "bf16": ex(torch.bfloat16, [2, 2, 2]), "f32": ex(torch.float32, [4, 5]),
     "f64": ex(torch.float64, [3]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3)}}
save(t, "{}", metadata={{"format": "pt"}})
)PY",
                                           path));
  auto v = graft::read_safetensors(path);
  REQUIRE(v.is_dict());
  const auto& d = v.as_dict();
  REQUIRE(d.size() == 12);
  struct want { const char* key; torch::Dtype dtype; std::vector<std::int64_t> shape; };
  for (auto& w : {want{"bool", torch::kBool, {3}}, want{"u8", torch::kUInt8, {2, 2}}, want{"i8", torch::kInt8, {5}},
                  want{"i16", torch::kInt16, {1, 3}}, want{"i32", torch::kInt32, {3, 1}}, want{"i64", torch::kInt64, {2, 3}},
                  want{"f16", torch::kFloat16, {7}}, want{"bf16", torch::kBFloat16, {2, 2, 2}},
                  want{"f32", torch::kFloat32, {4, 5}}, want{"f64", torch::kFloat64, {3}}}) {
    INFO(w.key);
    const auto& t = d.at(w.key).as_tensor();
    CHECK(t.scalar_type() == w.dtype);
    CHECK(t.sizes().vec() == w.shape);
    CHECK(torch::equal(t, expected(w.dtype, w.shape)));
  }
  CHECK(d.at("scalar").as_tensor().dim() == 0);
  CHECK(d.at("scalar").as_tensor().item<float>() == 2.5f);
  CHECK(d.at("empty").as_tensor().sizes().vec() == std::vector<std::int64_t>{0, 3});
  // The reference writer's data order (largest dtype first, then by name) is also its header order.
  CHECK(keys(v) == std::vector<std::string>{"i64", "f64", "empty", "f32", "scalar", "i32", "bf16", "f16", "i16", "i8",
                                            "u8", "bool"});
  CHECK(graft::read_safetensors_metadata(path) == std::map<std::string, std::string>{{"format", "pt"}});
}

TEST_CASE("read_safetensors keeps the header's order, whatever the data order", "[safetensors]") {
  scratch_dir dir;
  auto path = dir.file("order.safetensors");
  run_python(py_writer + fmt::format(R"PY(
save({{"z": torch.ones(2), "a": torch.zeros(3), "m": torch.full((1,), 7.0)}}, "{}", order=["m", "z", "a"])
)PY",
                                           path));
  auto v = graft::read_safetensors(path);
  CHECK(keys(v) == std::vector<std::string>{"m", "z", "a"});
  CHECK(v.as_dict().at("m").as_tensor().item<float>() == 7.0f);
  CHECK(v.as_dict().at("z").as_tensor().sum().item<float>() == 2.0f);
  CHECK(graft::read_safetensors_metadata(path).empty());
}

TEST_CASE("read_safetensors views the mapped file unless asked to copy", "[safetensors]") {
  scratch_dir dir;
  auto path = dir.file("views.safetensors");
  run_python(py_writer + fmt::format(R"PY(
save({{"a": torch.arange(4.0), "b": torch.arange(4.0) + 10}}, "{}")
)PY",
                                           path));
  auto before = std::filesystem::file_size(path);
  SECTION("views: neighbours in the file are neighbours in memory, and writes stay private") {
    auto v = graft::read_safetensors(path);
    auto a = v.as_dict().at("a").as_tensor();
    auto b = v.as_dict().at("b").as_tensor();
    CHECK(static_cast<char*>(b.data_ptr()) == static_cast<char*>(a.data_ptr()) + 16);
    a.fill_(-1);
    auto again = graft::read_safetensors(path, {.mmap = false});
    CHECK(torch::equal(again.as_dict().at("a").as_tensor(), torch::arange(4.0)));
    CHECK(std::filesystem::file_size(path) == before);
  }
  SECTION("copies own their memory") {
    auto v = graft::read_safetensors(path, {.mmap = false});
    auto a = v.as_dict().at("a").as_tensor();
    auto b = v.as_dict().at("b").as_tensor();
    CHECK(static_cast<char*>(b.data_ptr()) != static_cast<char*>(a.data_ptr()) + 16);
    CHECK(torch::equal(b, torch::arange(4.0) + 10));
  }
  SECTION("views outlive everything but themselves") {
    torch::Tensor b;
    {
      auto v = graft::read_safetensors(path);
      b = v.as_dict().at("b").as_tensor();
    }
    std::filesystem::remove(path);
    CHECK(torch::equal(b, torch::arange(4.0) + 10));
  }
}

TEST_CASE("read_safetensors copies tensors whose data is misaligned for their dtype", "[safetensors]") {
  scratch_dir dir;
  auto path = dir.file("odd.safetensors");
  // A 1-byte tensor first puts the float32 one at an odd file offset (valid, if unusual).
  run_python(py_writer + fmt::format(R"PY(
t = {{"u": torch.tensor([9], dtype=torch.uint8), "f": torch.arange(5.0)}}
header = {{"u": {{"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}},
          "f": {{"dtype": "F32", "shape": [5], "data_offsets": [1, 21]}}}}
text = json.dumps(header).encode(); text += b" " * ((8 - len(text) % 8) % 8)
with open("{}", "wb") as f:
    f.write(struct.pack("<Q", len(text))); f.write(text); f.write(raw(t["u"])); f.write(raw(t["f"]))
)PY",
                                           path));
  auto v = graft::read_safetensors(path);
  auto f = v.as_dict().at("f").as_tensor();
  CHECK(reinterpret_cast<std::uintptr_t>(f.data_ptr()) % 4 == 0);
  CHECK(torch::equal(f, torch::arange(5.0)));
  CHECK(v.as_dict().at("u").as_tensor().item<int>() == 9);
}

TEST_CASE("reading a huge safetensors file costs nothing until its data is touched", "[safetensors]") {
  scratch_dir dir;
  auto path = dir.file("huge.safetensors");
  // 4 GiB of float32 in a sparse file: reading copies nothing and allocates nothing.
  const std::int64_t n = std::int64_t{1} << 30;
  std::string header = fmt::format(R"({{"w":{{"dtype":"F32","shape":[{},1024],"data_offsets":[0,{}]}}}})", n / 1024, n * 4);
  header.append((8 - header.size() % 8) % 8, ' ');
  {
    std::ofstream out(path, std::ios::binary);
    std::uint64_t len = header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
  }
  std::filesystem::resize_file(path, 8 + header.size() + static_cast<std::uint64_t>(n) * 4);
  auto start = std::chrono::steady_clock::now();
  auto v = graft::read_safetensors(path);
  auto took = std::chrono::steady_clock::now() - start;
  auto w = v.as_dict().at("w").as_tensor();
  CHECK(w.sizes().vec() == std::vector<std::int64_t>{n / 1024, 1024});
  CHECK(w[12345].sum().item<float>() == 0.0f);
  CHECK(took < std::chrono::milliseconds(200));
}

TEST_CASE("read_safetensors reads a sharded checkpoint through its index", "[safetensors]") {
  scratch_dir dir;
  auto index = dir.file("model.safetensors.index.json");
  // Shards as transformers' save_pretrained lays them out (written by graft: the Python writer
  // is checked above, and the index is what is under test here).
  graft::write_safetensors(dir.file("model-00001-of-00002.safetensors"),
                           {{"layer.0.w", torch::ones({2, 2})}, {"layer.0.b", torch::zeros({2})}});
  graft::write_safetensors(dir.file("model-00002-of-00002.safetensors"),
                           {{"layer.1.w", torch::full({2, 2}, 3.0)}, {"head", torch::arange(3)}});
  std::ofstream(index) << R"({
  "metadata": {"total_size": 56, "format": "pt"},
  "weight_map": {
    "layer.0.b": "model-00001-of-00002.safetensors",
    "layer.0.w": "model-00001-of-00002.safetensors",
    "head": "model-00002-of-00002.safetensors",
    "layer.1.w": "model-00002-of-00002.safetensors"
  }
})";
  auto v = graft::read_safetensors(index);
  CHECK(keys(v) == std::vector<std::string>{"layer.0.b", "layer.0.w", "head", "layer.1.w"});
  CHECK(torch::equal(v.as_dict().at("layer.1.w").as_tensor(), torch::full({2, 2}, 3.0)));
  CHECK(torch::equal(v.as_dict().at("head").as_tensor(), torch::arange(3)));
  CHECK(graft::read_safetensors_metadata(index) ==
        std::map<std::string, std::string>{{"total_size", "56"}, {"format", "pt"}});

  auto rewrite_index = [&](const std::string& weight_map) {
    std::ofstream(index, std::ios::trunc) << R"({"metadata": {}, "weight_map": )" << weight_map << "}";
  };
  auto message = [&] {
    try {
      graft::read_safetensors(index);
    } catch (const graft::format_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  SECTION("a tensor in another shard than the index says") {
    rewrite_index(fmt::format(R"({{"layer.0.b": "{0}", "layer.0.w": "{0}", "head": "{0}", "layer.1.w": "{1}"}})", s1, s2));
    CHECK(message() == fmt::format("[graft.format] '{}': tensor 'head' is in shard '{}', but \"weight_map\" puts it in '{}'",
                                   index, s2, s1));
  }
  SECTION("a tensor the index does not list") {
    rewrite_index(fmt::format(R"({{"layer.0.b": "{0}", "layer.0.w": "{0}", "layer.1.w": "{1}"}})", s1, s2));
    CHECK(message() == fmt::format("[graft.format] '{}': shard '{}' holds tensor 'head', which \"weight_map\" does not list",
                                   index, s2));
  }
  SECTION("a tensor the index lists but no shard holds") {
    rewrite_index(fmt::format(R"({{"layer.0.b": "{0}", "layer.0.w": "{0}", "head": "{1}", "layer.1.w": "{1}", "extra": "{1}"}})",
                              s1, s2));
    CHECK(message() == fmt::format("[graft.format] '{}': tensor 'extra' is missing: \"weight_map\" puts it in '{}', which "
                                   "does not hold it",
                                   index, s2));
  }
  SECTION("a tensor listed twice") {
    rewrite_index(fmt::format(R"({{"head": "{1}", "layer.0.b": "{0}", "layer.0.w": "{0}", "head": "{1}", "layer.1.w": "{1}"}})",
                              s1, s2));
    CHECK(message() == fmt::format("[graft.format] '{}': key 'head' appears twice in one JSON object", index));
  }
  SECTION("a shard outside the index's folder") {
    rewrite_index(R"({"w": "../elsewhere.safetensors"})");
    CHECK(message() == fmt::format("[graft.format] '{}': \"weight_map\" puts tensor 'w' in '../elsewhere.safetensors', which "
                                   "is not a file name in the index's folder",
                                   index));
  }
  SECTION("no weight map") {
    std::ofstream(index, std::ios::trunc) << R"({"metadata": {}})";
    CHECK(message() == fmt::format("[graft.format] '{}': the index has no \"weight_map\"", index));
  }
  SECTION("a weight map that is not an object") {
    rewrite_index("[]");
    CHECK(message() == fmt::format("[graft.format] '{}': \"weight_map\" is a JSON array, not an object of tensor name → shard file", index));
  }
  SECTION("a shard that is not a string") {
    rewrite_index(R"({"w": 3})");
    CHECK(message() == fmt::format("[graft.format] '{}': \"weight_map\" puts tensor 'w' in a JSON number, not a shard file name", index));
  }
  SECTION("a missing shard file") {
    rewrite_index(R"({"w": "gone.safetensors"})");
    CHECK_THROWS_AS(graft::read_safetensors(index), graft::io_error);
    CHECK_THROWS_WITH(graft::read_safetensors(index),
                      Catch::Matchers::Equals("[graft.io] '" + index + "': shard 'gone.safetensors' is missing from " +
                                              dir.path().string() + "; \"weight_map\" puts 1 tensor in it: 'w'"));
  }
}

TEST_CASE("is_safetensors_file recognises safetensors headers", "[safetensors]") {
  scratch_dir dir;
  auto path = dir.file("x.safetensors");
  graft::write_safetensors(path, {{"w", torch::ones(2)}});
  CHECK(graft::is_safetensors_file(*graft::mapped_file::open(path)));
  std::ofstream(dir.file("y.bin")) << "PK\3\4 not this";
  CHECK_FALSE(graft::is_safetensors_file(*graft::mapped_file::open(dir.file("y.bin"))));
}
