// Bad safetensors input: a corpus of malformed files generated here, each of which must end in
// one graft::format_error naming the file, the tensor and the offset where it helps, never in a
// crash, a foreign exception or a huge allocation. Message texts are tested.

#include <cstdint>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <graft/detail/dtypes.hpp>
#include <graft/formats/safetensors.hpp>

#include "oracle.hpp"

using graft::test::scratch_dir;

namespace {

struct corpus {
  scratch_dir dir;
  std::string path = dir.file("bad.safetensors");
  std::uint64_t data_start = 0;  // file offset of the data section of the last file written

  // A file of `header` (padded with spaces to a multiple of 8) and `data`; `length` overrides
  // the 8-byte header length.
  const std::string& write(std::string header, std::string_view data = {}, std::optional<std::uint64_t> length = {}) {
    header.append((8 - header.size() % 8) % 8, ' ');
    data_start = 8 + header.size();
    std::uint64_t n = length.value_or(header.size());
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(n >> (8 * i));
    bytes += header;
    bytes += data;
    raw(bytes);
    return path;
  }
  void raw(std::string_view bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // read_safetensors's message, without the "[graft.format] '<path>': " every one starts with.
  std::string error() const {
    const auto prefix = fmt::format("[graft.format] '{}': ", path);
    try {
      graft::read_safetensors(path);
    } catch (const graft::format_error& e) {
      std::string what = e.what();
      if (!what.starts_with(prefix)) return "unprefixed: " + what;
      // Reading the header alone must fail the same way.
      try {
        graft::read_safetensors_metadata(path);
        return "metadata read: no error";
      } catch (const graft::format_error& m) {
        if (std::string(m.what()) != what) return "metadata read: " + std::string(m.what());
      }
      return what.substr(prefix.size());
    }
    return "no error";
  }
};

std::string entry(std::string_view name, std::string_view dtype, std::string_view shape, std::string_view offsets) {
  return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":{}}})", name, dtype, shape, offsets);
}
std::string one(std::string_view dtype, std::string_view shape, std::string_view offsets) {
  return "{" + entry("w", dtype, shape, offsets) + "}";
}

} // namespace

