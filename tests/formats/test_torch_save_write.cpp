// Writing: what C++ writes, Python's torch.load reads back equal (checked by Python's own
// summary), with OrderedDict state dicts and shared storages; failed writes leave no trace.

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include <graft/formats/torch_save.hpp>

#include "oracle.hpp"
#include "test_torch_save_support.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;

namespace {

std::string python_load(const std::string& file, const std::string& extra = "") {
  return run_python(graft::test::py_summary + "obj = torch.load('" + file + "')\n" + extra +
                    "sys.stdout.write(summary(obj))\n");
}

std::size_t entries(const std::filesystem::path& dir) {
  return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator(dir), {}));
}

} // namespace

TEST_CASE("write_torch_save: a state dict reads back in Python as an OrderedDict, equal", "[torch_save][write]") {
  scratch_dir dir;
  torch::manual_seed(0);
  graft::dict sd;
  auto w = torch::randn({4, 6});
  sd.append("embed.weight", w);
  sd.append("head.weight", w);                                  // tied
  sd.append("slice", w.slice(0, 1).slice(1, 2));                 // offset view
  sd.append("t", w.t());                                         // transposed
  sd.append("half", torch::randn({3}).to(torch::kHalf));
  sd.append("bf16", torch::randn({2, 2}).to(torch::kBFloat16));
  sd.append("f64", torch::randn({2}, torch::kDouble));
  sd.append("i8", torch::tensor({-5, 7}, torch::kChar));
  sd.append("i16", torch::tensor({-300, 7}, torch::kShort));
  sd.append("i32", torch::tensor({-70000, 7}, torch::kInt));
  sd.append("i64", torch::tensor({int64_t(1) << 40, int64_t(-1)}, torch::kLong));
  sd.append("u8", torch::tensor({0, 255}, torch::kByte));
  sd.append("bool", torch::tensor({true, false}));
  sd.append("c64", torch::randn({2}, torch::kComplexFloat));
  sd.append("c128", torch::randn({2}, torch::kComplexDouble));
  sd.append("scalar", torch::tensor(3.5));
  sd.append("empty", torch::zeros({0, 3}));
  sd.append("param", torch::randn({2}).requires_grad_());
  sd.append("big", torch::zeros({5, 1, 1, 2}));
  graft::value v(std::move(sd));
  auto file = dir.file("sd.pt");
  graft::write_torch_save(file, v);

  auto out = python_load(file, R"PY(
print(type(obj).__name__)
print(obj['embed.weight'].data_ptr() == obj['head.weight'].data_ptr(),
      obj['slice'].storage().data_ptr() == obj['embed.weight'].storage().data_ptr(),
      obj['slice'].storage_offset(), obj['t'].stride())
print(summary(torch.load(')PY" + file + R"PY(', weights_only=True)) == summary(obj))
)PY");
  auto expected = "OrderedDict\nTrue True 8 (1, 6)\nTrue\n" + graft::test::summary(v);
  CHECK(out == expected);
  // And graft reads its own file back equal, sharing as before.
  auto back = graft::read_torch_save(file);
  CHECK(graft::test::summary(back) == graft::test::summary(v));
  CHECK(back.as_dict().at("t").as_tensor().storage().is_alias_of(back.as_dict().at("embed.weight").as_tensor().storage()));
}

