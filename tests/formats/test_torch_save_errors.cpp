// Bad input: every malformed file is one graft::format_error naming the file and what is wrong,
// never a crash, a foreign exception or a huge allocation; hostile globals are refused unrun.

#include <filesystem>
#include <fstream>

#include <caffe2/serialize/inline_container.h>
#include <catch2/catch.hpp>

#include <graft/io/detail/zip.hpp>
#include <graft/formats/torch_save.hpp>

#include "oracle.hpp"
#include "test_torch_save_support.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;
using namespace std::string_literals;

namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void spit(const std::string& path, std::string_view bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A zip laid out as torch.save lays it out; records are named "<stem of path>/<name>".
void write_archive(const std::string& path, const std::vector<std::pair<std::string, std::string>>& records) {
  caffe2::serialize::PyTorchStreamWriter w(path);
  for (auto& [name, bytes] : records) w.writeRecord(name, bytes.data(), bytes.size());
  w.writeEndOfFile();
}

std::string le32(std::uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}
std::string str(std::string_view s) { return "X" + le32(static_cast<std::uint32_t>(s.size())) + std::string(s); }
std::string i1(int v) { return std::string("K") + static_cast<char>(v); }

// The pickle torch.save writes for one tensor, with every field under the test's control.
std::string tensor_pickle(std::string_view storage_type = "FloatStorage", int numel = 6, int offset = 0,
                          std::string sizes = i1(2) + i1(3) + "\x86", std::string strides = i1(3) + i1(1) + "\x86",
                          std::string requires_grad = "\x89") {
  return "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") + "ctorch\n" + std::string(storage_type) +
         "\n" + str("0") + str("cpu") + i1(numel) + "tQ" + i1(offset) + sizes + strides + requires_grad +
         "ccollections\nOrderedDict\n)RtR.";
}

// Writes an archive with `pickle` as data.pkl and a 24-byte data/0, and returns read_torch_save's message.
std::string error_of_pickle(const scratch_dir& dir, const std::string& pickle, std::string storage = std::string(24, '\1')) {
  auto path = dir.file("bad.pt");
  write_archive(path, {{"data.pkl", pickle}, {"data/0", storage}});
  try {
    graft::read_torch_save(path);
  } catch (const graft::format_error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string error_of(const std::string& path, bool mmap = true) {
  try {
    graft::read_torch_save(path, {.mmap = mmap});
  } catch (const graft::format_error& e) {
    return e.what();
  }
  return "(no error)";
}

// "[graft.format] '<path>': <what> (byte <at> of bad/data.pkl)"
std::string pickle_message(const scratch_dir& dir, std::string_view what, std::size_t at) {
  return fmt::format("[graft.format] '{}': {} (byte {} of bad/data.pkl)", dir.file("bad.pt"), what, at);
}

std::string good_file(const scratch_dir& dir) {
  auto path = dir.file("good.pt");
  run_python("import torch\ntorch.save({'w': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2).half()}, '" + path + "')\n");
  return path;
}

} // namespace

TEST_CASE("torch.save errors: not a zip, truncated, TorchScript", "[torch_save][errors]") {
  scratch_dir dir;
  auto good = good_file(dir);
  auto bytes = file_bytes(good);
  auto bad = dir.file("bad.pt");

  spit(bad, "");
  CHECK(error_of(bad) == fmt::format("[graft.format] '{}': too short to be a zip archive", bad));
  spit(bad, "hello, this is not a checkpoint at all");
  CHECK(error_of(bad) == fmt::format("[graft.format] '{}': not a zip archive (no 'PK\\x03\\x04' magic at the start)", bad));
  spit(bad, bytes.substr(0, bytes.size() / 2));
  CHECK(error_of(bad) == fmt::format("[graft.format] '{}': no end-of-central-directory record (truncated file?)", bad));
  CHECK_FALSE(graft::is_torch_save_file(*graft::mapped_file::open(bad)));
  CHECK(graft::is_torch_save_file(*graft::mapped_file::open(good)));

  // Every truncation fails cleanly.
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    spit(bad, bytes.substr(0, n));
    INFO("truncated to " << n << " bytes");
    CHECK_THROWS_AS(graft::read_torch_save(bad), graft::format_error);
  }

  CHECK_THROWS_WITH(graft::read_torch_save(dir.file("absent.pt")),
                    "[graft.io] cannot open '" + dir.file("absent.pt") + "': No such file or directory");

  auto script = dir.file("script.pt");
  run_python("import torch\ntorch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), '" + script + "')\n");
  CHECK(error_of(script) == fmt::format("[graft.format] '{}': a TorchScript archive (it has constants.pkl), not a torch.save file", script));
  CHECK_FALSE(graft::is_torch_save_file(*graft::mapped_file::open(script)));
}

