// torch.save's legacy format (PyTorch < 1.6, or _use_new_zipfile_serialization=False): files
// the installed Python torch writes read equal to torch.load's view of them, in pickle
// protocols 2 to 5; graft writes files torch.load reads back equal; bad input is one
// format_error naming the file and the byte.

#include <fstream>
#include <iterator>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <graft/formats/read.hpp>
#include <graft/formats/torch_save.hpp>
#include <graft/state_dict.hpp>

#include "oracle.hpp"
#include "test_torch_save_support.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;

namespace legacy_test {

// Saves Python's `obj` (bound by `make`) in the legacy format with `protocol` and returns
// Python's summary of what torch.load gives back.
std::string python_save_legacy(const std::string& file, const std::string& make, int protocol = 2) {
  return run_python(graft::test::py_summary + "torch.manual_seed(0)\n" + make + "\ntorch.save(obj, '" + file +
                    "', _use_new_zipfile_serialization=False, pickle_protocol=" + std::to_string(protocol) +
                    ")\nsys.stdout.write(summary(torch.load('" + file + "', weights_only=False)))\n");
}

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
std::string error_text(const std::string& path) {
  try {
    graft::read_torch_save(path);
  } catch (const graft::format_error& e) {
    return e.what();
  }
  return "no error";
}

} // namespace legacy_test

TEST_CASE("legacy torch.save: a state dict in protocols 2, 4 and 5 reads equal to torch.load", "[torch_save][legacy]") {
  scratch_dir dir;
  for (int protocol : {2, 4, 5}) {
    INFO("protocol " << protocol);
    auto file = dir.file(fmt::format("p{}.pt", protocol));
    auto expected = legacy_test::python_save_legacy(file, R"PY(
m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(), torch.nn.Linear(8, 4))
obj = m.state_dict()
)PY", protocol);
    auto mapped = graft::mapped_file::open(file);
    CHECK(graft::is_legacy_torch_save_file(*mapped));
    CHECK_FALSE(graft::is_torch_save_file(*mapped));
    CHECK(graft::detect_format(file) == graft::checkpoint_format::torch_save_legacy);
    auto v = graft::read_torch_save(file);
    CHECK(graft::test::summary(v) == expected);
    CHECK(graft::test::summary(graft::read_torch_save_legacy(file)) == expected);
    // The file's _metadata versions reach the state dict: BatchNorm is version 2, Conv2d 1.
    auto sd = graft::read(file) | graft::collect();
    CHECK(sd.size() == 9);
    CHECK(sd.find("1.running_mean")->module_version == 2);
    CHECK(sd.find("0.weight")->module_version == 1);
  }
}

TEST_CASE("legacy torch.save: a torchvision resnet18 state dict reads equal", "[torch_save][legacy]") {
  scratch_dir dir;
  auto file = dir.file("resnet18_legacy.pth");
  auto expected = legacy_test::python_save_legacy(file, "import torchvision\nobj = torchvision.models.resnet18().state_dict()");
  auto v = graft::read_torch_save(file);
  CHECK(v.as_dict().size() == 122);
  CHECK(graft::test::summary(v) == expected);
}

TEST_CASE("legacy torch.save: every dtype, nested checkpoints, views sharing one storage", "[torch_save][legacy]") {
  scratch_dir dir;
  auto file = dir.file("mixed.pt");
  auto expected = legacy_test::python_save_legacy(file, R"PY(
w = torch.arange(24, dtype=torch.float32).reshape(4, 6)
d = collections.OrderedDict()
for dt in [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32,
           torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128]:
    n = str(dt)[6:]
    if dt.is_complex: d[n] = torch.randn(3, 2, dtype=dt)
    elif dt == torch.bool: d[n] = torch.rand(3, 2) > 0.5
    elif dt.is_floating_point: d[n] = (torch.randn(3, 2) * 100).to(dt)
    else: d[n] = torch.randint(0, 100, (3, 2)).to(dt)
    d[n + '_scalar'] = d[n][0, 0].clone()
    d[n + '_empty'] = d[n][:0].clone()
obj = {'model': d, 'epoch': 7, 'args': {'lr': 0.5, 'name': 'run', 'sizes': (1, 2)}, 'blob': b'xy',
       'tied': [w, w, w[1:, 2:], w.t(), torch.ones(3)[:1].expand(4, 5)], 'param': torch.nn.Parameter(torch.randn(2))}
)PY");
  auto v = graft::read_torch_save(file);
  CHECK(graft::test::summary(v) == expected);
  auto& tied = v.as_dict().at("tied").as_sequence().items;
  auto w = tied[0].as_tensor();
  CHECK(w.data_ptr() == tied[1].as_tensor().data_ptr());
  CHECK(w.storage().is_alias_of(tied[2].as_tensor().storage()));
  CHECK(tied[2].as_tensor().storage_offset() == 8);
  w[1][3].fill_(-1);
  CHECK(tied[3].as_tensor()[3][1].item<float>() == -1);
  CHECK(v.as_dict().at("param").as_tensor().requires_grad());
}

