#pragma once
// Readers for the command-line tool: .npy arrays (format versions 1.0, 2.0
// and 3.0) and .npz archives as numpy.savez writes them (entries stored,
// zip64 records where numpy uses them) and as numpy.savez_compressed writes
// them (deflate: needs zlib, FREEPRUNER_TOOL_HAVE_ZLIB).
//
// Nothing read from a file is trusted: every length, offset and shape is
// checked against the bytes that are there before it is used, products are
// checked for overflow, and each entry's CRC-32 is verified. Memory follows
// what the headers honestly claim: a header is read and checked (against the
// file's size and against npy::limits) before its data is allocated. Every
// failure is an npy::error whose message starts with the file's name.

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

/// "(2, 16, 577, 577)", as numpy prints a shape; past 8 axes, the first 6
/// and a count, so that a header of 10,000 axes gives a short message.
inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  const bool cut = shape.size() > 8;
  for (std::size_t k = 0; k < shape.size() && !(cut && k == 6); ++k) {
    if (k) s += ", ";
    s += std::to_string(shape[k]);
  }
  if (cut) return s + ", ... " + std::to_string(shape.size()) + " axes)";
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

/// What the readers may take: memory is checked against these before it is
/// allocated (the command line sets max_bytes with --max-bytes).
struct limits {
  std::uint64_t max_bytes = std::uint64_t{8} << 30;  // array data held, all arrays together
};

/// The longest .npy header read (numpy itself refuses headers over 10,000
/// bytes unless told otherwise).
constexpr std::size_t max_header_bytes = 65536;

/// What a .npy header says, checked against the size of the whole .npy.
struct header {
  dtype type = dtype::float32;
  bool swap = false;                 // file byte order differs from the host's
  std::vector<std::int64_t> shape;
  std::size_t count = 0;             // elements
  std::size_t data_offset = 0;       // from the start of the .npy bytes
  std::size_t data_bytes = 0;
};