TEST_CASE("safetensors files too short for their header", "[safetensors][errors]") {
  corpus c;
  c.raw("");
  CHECK(c.error() == "0 bytes is too short for a safetensors file (its header length alone takes 8)");
  c.raw(std::string("\x10\0\0", 3));
  CHECK(c.error() == "3 bytes is too short for a safetensors file (its header length alone takes 8)");
  c.write("{}", "", 100);
  CHECK(c.error() == "the header length at byte 0 says 100 bytes, but only 8 follow (truncated, or not a safetensors file?)");
  // A claimed 10 GB header is refused before anything is allocated.
  c.write("{}", "", 10'000'000'000);
  CHECK(c.error() == "the header length at byte 0 says 10000000000 bytes, but only 8 follow (truncated, or not a safetensors file?)");
  c.write("{}", "", ~std::uint64_t{0});
  CHECK(c.error() == "the header length at byte 0 says 18446744073709551615 bytes, but only 8 follow (truncated, or not a "
                     "safetensors file?)");
  // A file really that large (sparse) still has its header bounded by safetensors' limit.
  c.write("{}", "", 100'000'008);
  std::filesystem::resize_file(c.path, 8 + 100'000'008);
  CHECK(c.error() == "the header length at byte 0 says 100000008 bytes, more than safetensors' limit of 100000000");
  // A truncated copy of a good file.
  graft::write_safetensors(c.path, {{"w", torch::ones({4, 4})}});
  std::filesystem::resize_file(c.path, std::filesystem::file_size(c.path) - 1);
  std::uint64_t n = 0;
  std::ifstream(c.path, std::ios::binary).read(reinterpret_cast<char*>(&n), 8);
  CHECK(c.error() == fmt::format("tensor 'w': \"data_offsets\" [0, 64] run past the end of the data section (63 bytes from "
                                 "file offset {})",
                                 8 + n));
}

TEST_CASE("safetensors headers that are not the JSON object they should be", "[safetensors][errors]") {
  corpus c;
  c.write(R"({"w": )");
  CHECK(c.error() == "invalid JSON at byte 16 (line 1, column 9): the text ends where a value should be");
  c.write("not json");
  CHECK(c.error() == "invalid JSON at byte 9 (line 1, column 2): 'o' where the rest of 'null' should be");
  c.write("{\"w\xff\": 1}");
  CHECK(c.error() == "invalid JSON at byte 11 (line 1, column 4): a string holds byte 0xff, which is not UTF-8 there");
  c.write(std::string("{}\0\0\0\0\0\0", 8));
  CHECK(c.error() == "invalid JSON at byte 10 (line 1, column 3): a NUL byte after the value (JSON never holds one; safetensors "
                     "pads its header with spaces)");
  c.write("{\n  \"w\": [1, 2,]\n}");
  CHECK(c.error() == "invalid JSON at byte 23 (line 2, column 14): ']' where a value should be");
  c.write("[1, 2]");
  CHECK(c.error() == "the header is a JSON array, not an object mapping tensor names to their entries");
  c.write("\"w\"");
  CHECK(c.error() == "the header is a JSON string, not an object mapping tensor names to their entries");
  c.write("{" + entry("w", "F32", "[1]", "[0,4]") + "," + entry("w", "F32", "[1]", "[4,8]") + "}", std::string(8, '\0'));
  CHECK(c.error() == "key 'w' appears twice in one JSON object");
  c.write(R"({"__metadata__": {"a": "1", "a": "2"}})");
  CHECK(c.error() == "key 'a' appears twice in one JSON object");
}

TEST_CASE("safetensors metadata that is not strings", "[safetensors][errors]") {
  corpus c;
  c.write(R"({"__metadata__": ["format", "pt"]})");
  CHECK(c.error() == "'__metadata__' is a JSON array, not an object of strings");
  c.write(R"({"__metadata__": {"format": "pt", "epoch": 3}})");
  CHECK(c.error() == "'__metadata__' entry 'epoch' is a JSON number, not a string");
}

TEST_CASE("safetensors entries missing fields or with fields of the wrong type", "[safetensors][errors]") {
  corpus c;
  c.write(R"({"w": 3})");
  CHECK(c.error() == "tensor 'w': its entry is a JSON number, not an object with dtype, shape and data_offsets");
  c.write(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  CHECK(c.error() == "tensor 'w': its entry has no \"dtype\"");
  c.write(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", std::string(4, '\0'));
  CHECK(c.error() == "tensor 'w': its entry has no \"shape\"");
  c.write(R"({"w": {"dtype": "F32", "shape": [1]}})", std::string(4, '\0'));
  CHECK(c.error() == "tensor 'w': its entry has no \"data_offsets\"");
  c.write(R"({"w": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  CHECK(c.error() == "tensor 'w': \"dtype\" is a JSON number, not a string");
  c.write(R"({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}})", std::string(4, '\0'));
  CHECK(c.error() == "tensor 'w': \"shape\" is a JSON number, not an array");
}

TEST_CASE("safetensors dtypes that are unknown or that this libtorch cannot represent", "[safetensors][errors]") {
  corpus c;
  c.write(one("Q8", "[1]", "[0,1]"), "x");
  CHECK(c.error() == "tensor 'w': unknown dtype 'Q8' (safetensors dtypes: BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, "
                     "C64, U16, U32, U64, F8_E4M3, F8_E5M2, F8_E4M3FNUZ, F8_E5M2FNUZ, F8_E8M0)");
  c.write(one("f32", "[1]", "[0,4]"), "xxxx");
  CHECK_THAT(c.error(), Catch::Matchers::StartsWith("tensor 'w': unknown dtype 'f32' "));
  // libtorch 1.13 has none of the 2.x dtypes; 2.13 has them all.
  int refused = 0;
  for (const auto& d : graft::detail::dtype_names) {
    if (d.safetensors.empty()) continue;
    INFO(d.safetensors);
    c.write(one(std::string(d.safetensors), "[1]", fmt::format("[0,{}]", d.itemsize)), std::string(d.itemsize, '\0'));
    if (d.dtype) {
      CHECK(c.error() == "no error");
    } else {
      ++refused;
      CHECK(c.error() == fmt::format("tensor 'w': dtype {} (torch.{}) has no equivalent in libtorch {}; convert it before saving",
                                     d.safetensors, d.python, TORCH_VERSION));
    }
  }
  CHECK(refused == (TORCH_VERSION_MAJOR >= 2 ? 0 : 8));
}

TEST_CASE("safetensors shapes that are not non-negative integers or overflow", "[safetensors][errors]") {
  corpus c;
  c.write(one("F32", "[2,-1]", "[0,8]"), std::string(8, '\0'));
  CHECK(c.error() == "tensor 'w': \"shape\" [2,-1] holds -1, not a non-negative integer");
  c.write(one("F32", "[2.0]", "[0,8]"), std::string(8, '\0'));
  CHECK(c.error() == "tensor 'w': \"shape\" [2.0] holds 2.0, not a non-negative integer");
  c.write(one("F32", "[\"2\"]", "[0,8]"), std::string(8, '\0'));
  CHECK(c.error() == "tensor 'w': \"shape\" [\"2\"] holds \"2\", not a non-negative integer");
  c.write(one("F32", "[1e2]", "[0,400]"), std::string(400, '\0'));
  CHECK(c.error() == "tensor 'w': \"shape\" [100.0] holds 100.0, not a non-negative integer");
  c.write(one("F32", "[18446744073709551615]", "[0,4]"), std::string(4, '\0'));
  CHECK(c.error() == "tensor 'w': \"shape\" [18446744073709551615] has a dimension too large for libtorch");
  c.write(one("F32", "[4294967296,4294967296,2]", "[0,8]"), std::string(8, '\0'));
  CHECK(c.error() == "tensor 'w': \"shape\" [4294967296,4294967296,2] of F32 needs more bytes than 64 bits can count");
  // The element count fits in 64 bits; the byte count does not.
  c.write(one("F32", "[4611686018427387904]", "[0,8]"), std::string(8, '\0'));
  CHECK(c.error() == "tensor 'w': \"shape\" [4611686018427387904] of F32 needs more bytes than 64 bits can count");
  // A zero dimension makes the tensor empty, whatever the others say; libtorch 2.x still
  // refuses strides that overflow, which the header alone cannot know.
  c.write(one("F32", "[0,4294967296,4294967296]", "[0,0]"));
  if (TORCH_VERSION_MAJOR < 2) {
    CHECK(c.error() == "no error");
  } else {
    CHECK(c.error() == "metadata read: no error");
    CHECK_THROWS_MATCHES(graft::read_safetensors(c.path), graft::format_error,
                         Catch::Matchers::Message(fmt::format("[graft.format] '{}': tensor 'w': shape [0, 4294967296, 4294967296] is not a "
                                             "tensor libtorch {} can make: Stride calculation overflowed",
                                             c.path, TORCH_VERSION)));
  }
}

TEST_CASE("safetensors data offsets that are malformed or disagree with the shape", "[safetensors][errors]") {
  corpus c;
  // Shown as written compactly: 18446744073709551616 does not fit 64 bits, so it is a double.
  for (auto [offsets, shown] : {std::pair{"[0]", "[0]"}, {"[0, 4, 8]", "[0,4,8]"}, {"4", "4"}, {"[\"0\",4]", "[\"0\",4]"},
                                {"[-1,4]", "[-1,4]"}, {"[0,4.0]", "[0,4.0]"}, {"[0,4e0]", "[0,4.0]"},
                                {"[0,18446744073709551616]", "[0,1.8446744073709552e+19]"}}) {
    c.write(one("F32", "[1]", offsets), std::string(4, '\0'));
    CHECK(c.error() == fmt::format("tensor 'w': \"data_offsets\" {} is not a pair [begin, end] of non-negative integers", shown));
  }
  c.write(one("F32", "[1]", "[8,4]"), std::string(8, '\0'));
  CHECK(c.error() == "tensor 'w': \"data_offsets\" [8, 4] end before they begin");
  c.write(one("F32", "[100]", "[0,400]"), std::string(16, '\0'));
  CHECK(c.error() == fmt::format("tensor 'w': \"data_offsets\" [0, 400] run past the end of the data section (16 bytes from "
                                 "file offset {})",
                                 c.data_start));
  c.write(one("F32", "[2]", "[0,4]"), std::string(4, '\0'));
  CHECK(c.error() == "tensor 'w': shape [2] of F32 takes 8 bytes, but \"data_offsets\" [0, 4] hold 4");
  c.write(one("BF16", "[]", "[0,4]"), std::string(4, '\0'));
  CHECK(c.error() == "tensor 'w': shape [] of BF16 takes 2 bytes, but \"data_offsets\" [0, 4] hold 4");
}

TEST_CASE("safetensors byte ranges that overlap or leave gaps", "[safetensors][errors]") {
  corpus c;
  auto two = [](std::string_view a, std::string_view b) {
    return "{" + entry("a", "F32", "[2]", a) + "," + entry("b", "F32", "[2]", b) + "}";
  };
  c.write(two("[0,8]", "[4,12]"), std::string(12, '\0'));
  CHECK(c.error() == "tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a' ([0, 8])");
  c.write(two("[0,8]", "[0,8]"), std::string(8, '\0'));
  CHECK(c.error() == "tensor 'b' (data_offsets [0, 8]) overlaps tensor 'a' ([0, 8])");
  c.write(two("[0,8]", "[12,20]"), std::string(20, '\0'));
  CHECK(c.error() == fmt::format("bytes [8, 12) of the data section (file offset {}) belong to no tensor (between 'a' and 'b')",
                                 c.data_start + 8));
  c.write(two("[4,12]", "[12,20]"), std::string(20, '\0'));
  CHECK(c.error() == fmt::format("bytes [0, 4) of the data section (file offset {}) belong to no tensor", c.data_start));
  c.write(two("[0,8]", "[8,16]"), std::string(20, '\0'));
  CHECK(c.error() == fmt::format("bytes [16, 20) of the data section (file offset {}) belong to no tensor (after the last "
                                 "one, 'b')",
                                 c.data_start + 16));
  c.write("{}", std::string(3, '\0'));
  CHECK(c.error() == fmt::format("bytes [0, 3) of the data section (file offset {}) belong to no tensor (the header names "
                                 "none)",
                                 c.data_start));
  // Listed out of data order is fine: only the ranges must tile.
  c.write(two("[8,16]", "[0,8]"), std::string(16, '\0'));
  CHECK(c.error() == "no error");
  // Empty tensors take no bytes, anywhere.
  c.write("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("e", "F32", "[0]", "[8,8]") + "," +
              entry("f", "I64", "[0,3]", "[0,0]") + "}",
          std::string(8, '\0'));
  CHECK(c.error() == "no error");
}

TEST_CASE("every byte flip and truncation of a good safetensors file ends in a value or a format_error", "[safetensors][errors]") {
  corpus c;
  graft::write_safetensors(c.path, {{"a.weight", torch::randn({3, 2})},
                                    {"a.bias", torch::arange(3, torch::kLong)},
                                    {"b", torch::ones({2}, torch::kHalf)}},
                           {{"format", "pt"}});
  std::ifstream in(c.path, std::ios::binary);
  const std::string good{std::istreambuf_iterator<char>(in), {}};
  auto attempt = [&](const std::string& bytes) {
    c.raw(bytes);
    for (bool mmap : {true, false}) {
      try {
        auto v = graft::read_safetensors(c.path, {.mmap = mmap});
        for (auto& [k, t] : v.as_dict()) (void)t.as_tensor().sum();
      } catch (const graft::format_error&) {
      }
    }
  };
  for (std::size_t n = 0; n < good.size(); ++n) attempt(good.substr(0, n));
  for (std::size_t i = 0; i < good.size(); ++i)
    for (unsigned char flip : {0x01, 0x80, 0xff}) {
      auto bad = good;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      attempt(bad);
    }
  SUCCEED("no crash and no foreign exception");
}
