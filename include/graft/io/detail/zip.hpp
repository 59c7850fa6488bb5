#pragma once
// A zip central-directory reader over a mapped file: records are found by name, stored records
// are read in place (zero-copy), deflated ones are inflated with zlib. Only what torch.save
// archives need: no encryption, no multi-disk archives; zip64 sizes and offsets are understood.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <zlib.h>

#include <graft/error.hpp>
#include <graft/io/mapped_file.hpp>

namespace graft::detail {

/// One entry of a zip's central directory.
struct zip_record {
  std::string_view name;             ///< the record's name, viewing the mapped file
  std::uint64_t header_offset = 0;   ///< where its local header starts
  std::uint64_t compressed_size = 0; ///< bytes in the file
  std::uint64_t size = 0;            ///< bytes once inflated
  std::uint32_t crc32 = 0;
  std::uint16_t method = 0;          ///< 0 stored, 8 deflate
  std::uint16_t flags = 0;
};

/// Little-endian reads from a byte range whose bounds the caller has checked.
inline std::uint16_t le16(const unsigned char* p) noexcept { return std::uint16_t(p[0] | (p[1] << 8)); }
inline std::uint32_t le32(const unsigned char* p) noexcept {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}
inline std::uint64_t le64(const unsigned char* p) noexcept { return le32(p) | std::uint64_t(le32(p + 4)) << 32; }

/// The records of a zip archive held in a mapped file. Throws format_error naming the file.
class zip_archive {
public:
  explicit zip_archive(const mapped_file& file) : file_(&file) {
    const auto* base = reinterpret_cast<const unsigned char*>(file.data());
    const std::uint64_t size = file.size();
    if (size < 4 || le32(base) != 0x04034b50u)
      fail(size < 4 ? "too short to be a zip archive" : "not a zip archive (no 'PK\\x03\\x04' magic at the start)");
    // The end-of-central-directory record sits in the last 22 + 65535 (comment) bytes.
    std::uint64_t eocd = 0;
    bool found = false;
    if (size >= 22) {
      std::uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
      for (std::uint64_t p = size - 22 + 1; p-- > lowest;)
        if (le32(base + p) == 0x06054b50u) { eocd = p; found = true; break; }
    }
    if (!found) fail("no end-of-central-directory record (truncated file?)");
    const unsigned char* e = base + eocd;
    if (le16(e + 4) != 0 || le16(e + 6) != 0) fail("multi-disk zip archives are not supported");
    std::uint64_t count = le16(e + 10), cd_size = le32(e + 12), cd_offset = le32(e + 16);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
      // zip64: a locator right before the EOCD points at the zip64 EOCD record.
      if (eocd < 20 || le32(base + eocd - 20) != 0x07064b50u) fail("zip64 archive without its end-of-central-directory locator");
      std::uint64_t z = le64(base + eocd - 20 + 8);
      if (z > size || size - z < 56 || le32(base + z) != 0x06064b50u) fail("bad zip64 end-of-central-directory record");
      count = le64(base + z + 32);
      cd_size = le64(base + z + 40);
      cd_offset = le64(base + z + 48);
    }
    if (cd_offset > size || cd_size > size - cd_offset)
      fail(fmt::format("central directory ({} bytes at offset {}) lies past the end of the file ({} bytes)", cd_size, cd_offset, size));
    if (count > cd_size / 46) fail(fmt::format("central directory claims {} records in {} bytes", count, cd_size));
    records_.reserve(count);
    index_.reserve(count);
    const unsigned char* p = base + cd_offset;
    const unsigned char* end = p + cd_size;
    for (std::uint64_t i = 0; i < count; ++i) {
      if (end - p < 46 || le32(p) != 0x02014b50u) fail(fmt::format("central directory entry {} is malformed", i));
      zip_record r;
      r.flags = le16(p + 8);
      r.method = le16(p + 10);
      r.crc32 = le32(p + 16);
      r.compressed_size = le32(p + 20);
      r.size = le32(p + 24);
      std::size_t name_len = le16(p + 28), extra_len = le16(p + 30), comment_len = le16(p + 32);
      r.header_offset = le32(p + 42);
      if (std::size_t(end - p - 46) < name_len + extra_len + comment_len)
        fail(fmt::format("central directory entry {} runs past the directory", i));
      r.name = std::string_view(reinterpret_cast<const char*>(p + 46), name_len);
      read_zip64_extra(r, p + 46 + name_len, extra_len);
      check_sizes(r, size);
      p += 46 + name_len + extra_len + comment_len;
      index_.emplace(r.name, records_.size());
      records_.push_back(r);
    }
  }

  /// The record named `name`, or nullptr.
  const zip_record* find(std::string_view name) const noexcept {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &records_[it->second];
  }
  /// Every record, in central-directory order.
  std::span<const zip_record> records() const noexcept { return records_; }

  /// Where the record's data starts in the file, after checking its local header and that
  /// the data lies inside the file.
  std::uint64_t data_offset(const zip_record& r) const {
    const std::uint64_t size = file_->size();
    if (r.header_offset > size || size - r.header_offset < 30 ||
        le32(reinterpret_cast<const unsigned char*>(file_->data()) + r.header_offset) != 0x04034b50u)
      fail(fmt::format("record '{}' has no local header at offset {}", r.name, r.header_offset));
    const auto* h = reinterpret_cast<const unsigned char*>(file_->data()) + r.header_offset;
    std::uint64_t start = r.header_offset + 30 + le16(h + 26) + le16(h + 28);
    if (start > size || r.compressed_size > size - start)
      fail(fmt::format("record '{}' ({} bytes at offset {}) runs past the end of the file ({} bytes)", r.name,
                       r.compressed_size, start, size));
    return start;
  }

