// graft's exceptions: the class is the kind, the bare message and the place (file, record,
// byte offset) are kept apart from what(), a refused merge is both a load_error and a key or
// shape error, and an error can be thrown again by kind without parsing its text.

#include <fstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/formats.hpp>
#include <graft/select/glob.hpp>
#include <graft/state_dict.hpp>

#include "oracle.hpp"

using graft::test::scratch_dir;
using namespace graft::literals;

TEST_CASE("errors: what() is the tag, the file, the message and the byte; each part is there alone", "[errors]") {
  scratch_dir dir;
  auto bad = dir.file("bad.pt");
  std::ofstream(bad, std::ios::binary) << std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15) << "\x80\x02K\x05.";
  try {
    graft::read_torch_save(bad);
    FAIL("no error");
  } catch (const graft::format_error& e) {
    CHECK(e.kind() == graft::error_kind::format);
    CHECK(e.message() == "protocol version 5 is not 1001, the one torch.save's legacy format has");
    CHECK(e.context().file == bad);
    CHECK(e.context().record == "the file, a legacy torch.save file");
    REQUIRE(e.context().offset);
    CHECK(*e.context().offset == 20);
    CHECK(std::string(e.what()) == "[graft.format] '" + bad + "': " + e.message() + " (byte 20 of the file, a legacy torch.save file)");
    CHECK("[graft.format] " + e.text() == e.what());
    CHECK(e.text_in_file() == e.message() + " (byte 20 of the file, a legacy torch.save file)");
  }
  // A missing file: an io_error whose message names the file, which context() has too.
  try {
    graft::read(dir.file("absent.pt")) | graft::collect();
    FAIL("no error");
  } catch (const graft::io_error& e) {
    CHECK(e.context().file == dir.file("absent.pt"));
    CHECK(std::string(e.what()) == "[graft.io] " + e.message());
  }
}

TEST_CASE("errors: a refused merge is a load_error and a key_error or shape_error", "[errors]") {
  auto model = torch::nn::Linear(4, 2);
  graft::state_dict missing;
  missing.insert("weight", torch::zeros({2, 4}));
  CHECK_THROWS_AS(missing | graft::merge(*model), graft::key_error);
  try {
    missing | graft::merge(*model);
  } catch (const graft::load_error& e) {
    CHECK(e.kind() == graft::error_kind::key);
    CHECK(e.report().missing_keys() == std::vector<std::string>{"bias"});
    CHECK(dynamic_cast<const graft::key_error*>(&e.as_error()));
    CHECK(std::string(e.what()) == e.as_error().what());
  }
  graft::state_dict wrong;
  wrong.insert("weight", torch::zeros({3, 4}));
  wrong.insert("bias", torch::zeros({2}));
  try {
    wrong | graft::merge(*model);
    FAIL("no error");
  } catch (const graft::shape_error& e) {
    auto* refused = dynamic_cast<const graft::load_error*>(&e);
    REQUIRE(refused);
    CHECK(refused->report().mismatched.size() == 1);
  }
}

TEST_CASE("errors: a value of the wrong type is a type_error; throw_error rebuilds any kind", "[errors]") {
  graft::value v(3);
  CHECK_THROWS_AS(v.as_dict(), graft::type_error);
  CHECK_THROWS_WITH(v.as_string(), "[graft.type] expected a str value, found int");
  for (auto kind : {graft::error_kind::pattern, graft::error_kind::selection, graft::error_kind::key, graft::error_kind::shape,
                    graft::error_kind::format, graft::error_kind::io, graft::error_kind::option, graft::error_kind::state,
                    graft::error_kind::distributed, graft::error_kind::type}) {
    try {
      graft::throw_error(kind, "it failed", {.file = "f.pt"});
    } catch (const graft::error& e) {
      CHECK(e.kind() == kind);
      CHECK(std::string(e.what()) == fmt::format("[graft.{}] 'f.pt': it failed", graft::to_string(kind)));
    }
  }
  CHECK_THROWS_AS(graft::throw_error(graft::error_kind::shape, "x"), graft::shape_error);
}