/// Parses and checks the header of a .npy of `total` bytes whose first
/// `available` bytes are at p (at least min(total, 12 + max_header_bytes)):
/// magic, version, the dictionary (descr, fortran_order, shape and nothing
/// else), and that exactly count * item_size bytes of data follow it.
inline header parse_header(const unsigned char* p, std::size_t available, std::uint64_t total, const std::string& what) {
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (total < 10 || available < 10 || std::memcmp(p, magic, 6) != 0)
    throw error(what + ": not a .npy file (it does not start with \"\\x93NUMPY\")");
  const unsigned major = p[6], minor = p[7];
  if (major < 1 || major > 3 || minor != 0)
    throw error(what + ": .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                " is not supported (1.0, 2.0 and 3.0 are)");
  std::size_t start = 10, length = detail::le16(p + 8);
  if (major >= 2) {
    if (total < 12 || available < 12) throw error(what + ": truncated .npy header");
    start = 12;
    length = detail::le32(p + 8);
  }
  if (length > total - start)
    throw error(what + ": truncated: the .npy header needs " + std::to_string(length) + " bytes, " +
                std::to_string(total - start) + " are there");
  if (length > max_header_bytes)
    throw error(what + ": the .npy header claims " + std::to_string(length) + " bytes, more than the " +
                std::to_string(max_header_bytes) + " read");
  if (length > available - start) throw error(what + ": truncated .npy header");

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
  const std::uint64_t have = total - h.data_offset;
  if (have < h.data_bytes)
    throw error(what + ": truncated: shape " + shape_text(h.shape) + " of " + dtype_name(h.type) + " needs " +
                std::to_string(h.data_bytes) + " bytes of data, " + std::to_string(have) + " are there");
  if (have > h.data_bytes)
    throw error(what + ": " + std::to_string(have - h.data_bytes) + " unexpected bytes after the data of shape " +
                shape_text(h.shape));
  return h;
}

/// The memory the arrays read so far hold, against limits::max_bytes.
class memory_budget {
 public:
  explicit memory_budget(std::uint64_t limit) : limit_(limit) {}
  /// Takes the data of `h` (checked before it is allocated).
  void take(const header& h, const std::string& what) {
    if (h.data_bytes > limit_ - used_)
      throw error(what + ": shape " + shape_text(h.shape) + " of " + dtype_name(h.type) + " needs " +
                  std::to_string(h.data_bytes) + " bytes" +
                  (used_ ? " (" + std::to_string(used_) + " more before it)" : std::string()) +
                  ", over the limit of " + std::to_string(limit_) + " bytes (--max-bytes)");
    used_ += h.data_bytes;
  }

 private:
  std::uint64_t limit_, used_ = 0;
};

/// An array over `data` (h.data_bytes, freshly allocated: aligned for every
/// element type), swapped to host byte order in place.
inline array make_array(std::shared_ptr<unsigned char> data, const header& h, std::string name) {
  if (h.swap) {
    const std::size_t w = item_size(h.type);
    for (std::size_t i = 0; i < h.count; ++i) std::reverse(data.get() + i * w, data.get() + (i + 1) * w);
  }
  array a;
  a.name = std::move(name);
  a.type = h.type;
  a.shape = h.shape;
  a.count = h.count;
  a.data = data.get();
  a.owner = std::move(data);
  return a;
}

/// A file (or bytes in memory) read at given offsets; every read is checked
/// against its size. Messages name it as `shown`, already escaped.
class source {
 public:
  source(const std::string& path, std::string shown) : shown_(std::move(shown)) {
    // O_NONBLOCK: a FIFO does not hang the open; it is refused below.
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) throw error(shown_ + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail_errno("cannot read");
    if (S_ISDIR(st.st_mode)) throw_closing(shown_ + ": cannot read: it is a directory");
    if (!S_ISREG(st.st_mode)) throw_closing(shown_ + ": cannot read: not a regular file (its size must be known)");
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  source(const unsigned char* bytes, std::size_t n, std::string shown)
      : shown_(std::move(shown)), bytes_(bytes), size_(n) {}
  source(const source&) = delete;
  source& operator=(const source&) = delete;
  ~source() {
    if (fd_ >= 0) ::close(fd_);
  }

  const std::string& shown() const { return shown_; }
  std::uint64_t size() const { return size_; }

  /// Bytes [offset, offset + n) into `out`; `what` names them when they are not all there.
  void read(std::uint64_t offset, std::size_t n, unsigned char* out, const std::string& what) {
    if (offset > size_ || n > size_ - offset)
      throw error(what + ": truncated: " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                  " run past the end of the file (" + std::to_string(size_) + " bytes)");
    if (fd_ < 0) {
      if (n > 0) std::memcpy(out, bytes_ + offset, n);
      return;
    }
    while (n > 0) {
      const ssize_t got = ::pread(fd_, out, std::min<std::size_t>(n, std::size_t{1} << 30), static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) fail_errno("cannot read " + std::to_string(n) + " bytes at offset " + std::to_string(offset));
      if (got == 0) throw error(shown_ + ": cannot read: the file shrank while it was read");
      out += got;
      offset += static_cast<std::uint64_t>(got);
      n -= static_cast<std::size_t>(got);
    }
  }
  std::vector<unsigned char> read(std::uint64_t offset, std::size_t n, const std::string& what) {
    if (offset > size_ || n > size_ - offset) read(offset, n, nullptr, what);  // throws before allocating
    std::vector<unsigned char> out(n);
    read(offset, n, out.data(), what);
    return out;
  }

 private:
  [[noreturn]] void fail_errno(const std::string& doing) { throw error(shown_ + ": " + doing + ": " + std::strerror(errno)); }
  [[noreturn]] void throw_closing(const std::string& message) {
    ::close(fd_);
    fd_ = -1;
    throw error(message);
  }

  std::string shown_;
  int fd_ = -1;
  const unsigned char* bytes_ = nullptr;
  std::uint64_t size_ = 0;
};

/// The first bytes of a .npy of `total` bytes at `offset`: enough for any header read.
inline std::size_t head_size(std::uint64_t total) {
  return static_cast<std::size_t>(std::min<std::uint64_t>(total, 12 + max_header_bytes));
}

/// Reads a .npy file: the header first, then its data alone, into memory of its own.
inline array load_npy(source& f, const limits& lim = {}) {
  const std::string& what = f.shown();
  const auto head = f.read(0, head_size(f.size()), what);
  const header h = parse_header(head.data(), head.size(), f.size(), what);
  memory_budget(lim.max_bytes).take(h, what);
  auto data = detail::allocate(h.data_bytes);
  f.read(h.data_offset, h.data_bytes, data.get(), what);
  return make_array(std::move(data), h, what);
}
inline array load_npy(const std::string& path, const limits& lim = {}) {
  source f(path, printable(path, 200));
  return load_npy(f, lim);
}

/// One entry of a zip archive's central directory.
struct zip_entry {
  std::string raw_name;  // as stored
  std::string name;      // printable(), for messages
  std::uint16_t flags = 0, method = 0;
  std::uint32_t crc = 0;
  std::uint64_t compressed = 0, uncompressed = 0, local_offset = 0;
  std::uint64_t data_at = 0;  // where its bytes start, from its local header
};

namespace detail {

// The zip64 extra field (id 1): 8-byte values for the fields saturated at
// 0xFFFFFFFF, in the order given. False if there is none.
inline bool zip64_extra(const unsigned char* x, std::size_t extra_len, std::initializer_list<std::uint64_t*> fields,
                        const std::string& entry) {
  const unsigned char* end = x + extra_len;
  while (end - x >= 4) {
    const std::uint16_t id = le16(x), len = le16(x + 2);
    if (static_cast<std::size_t>(end - x - 4) < len) break;
    if (id == 0x0001) {
      const unsigned char* v = x + 4;
      std::size_t left = len;
      for (std::uint64_t* field : fields) {
        if (*field != 0xFFFFFFFFu) continue;
        if (left < 8) throw error(entry + ": corrupt zip archive (short zip64 field)");
        *field = le64(v);
        v += 8;
        left -= 8;
      }
      return true;
    }
    x += 4 + len;
  }
  return false;
}

}  // namespace detail

/// The central directory of a zip archive, zip64 included, each entry
/// checked against its local header; entries may not overlap each other or
/// the directory.
inline std::vector<zip_entry> zip_directory(source& f) {
  using detail::le16;
  using detail::le32;
  using detail::le64;
  const std::string& what = f.shown();
  // The end-of-central-directory record: the last one within the last
  // 22 + 65535 bytes (and 20 more for a zip64 locator). Bytes after it are
  // allowed, as Python's zipfile (and so numpy) allows them.
  const std::uint64_t size = f.size();
  if (size < 22) throw error(what + ": not a zip archive (too short for one)");
  const auto tail_size = static_cast<std::size_t>(std::min<std::uint64_t>(size, 22 + 0xFFFF + 20));
  const std::uint64_t tail_at = size - tail_size;
  const auto tail = f.read(tail_at, tail_size, what);
  const unsigned char* t = tail.data();
  std::size_t eocd = tail_size;
  for (std::size_t at = tail_size - 22 + 1; at-- > 0;)
    if (le32(t + at) == 0x06054b50u) {
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
  out.reserve(static_cast<std::size_t>(entries));
  std::unordered_set<std::string> names;  // hashed: an archive of many entries is checked in linear time
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
    e.raw_name.assign(reinterpret_cast<const char*>(p + at + 46), name_len);
    e.name = printable(e.raw_name, 100);
    const std::string entry = what + ": entry '" + e.name + "'";
    const bool need64 = e.uncompressed == 0xFFFFFFFFu || e.compressed == 0xFFFFFFFFu ||
                        e.local_offset == 0xFFFFFFFFu || disk == 0xFFFFu;
    const bool found64 = detail::zip64_extra(p + at + 46 + name_len, extra_len,
                                             {&e.uncompressed, &e.compressed, &e.local_offset}, entry);
    if (need64 && !found64) throw error(what + ": corrupt zip archive ('" + e.name + "' lacks its zip64 sizes)");
    if (!names.insert(e.raw_name).second) throw error(what + ": the archive holds '" + e.name + "' twice");
    at += 46 + name_len + extra_len + comment_len;

    // The local header must agree with the central one: a reader that
    // trusts either could otherwise be shown other bytes than this one.
    if (e.flags & 1u) throw error(entry + " is encrypted");
    if (e.local_offset > dir_offset || dir_offset - e.local_offset < 30)
      throw error(entry + ": corrupt zip archive (bad local header)");
    const auto local = f.read(e.local_offset, 30, entry);
    if (le32(local.data()) != 0x04034b50u) throw error(entry + ": corrupt zip archive (bad local header)");
    const std::size_t local_name = le16(local.data() + 26), local_extra = le16(local.data() + 28);
    e.data_at = e.local_offset + 30 + local_name + local_extra;
    if (e.data_at > dir_offset || e.compressed > dir_offset - e.data_at)
      throw error(entry + ": truncated: its " + std::to_string(e.compressed) +
                  " bytes run past the start of the central directory");
    const auto local_fields = f.read(e.local_offset + 30, local_name + local_extra, entry);
    const std::uint16_t local_flags = le16(local.data() + 6);
    std::uint64_t local_crc = le32(local.data() + 14), local_compressed = le32(local.data() + 18),
                  local_uncompressed = le32(local.data() + 22);
    detail::zip64_extra(local_fields.data() + local_name, local_extra, {&local_uncompressed, &local_compressed}, entry);
    const bool descriptor = (local_flags & 8u) != 0;  // CRC and sizes after the data; zero here
    const auto agrees = [descriptor](std::uint64_t local_value, std::uint64_t central_value) {
      return local_value == central_value || (descriptor && local_value == 0);
    };
    const char* differs = local_name != name_len || (name_len > 0 && std::memcmp(local_fields.data(), e.raw_name.data(), name_len) != 0)
                              ? "name"
                          : le16(local.data() + 8) != e.method                 ? "compression method"
                          : ((local_flags ^ e.flags) & 0x41u) != 0              ? "encryption flag"
                          : !agrees(local_crc, e.crc)                           ? "CRC-32"
                          : !agrees(local_compressed, e.compressed) ||
                                  !agrees(local_uncompressed, e.uncompressed)   ? "size"
                                                                                : nullptr;
    if (differs) throw error(entry + ": corrupt zip archive (the local header's " + differs + " does not match the central directory's)");
    out.push_back(std::move(e));
  }
  // No two entries may share bytes: overlapping entries make a small file
  // inflate to many times its size.
  std::vector<const zip_entry*> by_offset;
  by_offset.reserve(out.size());
  for (const auto& e : out) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const zip_entry* a, const zip_entry* b) { return a->local_offset < b->local_offset; });
  for (std::size_t k = 1; k < by_offset.size(); ++k)
    if (by_offset[k]->local_offset < by_offset[k - 1]->data_at + by_offset[k - 1]->compressed)
      throw error(what + ": corrupt zip archive (entries '" + by_offset[k - 1]->name + "' and '" + by_offset[k]->name +
                  "' overlap)");
  return out;
}

