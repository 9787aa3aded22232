#pragma once
// Readers for the command-line tool: .npy arrays (format versions 1.0, 2.0
// and 3.0) and .npz archives as numpy.savez writes them (entries stored,
// zip64 records where numpy uses them) and as numpy.savez_compressed writes
// them (deflate: needs zlib, FREEPRUNER_TOOL_HAVE_ZLIB).
//
// Nothing read from a file is trusted: every length, offset and shape is
// checked against the bytes that are there before it is used, products are
// checked for overflow, and each entry's CRC-32 is verified. Every failure
// is an npy::error whose message starts with the file's name.

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef FREEPRUNER_TOOL_HAVE_ZLIB
#define FREEPRUNER_TOOL_HAVE_ZLIB 0
#endif
#if FREEPRUNER_TOOL_HAVE_ZLIB
#ifndef ZLIB_CONST
#define ZLIB_CONST  // const next_in
#endif
#include <zlib.h>
#endif

namespace freepruner_tool {
namespace npy {

/// A file that cannot be read as the array it claims to be.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The element types the tool reads.
enum class dtype { float16, float32, float64 };

inline std::size_t item_size(dtype t) { return t == dtype::float16 ? 2 : t == dtype::float32 ? 4 : 8; }
inline const char* dtype_name(dtype t) {
  return t == dtype::float16 ? "float16" : t == dtype::float32 ? "float32" : "float64";
}

/// One array: its elements in host byte order, aligned for the element type,
/// kept alive by `owner` (the bytes as read from the file, so a large map is
/// not copied again).
struct array {
  std::string name;                   // the file, or the archive entry without ".npy"
  dtype type = dtype::float32;
  std::vector<std::int64_t> shape;    // C order
  std::size_t count = 0;              // product of shape
  const unsigned char* data = nullptr;
  std::shared_ptr<const unsigned char> owner;

