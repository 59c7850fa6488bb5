#pragma once
// Fashion-MNIST for the tutorials: 70,000 grey 28x28 images of 10 kinds of clothing, read from
// the gzipped IDX files of Debian's dataset-fashion-mnist package
// (/usr/share/datasets/fashion-mnist). Uncompressed copies of the files work as well.
//
//   auto data = fashion_mnist::load();               // or load("/path/to/dir")
//   data.train.images   // uint8 [60000, 28, 28]
//   data.train.labels   // int64 [60000], values 0..9 (fashion_mnist::class_names)
//   auto x = fashion_mnist::normalize(data.test.images);   // float [10000, 1, 28, 28]
//
// Every error is a fashion_mnist::data_error naming the file and what is wrong with it.

#include <array>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>
#include <zlib.h>

namespace fashion_mnist {

/// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr std::string_view default_dir = "/usr/share/datasets/fashion-mnist";

/// The label of each class, by class index.
inline constexpr std::array<std::string_view, 10> class_names = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/// The dataset is missing or one of its files is not what it should be.
struct data_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Images (uint8 [N, 28, 28]) and their labels (int64 [N]).
struct split {
  torch::Tensor images;
  torch::Tensor labels;
  std::int64_t size() const { return labels.size(0); }
};

/// The 60,000 training and 10,000 test images.
struct dataset {
  split train, test;
};

namespace detail {

// One IDX file, decompressed while it is read. IDX numbers are big-endian.
class idx_reader {
public:
  explicit idx_reader(std::filesystem::path path) : path_(std::move(path)) {
    file_ = gzopen(path_.c_str(), "rb");
    if (!file_) throw data_error(fmt::format("{}: cannot open the file", path_.string()));
  }
  ~idx_reader() { gzclose(file_); }
  idx_reader(const idx_reader&) = delete;
  idx_reader& operator=(const idx_reader&) = delete;

  std::uint32_t read_u32(std::string_view what) {
    unsigned char b[4];
    read(b, 4, what);
    return std::uint32_t(b[0]) << 24 | std::uint32_t(b[1]) << 16 | std::uint32_t(b[2]) << 8 | b[3];
  }

  void read(void* out, std::size_t n, std::string_view what) {
    auto* p = static_cast<unsigned char*>(out);
    std::size_t done = 0;
    while (done < n) {
      // gzread takes an unsigned int: read big arrays in chunks.
      unsigned chunk = unsigned(std::min<std::size_t>(n - done, 1u << 30));
      int got = gzread(file_, p + done, chunk);
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        throw data_error(fmt::format("{}: cannot decompress the {} ({})", path_.string(), what, msg));
      }
      if (got == 0)
        throw data_error(fmt::format("{}: the file ends inside the {}, after {} of its {} bytes: it is truncated",
                                     path_.string(), what, done, n));
      done += std::size_t(got);
    }
  }