#if FREEPRUNER_TOOL_HAVE_ZLIB
/// A raw deflate stream of `n` bytes at `at`, inflated piece by piece: the
/// compressed bytes are read in chunks, never held whole.
class inflater {
 public:
  inflater(source& f, std::uint64_t at, std::uint64_t n, std::string entry) : f_(f), at_(at), left_(n), entry_(std::move(entry)) {
    if (inflateInit2(&z_, -MAX_WBITS) != Z_OK) throw error(entry_ + ": zlib cannot start");
  }
  inflater(const inflater&) = delete;
  inflater& operator=(const inflater&) = delete;
  ~inflater() { inflateEnd(&z_); }

  /// Fills [out, out + n); an error if the stream ends first or is corrupt.
  void fill(unsigned char* out, std::size_t n) {
    while (n > 0) {
      if (ended_) throw error(entry_ + ": corrupt zip archive (the deflate data ends early)");
      const std::size_t made = step(out, n);
      out += made;
      n -= made;
    }
  }
  /// Checks that the stream ends here and uses all of the entry's bytes.
  void finish() {
    unsigned char extra = 0;
    if (!ended_ && step(&extra, 1) > 0)
      throw error(entry_ + ": corrupt zip archive (the deflate data holds more than its size claims)");
    if (!ended_) throw error(entry_ + ": corrupt zip archive (the deflate data does not end)");
    if (z_.avail_in > 0 || left_ > 0)
      throw error(entry_ + ": corrupt zip archive (" + std::to_string(z_.avail_in + left_) +
                  " bytes of junk after the deflate data)");
  }

