// Differential test of the torch.save reader: random checkpoints (formats/differential/make_cases.py:
// nested containers, every dtype, parameters, empty, 0-d and non-contiguous tensors, views sharing a
// storage, plain values; zip in pickle protocols 2-5 and legacy in protocol 2), written by the build's
// torch and by PyTorch 2.x, must read as PyTorch 2.x's safe loader, torch.load(path,
// weights_only=True, map_location="cpu"), reads them: the same tree, dtypes, shapes, bytes, strides,
// storage offsets and storage sharing. What it refuses, graft must refuse. Files of pickle protocol
// 3 to 5 that it refuses only for their opcodes (graft reads them by design) are compared with
// torch.load(weights_only=False), marked "# ..." in expected.txt.
// GRAFT_DIFF_SEED and GRAFT_DIFF_CASES (per torch) change the run: scripts/diff-torch-save.sh.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <graft/error.hpp>
#include <graft/formats/torch_save.hpp>

#include "oracle.hpp"
#include "test_torch_save_support.hpp"

namespace torch_save_diff {

// make_cases.py's summary(): test_torch_save_support.hpp's, with stride, offset and storage group.
struct summarizer {
  std::unordered_map<const void*, std::size_t> groups;
  std::string out;

  // Python's repr of bytes without quotes in them (make_cases.py leaves ' and " out).
  static std::string bytes_repr(const std::string& b) {
    std::string s = "b'";
    for (unsigned char c : b) {
      if (c == '\\') s += "\\\\";
      else if (c == '\t') s += "\\t";
      else if (c == '\n') s += "\\n";
      else if (c == '\r') s += "\\r";
      else if (c < 0x20 || c >= 0x7f) s += fmt::format("\\x{:02x}", c);
      else s += static_cast<char>(c);
    }
    return s + "'";
  }
  // Python's repr of a float: fmt's shortest form switches to exponents where repr does.
  static std::string float_repr(double d) {
    if (std::isnan(d)) return "nan";
    auto s = fmt::format("{}", d);
    if (s.find_first_of(".en") == std::string::npos) s += ".0";
    return s;
  }

  void walk(const graft::value& v, const std::string& p) {
    auto child = [&](const std::string& k) { return p.empty() ? k : p + "." + k; };
    if (v.is_tensor()) {
      const auto& t = v.as_tensor();
      const void* impl = t.storage().unsafeGetStorageImpl();
      auto group = groups.try_emplace(impl, groups.size()).first->second;
      out += fmt::format("T {} {} [{}] {} {} stride=[{}] offset={} storage={}\n", p, graft::test::py_dtype(t.scalar_type()),
                         fmt::join(t.sizes(), ", "), graft::test::tensor_crc(t), int(t.requires_grad()),
                         fmt::join(t.strides(), ", "), t.storage_offset(), group);
    } else if (v.is_dict()) {
      out += fmt::format("D {} {}\n", p, v.as_dict().size());
      for (const auto& [k, x] : v.as_dict()) walk(x, child(k.key_text()));
    } else if (v.is_sequence()) {
      const auto& s = v.as_sequence();
      out += fmt::format("S {} {} {}\n", p, s.is_tuple ? "tuple" : "list", s.items.size());
      for (std::size_t i = 0; i < s.items.size(); ++i) walk(s.items[i], child(std::to_string(i)));
    } else if (v.is_none()) {
      out += fmt::format("V {} NoneType None\n", p);
    } else if (v.is_bool()) {
      out += fmt::format("V {} bool {}\n", p, v.as_bool() ? "True" : "False");
    } else if (v.is_int()) {
      out += fmt::format("V {} int {}\n", p, v.as_int());
    } else if (v.is_float()) {
      out += fmt::format("V {} float {}\n", p, float_repr(v.as_number()));
    } else if (v.is_string()) {
      out += fmt::format("V {} str '{}'\n", p, v.as_string());
    } else if (v.is_bytes()) {
      out += fmt::format("V {} bytes {}\n", p, bytes_repr(std::get<graft::value::bytes>(v.raw()).data));
    }
  }
};

std::string summary(const graft::value& v) {
  summarizer s;
  s.walk(v, "");
  return s.out;
}

long env_or(const char* name, long fallback) {
  const char* s = std::getenv(name);
  return s && *s ? std::stol(s) : fallback;
}

// Runs make_cases.py with `python` and `args` (a Python list's items).
void make_cases(const std::string& python, const std::string& args) {
  const std::string script = std::string(GRAFT_TEST_SOURCE_DIR) + "/formats/differential/make_cases.py";
  graft::test::run_python_with(python, fmt::format("import runpy, sys\nsys.argv = ['{}', {}]\n"
                                                   "runpy.run_path(sys.argv[0], run_name='__main__')\n",
                                                   script, args));
}

struct expected_case {
  std::string text;  // the summary, or "REFUSED <class>\n"
  std::string note;  // "# ..." when the safe loader refused only the opcodes and weights_only=False read it
};

std::map<std::string, expected_case> read_expected(const std::string& path) {
  std::map<std::string, expected_case> cases;
  std::ifstream in(path);
  std::string line, name;
  while (std::getline(in, line)) {
    if (line.starts_with("== ")) {
      name = line.substr(3);
      cases[name];
    } else if (line.starts_with("# ")) cases[name].note = line;
    else cases[name].text += line + "\n";
  }
  return cases;
}

} // namespace torch_save_diff