TEST_CASE("legacy torch.save: view metadata of older files selects part of a storage", "[torch_save][legacy]") {
  // PyTorch before 1.x pickled storage views as ('storage', type, root, location, numel,
  // (view_key, offset, numel)); today's torch.load still reads them. Written here by hand.
  scratch_dir dir;
  auto file = dir.file("views.pt");
  auto expected = run_python(graft::test::py_summary + R"PY(
import pickle, struct
class Pid:
    def __init__(self, t): self.t = t
class Rebuild:
    def __init__(self, pid, offset, size, stride): self.a = (Pid(pid), offset, size, stride)
    def __reduce__(self): return (torch._utils._rebuild_tensor_v2, self.a + (False, collections.OrderedDict()))
class P(pickle.Pickler):
    def persistent_id(self, o): return o.t if isinstance(o, Pid) else None
root = ('storage', torch.FloatStorage, 'root', 'cpu', 10)
obj = collections.OrderedDict(whole=Rebuild(root + (None,), 0, (10,), (1,)),
                              part=Rebuild(root + (('v1', 2, 6),), 1, (2, 2), (2, 1)),
                              again=Rebuild(root + (('v1', 2, 6),), 0, (6,), (1,)))
with open(')PY" + file + R"PY(', 'wb') as f:
    for x in (0x1950a86a20f9469cfc6c, 1001, {'protocol_version': 1001, 'little_endian': True, 'type_sizes': {}}):
        pickle.dump(x, f, protocol=2)
    P(f, protocol=2).dump(obj)
    pickle.dump(['root'], f, protocol=2)
    f.write(struct.pack('<q', 10) + torch.arange(10, dtype=torch.float32).numpy().tobytes())
sys.stdout.write(summary(torch.load(')PY" + file + "')))\n");
  auto v = graft::read_torch_save(file);
  CHECK(graft::test::summary(v) == expected);
  auto part = v.as_dict().at("part").as_tensor();
  CHECK(torch::equal(part.flatten(), torch::tensor({3.f, 4.f, 5.f, 6.f})));  // view [2, 8), from its element 1
  CHECK(part.storage().is_alias_of(v.as_dict().at("whole").as_tensor().storage()));
}

TEST_CASE("legacy torch.save: graft writes it and torch.load reads it back equal", "[torch_save][legacy]") {
  scratch_dir dir;
  auto src = dir.file("src.pt");
  auto expected = run_python(graft::test::py_summary + R"PY(
torch.manual_seed(0)
w = torch.randn(4, 6)
obj = {'model': collections.OrderedDict(w=w, tied=w, half=torch.randn(3).half(), n=torch.tensor(5), b=torch.rand(2) > 0.5),
       'epoch': 3, 'name': 'x', 'blob': b'ab', 'slice': w[1:, 2:]}
torch.save(obj, ')PY" + src + R"PY(')
sys.stdout.write(summary(torch.load(')PY" + src + "')))\n");
  auto v = graft::read_torch_save(src);
  auto out = dir.file("out.pt");
  graft::write_torch_save_legacy(out, v);
  CHECK(graft::is_legacy_torch_save_file(*graft::mapped_file::open(out)));
  CHECK(graft::test::summary(graft::read_torch_save(out)) == expected);
  auto python = run_python(graft::test::py_summary + "o = torch.load('" + out +
                           "')\nassert o['model']['w'].data_ptr() == o['model']['tied'].data_ptr()\n"
                           "assert o['slice'].storage().data_ptr() == o['model']['w'].storage().data_ptr()\n"
                           "sys.stdout.write(summary(o))\n");
  CHECK(python == expected);

  // Through graft::save, asked for by format.
  auto sd = graft::read(src) | graft::at("model") | graft::collect();
  auto legacy = dir.file("sd.bin");
  graft::save(sd, legacy, graft::checkpoint_format::torch_save_legacy);
  CHECK(run_python("import torch\nsd = torch.load('" + legacy + "')\nprint(list(sd), sd['n'].item(), sd['w'].shape)\n") ==
        "['w', 'tied', 'half', 'n', 'b'] 5 torch.Size([4, 6])\n");
}

TEST_CASE("legacy torch.save: a tar file of PyTorch 0.1 is refused by name", "[torch_save][legacy][errors]") {
  scratch_dir dir;
  auto tar = dir.file("old.pt");
  run_python("import tarfile, io\nwith tarfile.open('" + tar +
             "', 'w') as t:\n    for n in ('sys_info', 'pickle', 'storages', 'tensors'):\n"
             "        i = tarfile.TarInfo(n); i.size = 1; t.addfile(i, io.BytesIO(b'x'))\n");
  CHECK_THROWS_WITH(graft::read(tar) | graft::collect(),
                    fmt::format("[graft.format] '{}' is a tar archive, the torch.save format of PyTorch 0.1 and 0.2 (members "
                                "sys_info, pickle, storages, tensors), which graft does not read; load it with torch.load and "
                                "save it again with torch.save(obj, path)",
                                tar));
}

TEST_CASE("legacy torch.save: bad input is one format_error naming the file and the byte", "[torch_save][legacy][errors]") {
  scratch_dir dir;
  auto good = dir.file("good.pt");
  run_python("import torch\ntorch.save({'w': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2).half()}, '" + good +
             "', _use_new_zipfile_serialization=False)\n");
  const auto bytes = legacy_test::bytes_of(good);
  CHECK(graft::test::summary(graft::read_torch_save(good)).find("T w float32 [2, 3]") != std::string::npos);
  auto bad = dir.file("bad.pt");

  // One half storage (2 elements, 4 bytes) ends the file: cut it short, change its count.
  auto one = dir.file("one.pt");
  run_python("import torch\ntorch.save({'b': torch.ones(2).half()}, '" + one + "', _use_new_zipfile_serialization=False)\n");
  const auto small = legacy_test::bytes_of(one);
  legacy_test::write_bytes(bad, small.substr(0, small.size() - 1));
  CHECK_THAT(legacy_test::error_text(bad),
             Catch::Matches(fmt::format(R"(\[graft\.format\] '{}': the file ends inside storage '\d+' \(4 bytes, 3 left\) \(byte {} of )"
                                        R"(the file, a legacy torch\.save file\))",
                                        bad, small.size() - 4)));
  auto recount = small;
  recount[small.size() - 4 - 8] = 3;
  legacy_test::write_bytes(bad, recount);
  CHECK_THAT(legacy_test::error_text(bad),
             Catch::Matches(fmt::format(R"(\[graft\.format\] '{}': storage '\d+' holds 3 elements of 2 bytes, but the pickle says 4 )"
                                        R"(bytes \(byte {} of the file, a legacy torch\.save file\))",
                                        bad, small.size() - 4 - 8)));
  legacy_test::write_bytes(bad, small.substr(0, small.size() - 12));
  CHECK_THAT(legacy_test::error_text(bad), Catch::Contains("the file ends inside the element count of storage"));

  // Every truncation fails cleanly; every single-byte change is a format_error or a clean read.
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    legacy_test::write_bytes(bad, bytes.substr(0, n));
    INFO("truncated to " << n << " bytes");
    CHECK_THROWS_AS(graft::read(bad) | graft::collect(), graft::format_error);
  }
  for (std::size_t i = 0; i < bytes.size(); ++i)
    for (unsigned char x : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
      auto b = bytes;
      b[i] = static_cast<char>(x);
      legacy_test::write_bytes(bad, b);
      INFO("byte " << i << " = " << int(x));
      try {
        (void)graft::read_torch_save(bad);
      } catch (const graft::error&) {
      }
    }

  // A storage that claims more than the file holds allocates nothing.
  auto huge = dir.file("huge.pt");
  run_python(R"PY(
import pickle, struct, torch, collections
class Pid:
    def __init__(self, t): self.t = t
class Rebuild:
    def __reduce__(self): return (torch._utils._rebuild_tensor_v2, (Pid(('storage', torch.FloatStorage, 'k', 'cpu', 1 << 40, None)), 0, (4,), (1,), False, collections.OrderedDict()))
class P(pickle.Pickler):
    def persistent_id(self, o): return o.t if isinstance(o, Pid) else None
with open(')PY" + huge + R"PY(', 'wb') as f:
    for x in (0x1950a86a20f9469cfc6c, 1001, {}):
        pickle.dump(x, f, protocol=2)
    P(f, protocol=2).dump({'w': Rebuild()})
    pickle.dump(['k'], f, protocol=2)
    f.write(struct.pack('<q', 4) + bytes(16))
)PY");
  auto text = legacy_test::error_text(huge);
  CHECK(text.starts_with(fmt::format("[graft.format] '{}': storage 'k' of 1099511627776 elements of 4 bytes does not fit in the "
                                     "file's",
                                     huge)));
  CHECK(text.find("(byte ") != std::string::npos);
}

// Files from PyTorch's older writers, which neither installed PyTorch writes any more, made the
// way they arose: tensors reduced by torch._utils._rebuild_tensor (before _rebuild_tensor_v2),
// and OrderedDicts by their own __reduce__, as a list of two-element lists. Judged by PyTorch
// 2.13's safe loader, torch.load(weights_only=True), which reads both.
TEST_CASE("legacy torch.save: _rebuild_tensor and OrderedDicts of [key, value] lists read as PyTorch 2.13's safe loader reads them",
          "[torch_save][legacy]") {
  scratch_dir dir;
  // Protocol 2: PyTorch 2.13's safe loader refuses legacy files of protocols 4 and 5 (FRAME).
  for (int protocol : {2}) {
    INFO("protocol " << protocol);
    auto file = dir.file(fmt::format("old_writer_p{}.pt", protocol));
    run_python(R"PY(
import collections, pickle, types, torch
class OldPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if type(obj) is collections.OrderedDict:
            return (collections.OrderedDict, ([[k, v] for k, v in obj.items()],))
        if type(obj) is torch.Tensor:
            return (torch._utils._rebuild_tensor, (obj.storage(), obj.storage_offset(), tuple(obj.size()), obj.stride()))
        return NotImplemented
old_pickle = types.SimpleNamespace(Pickler=OldPickler, dump=pickle.dump, __name__="pickle")
torch.manual_seed(0)
base = torch.randn(4, 6)
obj = collections.OrderedDict([
    ("conv.weight", torch.randn(8, 3, 3, 3)),
    ("conv.bias", torch.randn(8).double()),
    ("fc.weight", base),
    ("fc.weight_t", base.t()),              # a view: strides, the same storage
    ("fc.rows", base[1:3]),                  # a view with an offset
    ("steps", torch.tensor(7)),              # 0-d
    ("empty", torch.zeros(0, 5)),
    ("nested", collections.OrderedDict([("mask", torch.tensor([True, False])), ("ids", torch.arange(5))])),
])
torch.save(obj, ")PY" + file + R"PY(", pickle_module=old_pickle, _use_new_zipfile_serialization=False,
           pickle_protocol=)PY" + std::to_string(protocol) + "\n)\n");
    std::string oracle = std::string(GRAFT_PYTHON_PEFT).empty() ? std::string(GRAFT_PYTHON) : std::string(GRAFT_PYTHON_PEFT);
    auto expected = graft::test::run_python_with(
        oracle, graft::test::py_summary + "sys.stdout.write(summary(torch.load('" + file +
                    "', weights_only=True, map_location='cpu')))\n");
    auto v = graft::read_torch_save(file);
    CHECK(graft::test::summary(v) == expected);
    // The views still share their storage, as torch.load's do.
    auto& d = v.as_dict();
    CHECK(d.at("fc.weight_t").as_tensor().data_ptr() == d.at("fc.weight").as_tensor().data_ptr());
    CHECK(d.at("fc.rows").as_tensor().data_ptr() ==
          static_cast<const char*>(d.at("fc.weight").as_tensor().data_ptr()) + 6 * sizeof(float));
    CHECK(graft::test::summary(graft::read_torch_save_legacy(file)) == expected);
  }
}