  template <class T>
  const T* as() const {
    return reinterpret_cast<const T*>(data);
  }
};

/// "(2, 16, 577, 577)", as numpy prints a shape.
inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (k) s += ", ";
    s += std::to_string(shape[k]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

/// Text from a file made safe for a message: bytes outside printable ASCII
/// as \xNN, and at most `limit` of them shown.
inline std::string printable(const std::string& text, std::size_t limit = 64) {
  std::string out;
  for (std::size_t k = 0; k < text.size() && k < limit; ++k) {
    const auto c = static_cast<unsigned char>(text[k]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

/// CRC-32 as zip uses it (zlib's when available, a table otherwise).
inline std::uint32_t crc32(const unsigned char* p, std::size_t n, std::uint32_t crc = 0) {
#if FREEPRUNER_TOOL_HAVE_ZLIB
  uLong c = crc;
  while (n > 0) {  // zlib takes a uInt length
    const std::size_t chunk = std::min<std::size_t>(n, 1u << 30);
    c = ::crc32(c, p, static_cast<uInt>(chunk));
    p += chunk;
    n -= chunk;
  }
  return static_cast<std::uint32_t>(c);
#else
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
#endif
}

namespace detail {

inline std::uint16_t le16(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t le32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t le64(const unsigned char* p) {
  return static_cast<std::uint64_t>(le32(p)) | (static_cast<std::uint64_t>(le32(p + 4)) << 32);
}

inline bool host_is_little_endian() {
  const std::uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// Fresh bytes from new[], which is aligned for every element type read here.
inline std::shared_ptr<unsigned char> allocate(std::size_t n) {
  return std::shared_ptr<unsigned char>(new unsigned char[n == 0 ? 1 : n], std::default_delete<unsigned char[]>());
}

// A Python literal, the subset a .npy header is written in.
struct literal {
  enum class kind { string, boolean, integer, none, tuple, list, dict };
  kind type = kind::none;
  std::string text;                                  // string
  bool flag = false;                                 // boolean
  std::int64_t number = 0;                           // integer
  std::vector<literal> items;                        // tuple, list, dict values
  std::vector<std::string> keys;                     // dict keys
};

class literal_parser {
 public:
  literal_parser(const char* begin, const char* end, const std::string& what) : p_(begin), end_(end), what_(what) {}

  literal parse_all() {
    literal v = parse_value(0);
    skip_space();
    if (p_ != end_) fail("unexpected text after the dictionary");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw error(what_ + ": bad .npy header: " + why); }

  void skip_space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool next_is(char c) {
    skip_space();
    return p_ != end_ && *p_ == c;
  }
  void expect(char c) {
    if (!next_is(c)) fail(std::string("expected '") + c + "'");
    ++p_;
  }
  bool word(const char* w) {
    const std::size_t n = std::strlen(w);
    if (static_cast<std::size_t>(end_ - p_) < n || std::memcmp(p_, w, n) != 0) return false;
    p_ += n;
    return true;
  }

  literal parse_value(int depth) {
    if (depth > 16) fail("nested too deeply");
    skip_space();
    if (p_ == end_) fail("ends early");
    literal v;
    const char c = *p_;
    if (c == '\'' || c == '"') {
      v.type = literal::kind::string;
      v.text = parse_string();
    } else if (c == '(' || c == '[') {
      v.type = c == '(' ? literal::kind::tuple : literal::kind::list;
      const char close = c == '(' ? ')' : ']';
      ++p_;
      while (!next_is(close)) {
        v.items.push_back(parse_value(depth + 1));
        if (next_is(',')) ++p_;
        else if (!next_is(close)) fail(std::string("expected ',' or '") + close + "'");
      }
      ++p_;
    } else if (c == '{') {
      v.type = literal::kind::dict;
      ++p_;
      while (!next_is('}')) {
        skip_space();
        if (p_ == end_ || (*p_ != '\'' && *p_ != '"')) fail("a dictionary key is not a string");
        v.keys.push_back(parse_string());
        expect(':');
        v.items.push_back(parse_value(depth + 1));
        if (next_is(',')) ++p_;
        else if (!next_is('}')) fail("expected ',' or '}'");
      }
      ++p_;
    } else if (word("True")) {
      v.type = literal::kind::boolean;
      v.flag = true;
    } else if (word("False")) {
      v.type = literal::kind::boolean;
    } else if (word("None")) {
      v.type = literal::kind::none;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.type = literal::kind::integer;
      v.number = parse_integer();
    } else {
      fail("unexpected character '" + printable(std::string(1, c)) + "'");
    }
    return v;
  }

  std::string parse_string() {
    const char quote = *p_++;
    std::string s;
    while (p_ != end_ && *p_ != quote) {
      if (*p_ == '\\') {
        if (++p_ == end_) break;
      } else if (*p_ == '\n') {
        fail("a string runs past the end of the line");
      }
      s += *p_++;
    }
    if (p_ == end_) fail("a string is not closed");
    ++p_;
    return s;
  }

  std::int64_t parse_integer() {
    const bool negative = *p_ == '-';
    if (negative) ++p_;
    if (p_ == end_ || *p_ < '0' || *p_ > '9') fail("a '-' is not followed by digits");
    std::uint64_t n = 0;
    const std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
      const auto digit = static_cast<std::uint64_t>(*p_++ - '0');
      if (n > (limit - digit) / 10) fail("an integer is too large");
      n = n * 10 + digit;
    }
    if (p_ != end_ && *p_ == 'L') ++p_;  // Python 2's long suffix, as old numpy wrote shapes
    return negative ? -static_cast<std::int64_t>(n) : static_cast<std::int64_t>(n);
  }

  const char* p_;
  const char* end_;
  const std::string& what_;
};

}  // namespace detail

/// What a .npy header says, checked against the bytes that follow it.
struct header {
  dtype type = dtype::float32;
  bool swap = false;                 // file byte order differs from the host's
  std::vector<std::int64_t> shape;
  std::size_t count = 0;             // elements
  std::size_t data_offset = 0;       // from the start of the .npy bytes
  std::size_t data_bytes = 0;
};

/// Parses and checks the header of the .npy bytes [p, p + size): magic,
/// version, the dictionary (descr, fortran_order, shape and nothing else), and
/// that exactly count * item_size bytes of data follow it.
inline header parse_header(const unsigned char* p, std::size_t size, const std::string& what) {
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(p, magic, 6) != 0)
    throw error(what + ": not a .npy file (it does not start with \"\\x93NUMPY\")");
  const unsigned major = p[6], minor = p[7];
  if (major < 1 || major > 3 || minor != 0)
    throw error(what + ": .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                " is not supported (1.0, 2.0 and 3.0 are)");
  std::size_t start = 10, length = detail::le16(p + 8);
  if (major >= 2) {
    if (size < 12) throw error(what + ": truncated .npy header");
    start = 12;
    length = detail::le32(p + 8);
  }
  if (length > size - start)
    throw error(what + ": truncated: the .npy header needs " + std::to_string(length) + " bytes, " +
                std::to_string(size - start) + " are there");

  const char* text = reinterpret_cast<const char*>(p + start);
  const detail::literal dict = detail::literal_parser(text, text + length, what).parse_all();
  if (dict.type != detail::literal::kind::dict) throw error(what + ": bad .npy header: not a dictionary");
  const detail::literal *descr = nullptr, *fortran = nullptr, *shape = nullptr;
  for (std::size_t k = 0; k < dict.keys.size(); ++k) {
    const detail::literal** slot = dict.keys[k] == "descr"           ? &descr
                                   : dict.keys[k] == "fortran_order" ? &fortran
                                   : dict.keys[k] == "shape"         ? &shape
                                                                     : nullptr;
    if (slot == nullptr) throw error(what + ": bad .npy header: unexpected key '" + printable(dict.keys[k]) + "'");
    if (*slot != nullptr) throw error(what + ": bad .npy header: key '" + printable(dict.keys[k]) + "' given twice");
    *slot = &dict.items[k];
  }
  if (!descr || !fortran || !shape)
    throw error(what + ": bad .npy header: it needs the keys 'descr', 'fortran_order' and 'shape'");

  header h;
  if (descr->type != detail::literal::kind::string)
    throw error(what + ": a structured dtype is not supported (float16, float32 or float64 maps are)");
  const std::string& d = descr->text;
  const char order = d.empty() ? '?' : d[0];
  const std::string kind = d.empty() ? d : d.substr(1);
  if (kind == "f2") h.type = dtype::float16;
  else if (kind == "f4") h.type = dtype::float32;
  else if (kind == "f8") h.type = dtype::float64;
  else
    throw error(what + ": dtype '" + printable(d) + "' is not supported (float16 '<f2', float32 '<f4' or float64 '<f8')");
  if (order != '<' && order != '>')
    throw error(what + ": dtype '" + printable(d) + "' has no byte order ('<' little-endian or '>' big-endian)");
  h.swap = (order == '<') != detail::host_is_little_endian();

  if (fortran->type != detail::literal::kind::boolean)
    throw error(what + ": bad .npy header: 'fortran_order' is not True or False");
  if (fortran->flag)
    throw error(what + ": the array is stored in Fortran (column-major) order; save np.ascontiguousarray(maps) instead");

  if (shape->type != detail::literal::kind::tuple) throw error(what + ": bad .npy header: 'shape' is not a tuple");
  h.count = 1;
  for (const auto& e : shape->items) {
    if (e.type != detail::literal::kind::integer || e.number < 0)
      throw error(what + ": bad .npy header: 'shape' has an entry that is not a non-negative integer");
    h.shape.push_back(e.number);
  }
  const std::size_t max = std::numeric_limits<std::size_t>::max();
  for (std::int64_t e : h.shape) {
    const auto extent = static_cast<std::size_t>(e);
    if (extent != 0 && h.count > max / extent)
      throw error(what + ": shape " + shape_text(h.shape) + " has more elements than memory can address");
    h.count *= extent;
  }
  if (h.count > max / item_size(h.type))
    throw error(what + ": shape " + shape_text(h.shape) + " has more bytes than memory can address");
  h.data_bytes = h.count * item_size(h.type);
  h.data_offset = start + length;
  const std::size_t have = size - h.data_offset;
  if (have < h.data_bytes)
    throw error(what + ": truncated: shape " + shape_text(h.shape) + " of " + dtype_name(h.type) + " needs " +
                std::to_string(h.data_bytes) + " bytes of data, " + std::to_string(have) + " are there");
  if (have > h.data_bytes)
    throw error(what + ": " + std::to_string(have - h.data_bytes) + " unexpected bytes after the data of shape " +
                shape_text(h.shape));
  return h;
}

/// An array from .npy bytes inside `owner`. The data stays where it is when
/// it is in host byte order and aligned; otherwise it is copied (and swapped).
inline array from_npy_bytes(const std::shared_ptr<const unsigned char>& owner, const unsigned char* p,
                            std::size_t size, const std::string& what, std::string name) {
  const header h = parse_header(p, size, what);
  array a;
  a.name = std::move(name);
  a.type = h.type;
  a.shape = h.shape;
  a.count = h.count;
  const unsigned char* src = p + h.data_offset;
  const std::size_t w = item_size(h.type);
  if (!h.swap && reinterpret_cast<std::uintptr_t>(src) % w == 0) {
    a.data = src;
    a.owner = owner;
    return a;
  }
  auto copy = detail::allocate(h.data_bytes);
  if (h.swap)
    for (std::size_t i = 0; i < h.count; ++i)
      for (std::size_t b = 0; b < w; ++b) copy.get()[i * w + b] = src[i * w + (w - 1 - b)];
  else if (h.data_bytes > 0)
    std::memcpy(copy.get(), src, h.data_bytes);
  a.data = copy.get();
  a.owner = std::move(copy);
  return a;
}

/// An open file read at given offsets; every read is checked against its size.
class file_reader {
 public:
  explicit file_reader(const std::string& path) : path_(path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto st = fs::status(path, ec);
    if (ec || !fs::exists(st)) throw error(path + ": cannot open: no such file");
    if (fs::is_directory(st)) throw error(path + ": cannot read: it is a directory");
    in_.open(path, std::ios::binary);
    if (!in_) throw error(path + ": cannot open: " + std::strerror(errno));
    in_.seekg(0, std::ios::end);
    const std::streamoff end = in_.tellg();
    if (end < 0) throw error(path + ": cannot read: its size is unknown");
    size_ = static_cast<std::uint64_t>(end);
  }

  std::uint64_t size() const { return size_; }

  /// Bytes [offset, offset + n) into `out`; `what` names them when they are not all there.
  void read(std::uint64_t offset, std::size_t n, unsigned char* out, const std::string& what) {
    if (offset > size_ || n > size_ - offset)
      throw error(what + ": truncated: " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                  " run past the end of the file (" + std::to_string(size_) + " bytes)");
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset));
    if (n > 0 && !in_.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n)))
      throw error(path_ + ": cannot read " + std::to_string(n) + " bytes at offset " + std::to_string(offset));
  }
  std::vector<unsigned char> read(std::uint64_t offset, std::size_t n, const std::string& what) {
    std::vector<unsigned char> out(n);
    read(offset, n, out.data(), what);
    return out;
  }

 private:
  std::string path_;
  std::ifstream in_;
  std::uint64_t size_ = 0;
};

/// Reads a .npy file: the whole file in one buffer, the data in place (numpy
/// pads the header so the data starts on a 64-byte boundary).
inline array load_npy(const std::string& path) {
  file_reader f(path);
  const auto size = static_cast<std::size_t>(f.size());
  if (size != f.size()) throw error(path + ": too large for this machine");
  auto bytes = detail::allocate(size);
  f.read(0, size, bytes.get(), path);
  return from_npy_bytes(bytes, bytes.get(), size, path, path);
}

/// One entry of a zip archive's central directory.
struct zip_entry {
  std::string name;  // printable()
  std::uint16_t flags = 0, method = 0;
  std::uint32_t crc = 0;
  std::uint64_t compressed = 0, uncompressed = 0, local_offset = 0;
};

/// The central directory of a zip archive, zip64 included.
inline std::vector<zip_entry> zip_directory(file_reader& f, const std::string& what) {
  using detail::le16;
  using detail::le32;
  using detail::le64;
  // The end-of-central-directory record: the last one whose comment reaches
  // the end, within the last 22 + 65535 bytes (and 20 more for a zip64 locator).
  const std::uint64_t size = f.size();
  if (size < 22) throw error(what + ": not a zip archive (too short for one)");
  const auto tail_size = static_cast<std::size_t>(std::min<std::uint64_t>(size, 22 + 0xFFFF + 20));
  const std::uint64_t tail_at = size - tail_size;
  const auto tail = f.read(tail_at, tail_size, what);
  const unsigned char* t = tail.data();
  std::size_t eocd = tail_size;
  for (std::size_t at = tail_size - 22 + 1; at-- > 0;)
    if (le32(t + at) == 0x06054b50u && at + 22 + le16(t + at + 20) == tail_size) {
      eocd = at;
      break;
    }
  if (eocd == tail_size) throw error(what + ": not a zip archive (no end-of-central-directory record)");
  if (le16(t + eocd + 4) != 0 || le16(t + eocd + 6) != 0) throw error(what + ": multi-part zip archives are not supported");
  std::uint64_t entries = le16(t + eocd + 10), dir_size = le32(t + eocd + 12), dir_offset = le32(t + eocd + 16);
  std::uint64_t dir_end = tail_at + eocd;  // the directory ends before the end records
  if (eocd >= 20 && le32(t + eocd - 20) == 0x07064b50u) {  // zip64 locator, then the zip64 record
    const std::uint64_t at = le64(t + eocd - 20 + 8), locator = tail_at + eocd - 20;
    if (at > locator || locator - at < 56) throw error(what + ": corrupt zip archive (bad zip64 end-of-central-directory record)");
    const auto record = f.read(at, 56, what);
    if (le32(record.data()) != 0x06064b50u)
      throw error(what + ": corrupt zip archive (bad zip64 end-of-central-directory record)");
    entries = le64(record.data() + 32);
    dir_size = le64(record.data() + 40);
    dir_offset = le64(record.data() + 48);
    dir_end = at;
  }
  if (dir_offset > dir_end || dir_size > dir_end - dir_offset)
    throw error(what + ": corrupt zip archive (the central directory lies outside the file)");
  if (entries > dir_size / 46) throw error(what + ": corrupt zip archive (more entries than the directory holds)");

  const auto dir = f.read(dir_offset, static_cast<std::size_t>(dir_size), what);
  const unsigned char* p = dir.data();
  std::vector<zip_entry> out;
  std::size_t at = 0;
  const std::size_t end = dir.size();
  for (std::uint64_t k = 0; k < entries; ++k) {
    if (end - at < 46 || le32(p + at) != 0x02014b50u)
      throw error(what + ": corrupt zip archive (bad central directory entry " + std::to_string(k) + ")");
    zip_entry e;
    e.flags = le16(p + at + 8);
    e.method = le16(p + at + 10);
    e.crc = le32(p + at + 16);
    e.compressed = le32(p + at + 20);
    e.uncompressed = le32(p + at + 24);
    const std::size_t name_len = le16(p + at + 28), extra_len = le16(p + at + 30), comment_len = le16(p + at + 32);
    const std::uint32_t disk = le16(p + at + 34);
    e.local_offset = le32(p + at + 42);
    if (end - at - 46 < name_len + extra_len + comment_len)
      throw error(what + ": corrupt zip archive (central directory entry " + std::to_string(k) + " runs past it)");
    e.name = printable(std::string(reinterpret_cast<const char*>(p + at + 46), name_len), 0xFFFF);
    // Zip64 extra field: 8-byte values for the fields saturated above, in this order.
    const unsigned char* x = p + at + 46 + name_len;
    const unsigned char* x_end = x + extra_len;
    const bool need64 = e.uncompressed == 0xFFFFFFFFu || e.compressed == 0xFFFFFFFFu ||
                        e.local_offset == 0xFFFFFFFFu || disk == 0xFFFFu;
    bool found64 = false;
    while (x_end - x >= 4) {
      const std::uint16_t id = le16(x), len = le16(x + 2);
      if (static_cast<std::size_t>(x_end - x - 4) < len) break;
      if (id == 0x0001 && !found64) {
        found64 = true;
        const unsigned char* v = x + 4;
        std::size_t left = len;
        for (std::uint64_t* field : {&e.uncompressed, &e.compressed, &e.local_offset}) {
          if (*field != 0xFFFFFFFFu) continue;
          if (left < 8) throw error(what + ": corrupt zip archive (short zip64 field of '" + e.name + "')");
          *field = le64(v);
          v += 8;
          left -= 8;
        }
      }
      x += 4 + len;
    }
    if (need64 && !found64) throw error(what + ": corrupt zip archive ('" + e.name + "' lacks its zip64 sizes)");
    out.push_back(std::move(e));
    at += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

/// The bytes of one stored or deflated zip entry, checked against its CRC-32,
/// in a buffer of their own (`begin` points at them). A stored .npy is placed
/// so that its data lands on a 16-byte boundary, and is then read in place.
inline std::shared_ptr<const unsigned char> zip_entry_bytes(file_reader& f, const zip_entry& e, const std::string& what,
                                                            const unsigned char*& begin) {
  using detail::le16;
  using detail::le32;
  const std::string entry = what + ": entry '" + e.name + "'";
  if (e.flags & 1u) throw error(entry + " is encrypted");
  if (e.local_offset > f.size() || f.size() - e.local_offset < 30)
    throw error(entry + ": corrupt zip archive (bad local header)");
  const auto local = f.read(e.local_offset, 30, entry);
  if (le32(local.data()) != 0x04034b50u) throw error(entry + ": corrupt zip archive (bad local header)");
  const std::uint64_t start = e.local_offset + 30 + le16(local.data() + 26) + le16(local.data() + 28);
  if (start > f.size() || e.compressed > f.size() - start)
    throw error(entry + ": truncated: its " + std::to_string(e.compressed) + " bytes run past the end of the file");
  std::shared_ptr<unsigned char> out;
  if (e.method == 0) {
    if (e.compressed != e.uncompressed) throw error(entry + ": corrupt zip archive (stored sizes differ)");
    const auto n = static_cast<std::size_t>(e.uncompressed);
    // Where the .npy data will start, from its header's length field.
    std::size_t data_at = 0;
    if (n >= 12) {
      const auto head = f.read(start, 12, entry);
      data_at = head[6] == 1 ? 10u + le16(head.data() + 8) : 12u + le32(head.data() + 8);
    }
    const std::size_t pad = (16 - data_at % 16) % 16;
    out = detail::allocate(pad + n);
    f.read(start, n, out.get() + pad, entry);
    begin = out.get() + pad;
  } else if (e.method == 8) {
#if FREEPRUNER_TOOL_HAVE_ZLIB
    // Deflate expands at most 1032:1; a larger claimed size is corrupt, not a reason to allocate.
    if (e.uncompressed / 1032 > e.compressed + 1)
      throw error(entry + ": corrupt zip archive (claims " + std::to_string(e.uncompressed) + " bytes from " +
                  std::to_string(e.compressed) + ")");
    const auto packed = f.read(start, static_cast<std::size_t>(e.compressed), entry);
    out = detail::allocate(static_cast<std::size_t>(e.uncompressed));
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw error(entry + ": zlib cannot start");
    std::size_t in_left = packed.size(), out_left = static_cast<std::size_t>(e.uncompressed);
    z.next_in = packed.data();
    z.next_out = out.get();
    int rc = Z_OK;
    while (rc == Z_OK) {
      const uInt in_chunk = static_cast<uInt>(std::min<std::size_t>(in_left, 1u << 30));
      const uInt out_chunk = static_cast<uInt>(std::min<std::size_t>(out_left, 1u << 30));
      z.avail_in = in_chunk;
      z.avail_out = out_chunk;
      rc = inflate(&z, Z_NO_FLUSH);
      in_left -= in_chunk - z.avail_in;
      out_left -= out_chunk - z.avail_out;
      if (rc == Z_OK && in_chunk == z.avail_in && out_chunk == z.avail_out) break;  // no progress
    }
    const std::string why = z.msg ? std::string(" (") + z.msg + ")" : std::string();
    inflateEnd(&z);
    if (rc != Z_STREAM_END || out_left != 0) throw error(entry + ": corrupt or truncated deflate data" + why);
    begin = out.get();
#else
    throw error(entry + " is compressed (numpy.savez_compressed), and this freepruner was built without zlib; "
                "save with numpy.savez, or rebuild with zlib (Debian: zlib1g-dev)");
#endif
  } else {
    throw error(entry + ": compression method " + std::to_string(e.method) +
                " is not supported (stored, as numpy.savez writes, or deflate, as numpy.savez_compressed)");
  }
  if (crc32(begin, static_cast<std::size_t>(e.uncompressed)) != e.crc)
    throw error(entry + " is corrupt (its CRC-32 does not match)");
  return out;
}

// arr_<digits>, as numpy.savez names positional arrays; -1 otherwise.
inline long long positional_index(const std::string& name) {
  if (name.size() < 5 || name.compare(0, 4, "arr_") != 0 || name.size() > 4 + 15) return -1;
  long long n = 0;
  for (std::size_t k = 4; k < name.size(); ++k) {
    if (name[k] < '0' || name[k] > '9') return -1;
    n = n * 10 + (name[k] - '0');
  }
  return n;
}

/// Reads every array of a .npz archive. Order: by number when every name is
/// arr_<n> (numpy.savez(*arrays)); otherwise the archive's order (keyword
/// arrays, which numpy writes in the order given).
inline std::vector<array> load_npz(const std::string& path) {
  file_reader f(path);
  const auto entries = zip_directory(f, path);
  if (entries.empty()) throw error(path + ": the archive holds no array");
  std::vector<array> out;
  for (const auto& e : entries) {
    const std::string suffix = ".npy";
    if (e.name.size() <= suffix.size() || e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      throw error(path + ": entry '" + e.name + "' is not a .npy array");
    std::string name = e.name.substr(0, e.name.size() - suffix.size());
    for (const auto& a : out)
      if (a.name == name) throw error(path + ": the archive holds '" + e.name + "' twice");
    const unsigned char* begin = nullptr;
    const auto owner = zip_entry_bytes(f, e, path, begin);
    out.push_back(from_npy_bytes(owner, begin, static_cast<std::size_t>(e.uncompressed),
                                 path + ": entry '" + e.name + "'", std::move(name)));
  }
  const bool positional = std::all_of(out.begin(), out.end(), [](const array& a) { return positional_index(a.name) >= 0; });
  if (positional)
    std::stable_sort(out.begin(), out.end(),
                     [](const array& a, const array& b) { return positional_index(a.name) < positional_index(b.name); });
  return out;
}

}  // namespace npy
}  // namespace freepruner_tool