TEST_CASE("torch.save errors: missing and out-of-bounds records", "[torch_save][errors]") {
  scratch_dir dir;
  auto bad = dir.file("bad.pt");
  write_archive(bad, {{"weights.bin", "abc"}});
  CHECK(error_of(bad) == fmt::format("[graft.format] '{}': no '<archive>/data.pkl' record: not a torch.save file", bad));

  write_archive(bad, {{"data.pkl", tensor_pickle()}});
  CHECK(error_of(bad) ==
        fmt::format("[graft.format] '{}': storage record 'bad/data/0' is missing (named at byte 86 of bad/data.pkl)", bad));

  // A storage of 6 floats needs 24 bytes.
  CHECK(error_of_pickle(dir, tensor_pickle(), std::string(20, '\0')) ==
        fmt::format("[graft.format] '{}': storage record 'bad/data/0' holds 20 bytes, fewer than its 6 elements of Float "
                    "need (named at byte 86 of bad/data.pkl)",
                    bad));

  // The central directory says data/0 is larger than the file.
  write_archive(bad, {{"data.pkl", tensor_pickle()}, {"data/0", std::string(24, '\0')}});
  auto bytes = file_bytes(bad);
  auto name_at = bytes.rfind("bad/data/0");
  bytes.replace(name_at - 46 + 20, 8, le32(1u << 30) + le32(1u << 30));
  spit(bad, bytes);
  CHECK(error_of(bad) == fmt::format("[graft.format] '{}': record 'bad/data/0' claims 1073741824 compressed bytes, more "
                                     "than the whole file ({} bytes)",
                                     bad, bytes.size()));

  // A stored record whose size disagrees with its compressed size, which lies inside the file:
  // the size must not size a view or a buffer (a view of it read past the end of the map).
  bytes.replace(name_at - 46 + 20, 8, le32(24) + le32(1u << 20));
  spit(bad, bytes);
  for (bool mmap : {true, false})
    CHECK(error_of(bad, mmap) == fmt::format("[graft.format] '{}': stored record 'bad/data/0' has compressed size 24 but "
                                             "size 1048576",
                                             bad));

  // A compressed record that claims more than deflate can expand its bytes to.
  bytes.replace(name_at - 46 + 10, 2, std::string("\x08\x00", 2));
  spit(bad, bytes);
  CHECK(error_of(bad) ==
        fmt::format("[graft.format] '{}': deflated record 'bad/data/0' claims 1048576 bytes from 24 compressed bytes", bad));
  bytes.replace(name_at - 46 + 10, 2, std::string(2, '\0'));

  // A local header offset that points nowhere.
  bytes = file_bytes(bad);
  bytes.replace(name_at - 46 + 20, 8, le32(24) + le32(24));
  bytes.replace(name_at - 46 + 42, 4, le32(7));
  spit(bad, bytes);
  CHECK(error_of(bad) == fmt::format("[graft.format] '{}': record 'bad/data/0' has no local header at offset 7", bad));

  // The central directory claims more than it holds.
  write_archive(bad, {{"data.pkl", tensor_pickle()}, {"data/0", std::string(24, '\0')}});
  bytes = file_bytes(bad);
  auto eocd = bytes.rfind(std::string("PK\x05\x06", 4));
  bytes.replace(eocd + 16, 4, le32(0x7fffffff));
  spit(bad, bytes);
  CHECK_THAT(error_of(bad), Catch::Matchers::Contains("central directory (") &&
                                Catch::Matchers::Contains("lies past the end of the file"));
}