TEST_CASE("write_torch_save: a nested checkpoint keeps its scalars, containers and int keys", "[torch_save][write]") {
  scratch_dir dir;
  graft::dict model;
  model.append("fc.weight", torch::ones({2, 2}));
  graft::dict state0;
  state0.append("step", torch::tensor(3.0));
  state0.append("exp_avg", torch::zeros({2, 2}));
  graft::dict state;
  state.append(0, state0);
  graft::dict group;
  group.append("lr", 0.001);
  group.append("betas", graft::sequence{{0.9, 0.999}, true});
  group.append("amsgrad", false);
  group.append("foreach", nullptr);
  group.append("params", graft::sequence{{0}, false});
  graft::dict opt;
  opt.append("state", state);
  opt.append("param_groups", graft::sequence{{group}, false});
  graft::dict args;
  args.append("name", "run-1 ünïcode");
  args.append("layers", graft::sequence{{1, 300, 70000, std::int64_t(1) << 40, -1, -129, -(std::int64_t(1) << 62)}, false});
  args.append("tuple4", graft::sequence{{1, 2, 3, 4}, true});
  args.append("empty_tuple", graft::sequence{{}, true});
  args.append("empty_list", graft::sequence{});
  args.append("empty_dict", graft::dict{});
  args.append("blob", graft::value::bytes{"ab"});
  args.append("inf", std::numeric_limits<double>::infinity());
  graft::dict ckpt;
  ckpt.append("model", model);
  ckpt.append("optimizer", opt);
  ckpt.append("epoch", 3);
  ckpt.append("args", args);
  graft::value v(std::move(ckpt));
  auto file = dir.file("ckpt.pt");
  graft::write_torch_save(file, v);
  auto out = python_load(file, R"PY(
print(type(obj).__name__, type(obj['model']).__name__, type(obj['optimizer']['state']).__name__,
      list(obj['optimizer']['state'].keys()), obj['args']['blob'])
)PY");
  CHECK(out == "dict OrderedDict dict [0] b'ab'\n" + graft::test::summary(v));
  CHECK(graft::test::summary(graft::read_torch_save(file)) == graft::test::summary(v));
}

TEST_CASE("write_torch_save: replaces atomically and leaves nothing behind on failure", "[torch_save][write]") {
  scratch_dir dir;
  auto file = dir.file("model.pt");
  graft::dict sd;
  sd.append("w", torch::ones({3}));
  graft::write_torch_save(file, graft::value(sd));
  auto before = std::filesystem::file_size(file);
  CHECK(entries(dir.path()) == 1);

  // A value that cannot be saved: the old file stays, no temp file appears.
  graft::dict bad;
  bad.append("w", torch::ones({3}));
  bad.append("sparse", torch::eye(3).to_sparse());
  CHECK_THROWS_WITH(graft::write_torch_save(file, graft::value(bad)),
                    fmt::format("[graft.format] cannot write '{}': a tensor of layout Sparse cannot be saved; only "
                                "strided (dense) tensors can (at 'sparse')",
                                file));
  graft::dict qbad;
  qbad.append("q", torch::quantize_per_tensor(torch::ones({2}), 0.1, 0, torch::kQInt8));
  CHECK_THROWS_WITH(graft::write_torch_save(file, graft::value(qbad)),
                    fmt::format("[graft.format] cannot write '{}': dtype QInt8 has no torch storage type graft can write (at 'q')", file));
  CHECK(std::filesystem::file_size(file) == before);
  CHECK(graft::read_torch_save(file).as_dict().at("w").as_tensor().equal(torch::ones({3})));
  CHECK(entries(dir.path()) == 1);

  // The destination cannot be replaced (it is a directory): the temp file is removed.
  std::filesystem::create_directory(dir.file("taken"));
  CHECK_THROWS_WITH(graft::write_torch_save(dir.file("taken"), graft::value(sd)),
                    fmt::format("[graft.io] cannot write '{}': cannot rename the temp file over it: Is a directory", dir.file("taken")));
  CHECK(entries(dir.path()) == 2);
  CHECK_THROWS_WITH(graft::write_torch_save(dir.file("missing/model.pt"), graft::value(sd)),
                    Catch::Matchers::StartsWith(fmt::format("[graft.io] cannot write '{}': cannot create", dir.file("missing/model.pt"))));

  // Overwriting replaces the content whole.
  sd.append("b", torch::zeros({2}));
  graft::write_torch_save(file, graft::value(sd));
  CHECK(graft::read_torch_save(file).as_dict().size() == 2);
  CHECK(entries(dir.path()) == 2);
}
