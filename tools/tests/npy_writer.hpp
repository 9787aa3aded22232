#pragma once
// Writes .npy and .npz bytes for the tool's tests, in the variants numpy
// writes (format versions 1.0-3.0; zip entries stored or deflated; zip64
// records, which numpy adds past 2 GiB, here on request at any size) and in
// broken ones (any header text, any dictionary, any zip field).

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../npy.hpp"

namespace npy_writer {

inline void put16(std::string& s, std::uint32_t v) {
  s += static_cast<char>(v & 0xFF);
  s += static_cast<char>((v >> 8) & 0xFF);
}
inline void put32(std::string& s, std::uint32_t v) {
  put16(s, v & 0xFFFF);
  put16(s, v >> 16);
}
inline void put64(std::string& s, std::uint64_t v) {
  put32(s, static_cast<std::uint32_t>(v));
  put32(s, static_cast<std::uint32_t>(v >> 32));
}

/// The dictionary numpy writes: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
inline std::string dict(const std::string& descr, bool fortran, const std::vector<std::int64_t>& shape) {
  std::string tuple = "(";  // every axis (shape_text shortens a long shape for messages)
  for (std::size_t k = 0; k < shape.size(); ++k) tuple += (k ? ", " : "") + std::to_string(shape[k]);
  tuple += shape.size() == 1 ? ",)" : ")";
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + tuple + ", }";
}

/// A .npy file: magic, version, the dictionary padded with spaces and a
/// newline so the data starts at a multiple of 64 (as numpy does), data.
inline std::string npy(const std::string& header_dict, const void* data, std::size_t bytes, int version = 1) {
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  const std::size_t prefix = version == 1 ? 10 : 12;
  std::string text = header_dict;
  while ((prefix + text.size() + 1) % 64 != 0) text += ' ';
  text += '\n';
  if (version == 1) put16(out, static_cast<std::uint32_t>(text.size()));
  else put32(out, static_cast<std::uint32_t>(text.size()));
  out += text;
  out.append(static_cast<const char*>(data), bytes);
  return out;
}

template <class T>
std::string npy_of(const std::vector<T>& values, const std::string& descr, const std::vector<std::int64_t>& shape,
                   int version = 1) {
  return npy(dict(descr, false, shape), values.data(), values.size() * sizeof(T), version);
}

struct entry {
  std::string name;  // with ".npy"
  std::string bytes;
};

struct zip_options {
  bool deflate = false;  // needs zlib
  bool zip64 = false;    // zip64 extra fields (local and central) and end records
  std::string comment;   // the archive's comment
};

/// A zip archive of the entries, as Python's zipfile lays it out.
inline std::string zip(const std::vector<entry>& entries, const zip_options& o = {}) {
  std::string out, central;
  for (const auto& e : entries) {
    std::string data = e.bytes;
    if (o.deflate) {
#if FREEPRUNER_TOOL_HAVE_ZLIB
      z_stream z{};
      if (deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
      std::string packed(deflateBound(&z, static_cast<uLong>(e.bytes.size())), '\0');
      z.next_in = reinterpret_cast<const Bytef*>(e.bytes.data());
      z.avail_in = static_cast<uInt>(e.bytes.size());
      z.next_out = reinterpret_cast<Bytef*>(&packed[0]);
      z.avail_out = static_cast<uInt>(packed.size());
      if (deflate(&z, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
      packed.resize(z.total_out);
      deflateEnd(&z);
      data = packed;
#else
      throw std::runtime_error("deflate needs zlib");
#endif
    }
    const std::uint32_t crc =
        freepruner_tool::npy::crc32(reinterpret_cast<const unsigned char*>(e.bytes.data()), e.bytes.size());
    const std::uint64_t offset = out.size();
    const std::uint16_t method = o.deflate ? 8 : 0, version = o.zip64 ? 45 : 20;
    // Local header.
    put32(out, 0x04034b50u);
    put16(out, version);
    put16(out, 0);
    put16(out, method);
    put16(out, 0);
    put16(out, 0x21);
    put32(out, crc);
    put32(out, o.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(data.size()));
    put32(out, o.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(e.bytes.size()));
    put16(out, static_cast<std::uint32_t>(e.name.size()));
    put16(out, o.zip64 ? 20 : 0);
    out += e.name;
    if (o.zip64) {
      put16(out, 1);
      put16(out, 16);
      put64(out, e.bytes.size());
      put64(out, data.size());
    }
    out += data;
    // Central directory entry.
    put32(central, 0x02014b50u);
    put16(central, version);
    put16(central, version);
    put16(central, 0);
    put16(central, method);
    put16(central, 0);
    put16(central, 0x21);
    put32(central, crc);
    put32(central, o.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(data.size()));
    put32(central, o.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(e.bytes.size()));
    put16(central, static_cast<std::uint32_t>(e.name.size()));
    put16(central, o.zip64 ? 28 : 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put32(central, 0);
    put32(central, o.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(offset));
    central += e.name;
    if (o.zip64) {
      put16(central, 1);
      put16(central, 24);
      put64(central, e.bytes.size());
      put64(central, data.size());
      put64(central, offset);
    }
  }
  const std::uint64_t dir_offset = out.size();
  out += central;
  if (o.zip64) {
    const std::uint64_t record = out.size();
    put32(out, 0x06064b50u);
    put64(out, 44);
    put16(out, 45);
    put16(out, 45);
    put32(out, 0);
    put32(out, 0);
    put64(out, entries.size());
    put64(out, entries.size());
    put64(out, central.size());
    put64(out, dir_offset);
    put32(out, 0x07064b50u);
    put32(out, 0);
    put64(out, record);
    put32(out, 1);
  }
  put32(out, 0x06054b50u);
  put16(out, 0);
  put16(out, 0);
  put16(out, o.zip64 ? 0xFFFF : static_cast<std::uint32_t>(entries.size()));
  put16(out, o.zip64 ? 0xFFFF : static_cast<std::uint32_t>(entries.size()));
  put32(out, o.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(central.size()));
  put32(out, o.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(dir_offset));
  put16(out, static_cast<std::uint32_t>(o.comment.size()));
  out += o.comment;
  return out;
}

inline void write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

}  // namespace npy_writer