TEST_CASE("torch.save differential: random checkpoints read as torch.load(weights_only=True) reads them",
          "[torch_save][differential]") {
  namespace diff = torch_save_diff;
  const long seed = diff::env_or("GRAFT_DIFF_SEED", 20250611);
  const long count = diff::env_or("GRAFT_DIFF_CASES", 100);
  const std::string build_python = GRAFT_PYTHON;
  const std::string new_python = std::string(GRAFT_PYTHON_PEFT).empty() ? build_python : GRAFT_PYTHON_PEFT;
  const auto reproduce = fmt::format("GRAFT_DIFF_SEED={} GRAFT_DIFF_CASES={}; cases a_* by {}, b_* by {}; remake one "
                                     "with: python tests/formats/differential/make_cases.py write DIR {} {} a|b",
                                     seed, count, build_python, new_python, seed, count);
  INFO(reproduce);
  if (std::string(GRAFT_PYTHON_PEFT).empty())
    WARN("GRAFT_PYTHON_PEFT is not set: " << build_python << " writes every case and is the oracle");

  graft::test::scratch_dir dir;
  const auto out = dir.path().string();
  diff::make_cases(build_python, fmt::format("'write', '{}', '{}', '{}', 'a'", out, seed, count));
  diff::make_cases(new_python, fmt::format("'write', '{}', '{}', '{}', 'b'", out, seed, count));
  diff::make_cases(new_python, fmt::format("'oracle', '{}'", out));
  const auto expected = diff::read_expected(dir.file("expected.txt"));

  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    if (e.path().extension() == ".pt") names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  REQUIRE(names.size() == static_cast<std::size_t>(2 * count));
  REQUIRE(expected.size() == names.size());

  int differences = 0, refused = 0, lenient = 0;
  for (const auto& name : names) {
    const auto& want = expected.at(name);
    std::string got;
    bool graft_refused = false;
    try {
      got = diff::summary(graft::read_torch_save(dir.file(name)));
    } catch (const graft::error& e) {
      graft_refused = true;
      got = fmt::format("graft refuses it: {}\n", e.what());
    } catch (const std::exception& e) {
      got = fmt::format("an exception that is not a graft::error: {}\n", e.what());
    }
    const bool want_refused = want.text.starts_with("REFUSED ");
    refused += want_refused;
    lenient += !want.note.empty();
    if (want_refused ? graft_refused : got == want.text) continue;
    if (++differences <= 10)
      FAIL_CHECK(fmt::format("{} differs{}\n--- torch.load:\n{}--- graft:\n{}", name,
                             want.note.empty() ? "" : " (" + want.note + ")", want.text, got));
  }
  INFO(fmt::format("{} cases: {} refused by the safe loader, {} compared with weights_only=False", names.size(), refused,
                   lenient));
  CHECK(differences == 0);
}