  // Nothing may follow the data: extra bytes mean the header does not describe the file.
  void expect_end() {
    unsigned char b;
    if (gzread(file_, &b, 1) != 0)
      throw data_error(fmt::format("{}: unexpected bytes after the data the header describes", path_.string()));
  }

  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
  gzFile file_;
};

// `name` in `dir`, gzipped or not.
inline std::filesystem::path find_file(const std::filesystem::path& dir, const std::string& name) {
  auto gz = dir / (name + ".gz");
  if (std::filesystem::exists(gz)) return gz;
  if (auto raw = dir / name; std::filesystem::exists(raw)) return raw;
  throw data_error(fmt::format(
      "Fashion-MNIST not found: {} does not exist. Install it with `apt install dataset-fashion-mnist` "
      "(Debian's package puts it in {}), or point to a directory holding the IDX files.",
      gz.string(), default_dir));
}

// Magic numbers: 0x00000803 = unsigned bytes in 3 dimensions, 0x00000801 = in 1 dimension.
inline torch::Tensor read_images(const std::filesystem::path& path) {
  idx_reader in(path);
  if (auto magic = in.read_u32("header"); magic != 0x00000803)
    throw data_error(fmt::format("{}: not an IDX image file: magic number 0x{:08x}, expected 0x00000803", path.string(), magic));
  auto n = in.read_u32("header"), rows = in.read_u32("header"), cols = in.read_u32("header");
  if (rows != 28 || cols != 28)
    throw data_error(fmt::format("{}: images are {}x{}, expected 28x28", path.string(), rows, cols));
  auto images = torch::empty({std::int64_t(n), 28, 28}, torch::kUInt8);
  in.read(images.data_ptr<std::uint8_t>(), std::size_t(images.numel()), fmt::format("{} images", n));
  in.expect_end();
  return images;
}

inline torch::Tensor read_labels(const std::filesystem::path& path) {
  idx_reader in(path);
  if (auto magic = in.read_u32("header"); magic != 0x00000801)
    throw data_error(fmt::format("{}: not an IDX label file: magic number 0x{:08x}, expected 0x00000801", path.string(), magic));
  auto n = in.read_u32("header");
  std::vector<std::uint8_t> bytes(n);
  in.read(bytes.data(), n, fmt::format("{} labels", n));
  in.expect_end();
  for (std::size_t i = 0; i < bytes.size(); ++i)
    if (bytes[i] > 9)
      throw data_error(fmt::format("{}: label {} is {}, expected 0..9", path.string(), i, bytes[i]));
  return torch::from_blob(bytes.data(), {std::int64_t(n)}, torch::kUInt8).to(torch::kLong);
}

inline split read_split(const std::filesystem::path& dir, const std::string& prefix, std::int64_t expected) {
  auto image_file = find_file(dir, prefix + "-images-idx3-ubyte");
  auto label_file = find_file(dir, prefix + "-labels-idx1-ubyte");
  split s{read_images(image_file), read_labels(label_file)};
  if (s.images.size(0) != s.labels.size(0))
    throw data_error(fmt::format("{} holds {} images but {} holds {} labels", image_file.string(), s.images.size(0),
                                 label_file.string(), s.labels.size(0)));
  if (s.size() != expected)
    throw data_error(fmt::format("{} holds {} images, expected Fashion-MNIST's {}", image_file.string(), s.size(), expected));
  return s;
}

} // namespace detail

/// Reads the four files of Fashion-MNIST from `dir`.
inline dataset load(const std::filesystem::path& dir = std::filesystem::path(default_dir)) {
  return {detail::read_split(dir, "train", 60000), detail::read_split(dir, "t10k", 10000)};
}

/// uint8 images [N, 28, 28] to float [N, 1, 28, 28], scaled to [0, 1] and then standardized with
/// the training set's mean and standard deviation.
inline torch::Tensor normalize(const torch::Tensor& images) {
  constexpr double mean = 0.2860, std = 0.3530;
  return (images.to(torch::kFloat).div(255.0).sub(mean).div(std)).unsqueeze(1);
}

/// The examples whose label is in [first, last].
inline split classes(const split& s, std::int64_t first, std::int64_t last) {
  auto keep = ((s.labels >= first) & (s.labels <= last)).nonzero().squeeze(1);
  return {s.images.index_select(0, keep), s.labels.index_select(0, keep)};
}

/// `per_class` examples of every class, picked at random (with the global torch generator), in
/// random order.
inline split few_shot(const split& s, std::int64_t per_class) {
  std::vector<torch::Tensor> picked;
  for (std::int64_t c = 0; c < 10; ++c) {
    auto of_c = (s.labels == c).nonzero().squeeze(1);
    if (of_c.size(0) < per_class)
      throw data_error(fmt::format("class {} has {} examples, fewer than the {} asked for", c, of_c.size(0), per_class));
    picked.push_back(of_c.index_select(0, torch::randperm(of_c.size(0)).slice(0, 0, per_class)));
  }
  auto idx = torch::cat(picked);
  idx = idx.index_select(0, torch::randperm(idx.size(0)));
  return {s.images.index_select(0, idx), s.labels.index_select(0, idx)};
}

} // namespace fashion_mnist