 private:
  std::size_t step(unsigned char* out, std::size_t n) {
    if (z_.avail_in == 0 && left_ > 0) {
      const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(left_, 1u << 16));
      in_.resize(chunk);
      f_.read(at_, chunk, in_.data(), entry_);
      at_ += chunk;
      left_ -= chunk;
      z_.next_in = in_.data();
      z_.avail_in = static_cast<uInt>(chunk);
    }
    const auto room = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    z_.next_out = out;
    z_.avail_out = room;
    const int rc = inflate(&z_, Z_NO_FLUSH);
    const std::size_t made = room - z_.avail_out;
    if (rc == Z_STREAM_END) {
      ended_ = true;
    } else if (rc == Z_BUF_ERROR && made == 0 && left_ == 0) {
      throw error(entry_ + ": truncated: the deflate data ends early");
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      throw error(entry_ + ": corrupt deflate data" + (z_.msg ? std::string(" (") + z_.msg + ")" : std::string()));
    }
    return made;
  }

  source& f_;
  std::uint64_t at_, left_;
  std::string entry_;
  z_stream z_{};
  std::vector<unsigned char> in_;
  bool ended_ = false;
};
#endif

/// The array in one stored or deflated zip entry: its .npy header is read
/// and checked (sizes, limits) before the data is allocated, and the
/// entry's CRC-32 is verified over the whole of it.
inline array zip_entry_array(source& f, const zip_entry& e, memory_budget& budget, std::string name) {
  const std::string entry = f.shown() + ": entry '" + e.name + "'";
  header h;
  std::shared_ptr<unsigned char> data;
  std::uint32_t crc = 0;
  if (e.method == 0) {
    if (e.compressed != e.uncompressed) throw error(entry + ": corrupt zip archive (stored sizes differ)");
    const auto head = f.read(e.data_at, head_size(e.uncompressed), entry);
    h = parse_header(head.data(), head.size(), e.uncompressed, entry);
    budget.take(h, entry);
    crc = crc32(head.data(), h.data_offset);
    data = detail::allocate(h.data_bytes);
    f.read(e.data_at + h.data_offset, h.data_bytes, data.get(), entry);
  } else if (e.method == 8) {
#if FREEPRUNER_TOOL_HAVE_ZLIB
    // Deflate expands at most 1032:1; a larger claimed size is corrupt.
    if (e.uncompressed / 1032 > e.compressed + 1)
      throw error(entry + ": corrupt zip archive (claims " + std::to_string(e.uncompressed) + " bytes from " +
                  std::to_string(e.compressed) + ")");
    inflater z(f, e.data_at, e.compressed, entry);
    std::vector<unsigned char> head(head_size(e.uncompressed));
    z.fill(head.data(), head.size());
    h = parse_header(head.data(), head.size(), e.uncompressed, entry);
    budget.take(h, entry);
    crc = crc32(head.data(), h.data_offset);
    data = detail::allocate(h.data_bytes);
    const std::size_t have = head.size() - h.data_offset;  // data bytes inflated with the header
    if (have > 0) std::memcpy(data.get(), head.data() + h.data_offset, have);
    z.fill(data.get() + have, h.data_bytes - have);
    z.finish();
#else
    throw error(entry + " is compressed (numpy.savez_compressed), and this freepruner was built without zlib; "
                "save with numpy.savez, or rebuild with zlib (Debian: zlib1g-dev)");
#endif
  } else {
    throw error(entry + ": compression method " + std::to_string(e.method) +
                " is not supported (stored, as numpy.savez writes, or deflate, as numpy.savez_compressed)");
  }
  if (crc32(data.get(), h.data_bytes, crc) != e.crc) throw error(entry + " is corrupt (its CRC-32 does not match)");
  return make_array(std::move(data), h, std::move(name));
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
inline std::vector<array> load_npz(source& f, const limits& lim = {}) {
  const std::string& what = f.shown();
  const auto entries = zip_directory(f);
  if (entries.empty()) throw error(what + ": the archive holds no array");
  const std::string suffix = ".npy";
  for (const auto& e : entries)  // every name before any data
    if (e.raw_name.size() <= suffix.size() ||
        e.raw_name.compare(e.raw_name.size() - suffix.size(), suffix.size(), suffix) != 0)
      throw error(what + ": entry '" + e.name + "' is not a .npy array");
  memory_budget budget(lim.max_bytes);
  std::vector<array> out;
  out.reserve(entries.size());
  for (const auto& e : entries)
    out.push_back(zip_entry_array(f, e, budget, printable(e.raw_name.substr(0, e.raw_name.size() - suffix.size()), 100)));
  const bool positional = std::all_of(out.begin(), out.end(), [](const array& a) { return positional_index(a.name) >= 0; });
  if (positional)
    std::stable_sort(out.begin(), out.end(),
                     [](const array& a, const array& b) { return positional_index(a.name) < positional_index(b.name); });
  return out;
}
inline std::vector<array> load_npz(const std::string& path, const limits& lim = {}) {
  source f(path, printable(path, 200));
  return load_npz(f, lim);
}

}  // namespace npy
}  // namespace freepruner_tool