TEST_CASE("torch.save errors: compressed records inflate, or fail by name", "[torch_save][errors]") {
  scratch_dir dir;
  auto good = good_file(dir);
  auto deflated = dir.file("deflated.pt");
  auto expected = run_python(graft::test::py_summary + R"PY(
import zipfile
src = zipfile.ZipFile(')PY" + good + R"PY(')
with zipfile.ZipFile(')PY" + deflated + R"PY(', 'w', zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist(): dst.writestr(info.filename, src.read(info.filename))
with zipfile.ZipFile(')PY" + dir.file("bzip2.pt") + R"PY(', 'w', zipfile.ZIP_BZIP2) as dst:
    for info in src.infolist(): dst.writestr(info.filename, src.read(info.filename))
sys.stdout.write(summary(torch.load(')PY" + deflated + "')))\n");
  CHECK(graft::test::summary(graft::read_torch_save(deflated)) == expected);
  // The first record graft reads: data.pkl, or byteorder where PyTorch (2.x) wrote one.
  CHECK_THAT(error_of(dir.file("bzip2.pt")),
             Catch::Matchers::Matches(fmt::format("\\[graft\\.format\\] '{}': record 'good/(data\\.pkl|byteorder)' uses zip "
                                                  "compression method 12; only stored \\(0\\) and deflate \\(8\\) are supported",
                                                  dir.file("bzip2.pt"))));
  // Corrupt the deflate stream of the pickle.
  auto bytes = file_bytes(deflated);
  auto at = bytes.find("good/data.pkl") + 13;
  for (std::size_t k = 0; k < 40; ++k) bytes[at + k] = static_cast<char>(0xff);
  spit(deflated, bytes);
  CHECK(error_of(deflated) ==
        fmt::format("[graft.format] '{}': record 'good/data.pkl' does not inflate to its {} bytes (corrupt deflate data)",
                    deflated, graft::detail::zip_archive(*graft::mapped_file::open(good)).find("good/data.pkl")->size));
}

TEST_CASE("torch.save errors: tensors that reach outside their storage", "[torch_save][errors]") {
  scratch_dir dir;
  // Offset 1 with a 2x3 contiguous view of 6 elements reaches element 6.
  CHECK(error_of_pickle(dir, tensor_pickle("FloatStorage", 6, 1)) ==
        pickle_message(dir, "tensor of size [2, 3], stride [3, 1] at offset 1 reaches past its storage '0' of 6 elements", 128));
  CHECK(error_of_pickle(dir, tensor_pickle("FloatStorage", 6, 0, i1(2) + i1(3) + "\x86", i1(4) + i1(1) + "\x86")) ==
        pickle_message(dir, "tensor of size [2, 3], stride [4, 1] at offset 0 reaches past its storage '0' of 6 elements", 128));
  // Strides whose products overflow 64 bits.
  auto huge = std::string("\x8a\x08") + std::string("\xff\xff\xff\xff\xff\xff\xff\x3f", 8);
  CHECK_THAT(error_of_pickle(dir, tensor_pickle("FloatStorage", 6, 0, i1(200) + i1(3) + "\x86", huge + i1(1) + "\x86")),
             Catch::Matchers::Contains("reaches past its storage '0' of 6 elements"));
  CHECK(error_of_pickle(dir, tensor_pickle("FloatStorage", 6, 0, i1(2) + "\x85", i1(3) + i1(1) + "\x86")) ==
        pickle_message(dir, "tensor size 2 and stride 3,1 differ in length", 126));
  CHECK(error_of_pickle(dir, tensor_pickle("LongStorage", 6, 0, i1(2) + i1(3) + "\x86", i1(3) + i1(1) + "\x86", "\x88")) ==
        fmt::format("[graft.format] '{}': storage record 'bad/data/0' holds 24 bytes, fewer than its 6 elements of Long "
                    "need (named at byte 85 of bad/data.pkl)",
                    dir.file("bad.pt")));
  CHECK(error_of_pickle(dir, tensor_pickle("IntStorage", 6, 0, i1(2) + i1(3) + "\x86", i1(3) + i1(1) + "\x86", "\x88")) ==
        pickle_message(dir, "only floating-point and complex tensors can require grad, not Int", 126));
  // A storage type that torch.save never writes is just another foreign global.
  CHECK(error_of_pickle(dir, tensor_pickle("QInt8Storage")) ==
        pickle_message(dir, "global 'torch.QInt8Storage' is not allowed; graft rebuilds only tensors, storages and plain "
                            "containers and never runs code from a file", 49));
  // An empty view may sit at the end of its storage, not beyond it.
  CHECK(error_of_pickle(dir, tensor_pickle("FloatStorage", 6, 6, i1(0) + "\x85", i1(1) + "\x85")) == "(no error)");
  CHECK(error_of_pickle(dir, tensor_pickle("FloatStorage", 6, 7, i1(0) + "\x85", i1(1) + "\x85")) ==
        pickle_message(dir, "tensor of size [0], stride [1] at offset 7 reaches past its storage '0' of 6 elements", 124));
}

TEST_CASE("torch.save errors: malformed pickles", "[torch_save][errors]") {
  scratch_dir dir;
  auto p = [&](std::string pickle) { return error_of_pickle(dir, "\x80\x02" + pickle); };
  CHECK(p("\xff") == pickle_message(dir, "unknown pickle opcode 0xff", 2));
  CHECK(p("s.") == pickle_message(dir, "stack underflow at opcode 's'", 2));
  CHECK(p("(u.") == pickle_message(dir, "stack underflow: SETITEMS has no dict below its MARK", 3));
  CHECK(p("N(Nu.") == pickle_message(dir, "SETITEMS with an odd number of items", 5));
  CHECK(p("NNa.") == pickle_message(dir, "APPEND on a None, not a list", 4));
  CHECK(p("t.") == pickle_message(dir, "TUPLE without a MARK", 2));
  CHECK(p("h\x05.") == pickle_message(dir, "memo entry 5 is read before it is stored", 2));
  CHECK(p("Nr\xff\xff\xff\xff.") == pickle_message(dir, "memo index 4294967295 is larger than the pickle", 3));
  CHECK(p("X\xff\xff\xff\xff") == pickle_message(dir, "BINUNICODE claims 4294967295 bytes but only 0 remain in the pickle", 2));
  CHECK(p(std::string("\x8d\x00\x00\x00\x80\x02\x00\x00\x00", 9)) ==
        pickle_message(dir, "BINUNICODE8 claims 10737418240 bytes but only 0 remain in the pickle", 2));
  CHECK(p("\x8b\x00\x00\x00\x40"s) == pickle_message(dir, "LONG4 claims 1073741824 bytes but only 0 remain in the pickle", 2));
  CHECK(p(std::string("\x8a\x09", 2) + std::string(9, '\1') + ".") ==
        pickle_message(dir, "LONG1 integer of 9 bytes does not fit in 64 bits", 2));
  CHECK(p("J\x01\x02") == pickle_message(dir, "the pickle is truncated inside BININT", 2));
  CHECK(p("N") == pickle_message(dir, "the pickle ends without a STOP opcode (truncated?)", 3));
  CHECK(p("cposix\nsys") == pickle_message(dir, "the pickle is truncated inside GLOBAL (no end of line)", 2));
  CHECK(p("Ifoo\n.") == pickle_message(dir, "bad INT text 'foo' (or out of 64-bit range)", 2));
  CHECK(p("NN\x81.") == pickle_message(dir, "NEWOBJ calls a None, which is not callable", 4));
  CHECK(p("ccollections\nOrderedDict\nNR.") == pickle_message(dir, "REDUCE arguments must be a tuple, not None", 28));
  CHECK(p("ctorch._utils\n_rebuild_tensor_v2\n)R.") ==
        pickle_message(dir, "torch._utils._rebuild_tensor_v2 takes 6 to 7 arguments, not 0", 36));
  CHECK(p("(X\x07\x00\x00\x00storageNNNNtQ."s) ==
        pickle_message(dir, "persistent id does not name a torch storage type", 20));
  CHECK(p("NQ.") == pickle_message(dir, "persistent id is not a ('storage', type, key, location, numel[, view]) tuple", 3));
  CHECK(p("]N\x85" "b.") == pickle_message(dir, "BUILD (setting object state) on a list is not supported", 5));
  CHECK(p("i__main__\nX\n.") == pickle_message(dir, "unsupported pickle opcode INST (it constructs an arbitrary class)", 2));
  // Nesting and self-reference cannot exhaust the C++ stack.
  CHECK(p(std::string(5000, ']') + std::string(4999, 'a') + ".") ==
        pickle_message(dir, "objects nest deeper than 1000 levels (or contain themselves)", 10001));
  CHECK(p("]q\x00" "h\x00" "a."s) == pickle_message(dir, "objects nest deeper than 1000 levels (or contain themselves)", 8));
  // A big-endian file is refused, not misread.
  auto bad = dir.file("bad.pt");
  write_archive(bad, {{"data.pkl", tensor_pickle()}, {"data/0", std::string(24, '\0')}, {"byteorder", "big"}});
  CHECK(error_of(bad) == fmt::format("[graft.format] '{}': record 'bad/byteorder' says 'big'; graft reads little-endian files only", bad));
}

TEST_CASE("torch.save errors: foreign globals are refused and never run", "[torch_save][errors]") {
  scratch_dir dir;
  auto marker = dir.file("pwned");
  auto evil = dir.file("evil.pt");
  auto ns = dir.file("namespace.pt");
  auto at = run_python(R"PY(
import torch, os, argparse, collections, pickletools, zipfile
class Evil:
    def __reduce__(self): return (os.system, ('touch )PY" + marker + R"PY(',))
torch.save(collections.OrderedDict(w=torch.ones(2), evil=Evil()), ')PY" + evil + R"PY(')
torch.save({'model': {'w': torch.ones(2)}, 'args': argparse.Namespace(lr=0.1)}, ')PY" + ns + R"PY(')
data = zipfile.ZipFile(')PY" + evil + R"PY(').read('evil/data.pkl')
print([pos for op, arg, pos in pickletools.genops(data) if op.name == 'GLOBAL' and arg.startswith('posix')][0], end='')
)PY");
  REQUIRE_FALSE(std::filesystem::exists(marker));
  CHECK(error_of(evil) == fmt::format("[graft.format] '{}': global 'posix.system' is not allowed; graft rebuilds only "
                                      "tensors, storages and plain containers and never runs code from a file (byte {} "
                                      "of evil/data.pkl)",
                                      evil, at));
  CHECK_FALSE(std::filesystem::exists(marker));
  CHECK_THAT(error_of(ns), Catch::Matchers::Contains("global 'argparse.Namespace' is not allowed"));
  scratch_dir d2;
  CHECK(error_of_pickle(d2, "\x80\x02" "cbuiltins\neval\n(X\x04\x00\x00\x00" "1+1tR."s) ==
        pickle_message(d2, "global 'builtins.eval' is not allowed; graft rebuilds only tensors, storages and plain "
                           "containers and never runs code from a file", 2));
  CHECK_THAT(error_of_pickle(d2, "\x80\x02" "cnumpy.core.multiarray\n_reconstruct\n."),
             Catch::Matchers::Contains("global 'numpy.core.multiarray._reconstruct' is not allowed"));
}

TEST_CASE("torch.save errors: every single-byte corruption is a format_error or a clean read", "[torch_save][errors]") {
  scratch_dir dir;
  auto bytes = file_bytes(good_file(dir));
  auto bad = dir.file("bad.pt");
  std::size_t failures = 0;
  for (std::size_t k = 0; k < bytes.size(); ++k) {
    for (unsigned char flip : {0xffu, 0x01u, 0x80u}) {
      auto corrupt = bytes;
      corrupt[k] = static_cast<char>(corrupt[k] ^ flip);
      spit(bad, corrupt);
      try {
        auto v = graft::read_torch_save(bad);
        (void)graft::test::summary(v);
      } catch (const graft::format_error&) {
        ++failures;
      } catch (const std::exception& e) {
        FAIL("byte " << k << " ^ " << int(flip) << ": " << e.what());
      }
    }
  }
  CHECK(failures > 0);
}