  /// The bytes of a stored (uncompressed) record, viewing the map.
  std::string_view stored_bytes(const zip_record& r) const {
    check_readable(r);
    if (r.method != 0) fail(fmt::format("record '{}' is compressed; a view needs a stored record", r.name));
    return file_->bytes(data_offset(r), r.size);
  }

  /// Writes the record's `r.size` bytes into `out`, inflating a deflated record.
  void read_into(const zip_record& r, void* out) const {
    check_readable(r);
    std::uint64_t start = data_offset(r);
    if (r.method == 0) {
      if (r.size) std::memcpy(out, file_->data() + start, r.size);
      return;
    }
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail(fmt::format("cannot start zlib to inflate record '{}'", r.name));
    z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(file_->data() + start));
    z.next_out = static_cast<Bytef*>(out);
    std::uint64_t in_left = r.compressed_size, out_left = r.size;
    int rc = Z_OK;
    do {
      // zlib counts in uInt: feed and drain at most 1 GiB at a time.
      if (z.avail_in == 0 && in_left) { z.avail_in = uInt(std::min<std::uint64_t>(in_left, 1u << 30)); in_left -= z.avail_in; }
      if (z.avail_out == 0 && out_left) { z.avail_out = uInt(std::min<std::uint64_t>(out_left, 1u << 30)); out_left -= z.avail_out; }
      rc = inflate(&z, Z_NO_FLUSH);
    } while (rc == Z_OK);
    std::uint64_t produced = z.total_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END || produced != r.size)
      fail(fmt::format("record '{}' does not inflate to its {} bytes (corrupt deflate data)", r.name, r.size));
    if (crc(out, r.size) != r.crc32)
      fail(fmt::format("record '{}' fails its CRC-32 check after inflating", r.name));
  }

  /// The record's bytes: a view of the map for a stored record, else inflated into `buffer`
  /// (which the view then points into).
  std::string_view bytes(const zip_record& r, std::string& buffer) const {
    if (r.method == 0) return stored_bytes(r);
    buffer = read(r);
    return buffer;
  }

  /// The record's bytes as a string (for small records such as data.pkl or version).
  std::string read(const zip_record& r) const {
    check_readable(r);
    std::string s(r.size, '\0');
    read_into(r, s.data());
    return s;
  }

  const mapped_file& file() const noexcept { return *file_; }

  [[noreturn]] void fail(std::string_view what) const {
    throw format_error(what, {.file = file_->path()});
  }

private:
  static std::uint32_t crc(const void* data, std::uint64_t n) {
    uLong c = ::crc32(0L, Z_NULL, 0);
    const auto* p = static_cast<const Bytef*>(data);
    while (n) {
      uInt chunk = uInt(std::min<std::uint64_t>(n, 1u << 30));
      c = ::crc32(c, p, chunk);
      p += chunk;
      n -= chunk;
    }
    return std::uint32_t(c);
  }

  // A zip64 extra field (id 1) holds, in this order, whichever of size, compressed size and
  // header offset were saturated in the 32-bit fields.
  void read_zip64_extra(zip_record& r, const unsigned char* x, std::size_t n) const {
    bool need_size = r.size == 0xFFFFFFFFu, need_csize = r.compressed_size == 0xFFFFFFFFu,
         need_offset = r.header_offset == 0xFFFFFFFFu;
    if (!need_size && !need_csize && !need_offset) return;
    while (n >= 4) {
      std::size_t id = le16(x), len = le16(x + 2);
      if (len > n - 4) break;
      if (id == 1) {
        const unsigned char* q = x + 4;
        std::size_t left = len;
        auto take = [&](std::uint64_t& field) {
          if (left < 8) fail(fmt::format("record '{}' has a short zip64 extra field", r.name));
          field = le64(q);
          q += 8;
          left -= 8;
        };
        if (need_size) take(r.size);
        if (need_csize) take(r.compressed_size);
        if (need_offset) take(r.header_offset);
        return;
      }
      x += 4 + len;
      n -= 4 + len;
    }
    fail(fmt::format("record '{}' needs a zip64 extra field and has none", r.name));
  }

  // Checked for every record as the directory is read, so that callers may size a buffer or a
  // view by r.size before reading: it is then at most ~1032 times the file's size.
  void check_sizes(const zip_record& r, std::uint64_t file_size) const {
    if (r.compressed_size > file_size)
      fail(fmt::format("record '{}' claims {} compressed bytes, more than the whole file ({} bytes)", r.name,
                       r.compressed_size, file_size));
    if (r.method == 0) {
      if (r.compressed_size != r.size)
        fail(fmt::format("stored record '{}' has compressed size {} but size {}", r.name, r.compressed_size, r.size));
    } else if (r.size / 1032 > r.compressed_size + 1) {
      // Deflate expands at most ~1032:1 (and other methods are refused when read); a larger
      // claim is corrupt and must not drive an allocation.
      fail(fmt::format("{} record '{}' claims {} bytes from {} compressed bytes", r.method == 8 ? "deflated" : "compressed",
                       r.name, r.size, r.compressed_size));
    }
  }

  void check_readable(const zip_record& r) const {
    if (r.flags & 1) fail(fmt::format("record '{}' is encrypted", r.name));
    if (r.method != 0 && r.method != 8)
      fail(fmt::format("record '{}' uses zip compression method {}; only stored (0) and deflate (8) are supported",
                       r.name, r.method));
  }

  const mapped_file* file_;
  std::vector<zip_record> records_;
  std::unordered_map<std::string_view, std::size_t> index_;
};

} // namespace graft::detail
